import { randomUUID } from "node:crypto";
import { clone } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CreditAdminService } from "../gen/credit/v1/admin_service_pb.js";
import { CreditService } from "../gen/credit/v1/credit_service_pb.js";
import { CreditEventService } from "../gen/credit/v1/event_service_pb.js";

export { Code, ConnectError };
export { CreditAdminService, CreditEventService, CreditService };
export { consumeEvents, type EventConsumerOptions } from "./events.js";
export * from "../gen/credit/v1/admin_service_pb.js";
export * from "../gen/credit/v1/credit_service_pb.js";
export * from "../gen/credit/v1/event_service_pb.js";
export * from "../gen/credit/v1/types_pb.js";
export { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";

export interface RetryOptions {
  /** Attempts in all, the first included (default 4). */
  readonly maxAttempts?: number;
  /** First back-off; doubles each retry, with full jitter (default 50 ms). */
  readonly initialBackoffMs?: number;
  /** Longest back-off (default 2 s). */
  readonly maxBackoffMs?: number;
}

export interface CreditClientOptions {
  /** For example "http://127.0.0.1:50051", or "https://…" with TLS. */
  readonly baseUrl: string;
  /** This service's bearer token. */
  readonly token?: string;
  /** Sent as `x-caller` (used as the caller only when the server runs without authentication). */
  readonly caller?: string;
  /** Deadline of a whole logical call, retries included, unless the call sets its own (default 10 s). */
  readonly defaultTimeoutMs?: number;
  readonly retry?: RetryOptions;
  /** Generate an idempotency key for mutating requests that have none (default true). */
  readonly generateIdempotencyKeys?: boolean;
  /** TLS: the CA that signed the server's certificate, and a client certificate for mutual TLS. */
  readonly tls?: { readonly ca?: string | Buffer; readonly cert?: string | Buffer; readonly key?: string | Buffer };
}

export interface CreditClients {
  readonly credit: Client<typeof CreditService>;
  readonly admin: Client<typeof CreditAdminService>;
  /** The event feed (docs/events.md); `consumeEvents` runs a resumable consumer on it. */
  readonly events: Client<typeof CreditEventService>;
}

/**
 * Gives a mutating request without an idempotency key one, once per logical call: it runs
 * outside the retry loop, so every retry carries the same key and the server applies it once.
 * The key goes into a copy: the caller's object is never changed, so sending it again is a new
 * logical call with a new key (a caller who wants a replay sets the key).
 */
const idempotencyKeys: Interceptor = (next) => (req) => {
  if (req.stream || (req.message as { idempotencyKey?: unknown }).idempotencyKey !== "") return next(req);
  const keyed = clone(req.method.input, req.message) as typeof req.message & { idempotencyKey: string };
  keyed.idempotencyKey = randomUUID();
  return next({ ...req, message: keyed });
};

/** Retries UNAVAILABLE (a store or the server is away) and ABORTED (the same key is in flight) only. */
function retries(options: RetryOptions = {}): Interceptor {
  const maxAttempts = options.maxAttempts ?? 4;
  const initial = options.initialBackoffMs ?? 50;
  const cap = options.maxBackoffMs ?? 2000;
  return (next) => async (req) => {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await next(req);
      } catch (err) {
        const code = ConnectError.from(err).code;
        const retryable = code === Code.Unavailable || code === Code.Aborted;
        if (!retryable || attempt >= maxAttempts || req.signal.aborted) throw err;
        const backoff = Math.random() * Math.min(cap, initial * 2 ** (attempt - 1));
        await pause(backoff, req.signal);
        if (req.signal.aborted) throw ConnectError.from(req.signal.reason ?? err);
      }
    }
  };
}

/** Waits `ms`, or less if the call's deadline (or cancellation) comes first. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

function headers(options: CreditClientOptions): Interceptor {
  return (next) => (req) => {
    if (options.token) req.header.set("authorization", `Bearer ${options.token}`);
    if (options.caller) req.header.set("x-caller", options.caller);
    return next(req);
  };
}

/** Typed clients for the services over one gRPC (HTTP/2) connection, with keys, retries and a deadline. */
export function createCreditClients(options: CreditClientOptions): CreditClients {
  const transport = createGrpcTransport({
    baseUrl: options.baseUrl,
    interceptors: [...(options.generateIdempotencyKeys === false ? [] : [idempotencyKeys]), retries(options.retry), headers(options)],
    defaultTimeoutMs: options.defaultTimeoutMs ?? 10_000,
    nodeOptions: options.tls ? { ca: options.tls.ca, cert: options.tls.cert, key: options.tls.key } : undefined,
  });
  return { credit: createClient(CreditService, transport), admin: createClient(CreditAdminService, transport), events: createClient(CreditEventService, transport) };
}
