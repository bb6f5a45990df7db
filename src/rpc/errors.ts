import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type Failure, type FailureReason, FailureError } from "../domain/errors.js";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";

/** The ErrorInfo domain of every reason this service reports. */
export const ERROR_DOMAIN = "credit.v1";

/** THE mapping from expected failures to gRPC codes. Exhaustive: a new reason does not compile until mapped. */
export function codeFor(reason: FailureReason): status {
  switch (reason) {
    case "INVALID_FIELD":
    case "IDEMPOTENCY_KEY_REUSED":
    case "UNKNOWN_MODEL":
    case "UNSUPPORTED_KIND":
    case "RESOLUTION_OUT_OF_RANGE":
    case "DURATION_OUT_OF_RANGE":
    case "COUNT_OUT_OF_RANGE":
    case "UNSUPPORTED_QUALITY":
      return status.INVALID_ARGUMENT;
    case "IDEMPOTENCY_KEY_IN_USE":
      return status.ABORTED;
    case "ACCOUNT_NOT_FOUND":
    case "RESERVATION_NOT_FOUND":
    case "PACK_NOT_FOUND":
    case "PLAN_NOT_FOUND":
    case "RATE_CARD_NOT_FOUND":
    case "SPEND_LIMIT_NOT_FOUND":
    case "AUTO_TOP_UP_REQUEST_NOT_FOUND":
      return status.NOT_FOUND;
    case "INSUFFICIENT_CREDITS":
    case "SPEND_LIMIT_EXCEEDED":
    case "AUTO_TOP_UP_REQUEST_STALE":
    case "BALANCE_LIMIT":
    case "RESERVATION_NOT_HELD":
    case "RESERVATION_EXPIRED":
    case "ALREADY_ON_PLAN":
    case "PLAN_CHANGE_NOT_ALLOWED":
    case "TEST_CLOCK_DISABLED":
      return status.FAILED_PRECONDITION;
    case "STORE_UNAVAILABLE":
    case "SHUTTING_DOWN":
      return status.UNAVAILABLE;
    // Each retryable later: a read finishing, a stream closing, a hold of that scope settling.
    case "READ_LIMIT_EXCEEDED":
    case "TOO_MANY_WATCHERS":
    case "CONCURRENCY_LIMIT_EXCEEDED":
      return status.RESOURCE_EXHAUSTED;
    case "CURSOR_EXPIRED":
      return status.OUT_OF_RANGE;
    case "UNAUTHENTICATED":
      return status.UNAUTHENTICATED;
    case "PERMISSION_DENIED":
      return status.PERMISSION_DENIED;
  }
}

/** A status with its ErrorInfo; for refusals made outside the domain's failures (the transport's limits). */
export function serviceError(code: status, message: string, reason: string, metadata: Readonly<Record<string, string>>): Partial<ServiceError> {
  const info = create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN, metadata: { ...metadata } });
  const detail = create(StatusSchema, { code, message, details: [anyPack(ErrorInfoSchema, info)] });
  const trailers = new Metadata();
  trailers.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, detail)));
  return { code, details: message, metadata: trailers };
}

export function failureToStatus(failure: Failure): Partial<ServiceError> {
  return serviceError(codeFor(failure.reason), failure.message, failure.reason, failure.metadata);
}

/**
 * Turns anything a handler threw into the status sent to the client. Expected failures keep
 * their code and reason; everything else is a bug: INTERNAL, with the cause logged and never sent.
 */
export function toStatus(err: unknown, log: Logger, method: string): Partial<ServiceError> {
  if (err instanceof FailureError) return failureToStatus(err.failure);
  log.error({ err, method }, "internal error");
  return serviceError(status.INTERNAL, "internal error", "INTERNAL", {});
}
