import type { Reply } from "../app/deps.js";
import { FailureError } from "../domain/errors.js";
import { EncodedResponse } from "./grpc-adapter.js";
import type { CallContext } from "./grpc-adapter.js";
import { ID_PATTERN, MAX_ID_LENGTH } from "../domain/limits.js";
import { PRINCIPAL_HEADER } from "./interceptor.js";

/** A use case's reply as a handler result: the encoded response, or the failure thrown for rpc/errors.ts. */
export function reply(result: Reply): EncodedResponse {
  if (!result.ok) throw new FailureError(result.failure);
  return new EncodedResponse(result.bytes);
}

/**
 * The identity recorded on ledger entries, as the call interceptor established it: the token's
 * principal name (or, with authentication off, the unchecked `x-caller` metadata).
 */
export function callerOf(context: CallContext): string {
  const value = context.metadata.get(PRINCIPAL_HEADER)[0];
  return typeof value === "string" && value.length <= MAX_ID_LENGTH && ID_PATTERN.test(value) ? value : "anonymous";
}
