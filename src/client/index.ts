import { randomUUID } from "node:crypto";
import { pause } from "./pause.js";
import { clone, create, equals } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CreditAdminService } from "../gen/credit/v1/admin_service_pb.js";
import { CreditService } from "../gen/credit/v1/credit_service_pb.js";
import { type Balance, BalanceSchema } from "../gen/credit/v1/types_pb.js";
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
  /**
   * The account's balance now, then after each of its changes (see WatchBalanceOptions): a
   * WatchBalance stream that reconnects by itself.
   */
  watchBalance(accountId: string, options?: WatchBalanceOptions): AsyncIterable<BalanceUpdate>;
}

/** One state of a watched account. */
export interface BalanceUpdate {
  /** The account's change record this balance is the result of; larger is later. */
  readonly sequence: bigint;
  readonly balance: Balance;
}

export interface WatchBalanceOptions {
  /** Ends the watch (the iteration returns); breaking out of the loop ends it too. */
  readonly signal?: AbortSignal;
  /** First reconnect back-off; doubles with each failed attempt in a row, with full jitter (default 100 ms). */
  readonly initialBackoffMs?: number;
  /** Longest reconnect back-off (default 5 s). */
  readonly maxBackoffMs?: number;
  /** Told before each reconnect, with the error that ended the stream (or null when it ended without one). */
  readonly onReconnect?: (attempt: number, error: ConnectError | null) => void;
}

/** Errors that reconnecting cannot cure: the watch ends with them. */
const FINAL_WATCH_CODES: ReadonlySet<Code> = new Set([
  Code.InvalidArgument,
  Code.NotFound,
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.FailedPrecondition,
  Code.Unimplemented,
]);

/** The same state: the sequence and the balance, whatever time each was read at. */
function sameState(a: BalanceUpdate, b: BalanceUpdate): boolean {
  if (a.sequence !== b.sequence) return false;
  const plain = (x: Balance) => {
    const copy = clone(BalanceSchema, x);
    copy.asOf = undefined;
    return copy;
  };
  return equals(BalanceSchema, plain(a.balance), plain(b.balance));
}

/**
 * WatchBalance that reconnects with exponential back-off when the stream ends for a reason a new
 * attempt can cure (the server shut down or went away, the connection dropped, too many streams),
 * and ends with the error when it cannot (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, …).
 * After a reconnect the server starts with the current state: a state the consumer already has
 * (an older sequence, or the same one unchanged) is dropped, so sequences only grow.
 */
export function watchBalance(credit: Client<typeof CreditService>, accountId: string, options: WatchBalanceOptions = {}): AsyncIterable<BalanceUpdate> {
  return { [Symbol.asyncIterator]: () => watchWithReconnect(credit, accountId, options) };
}

async function* watchWithReconnect(credit: Client<typeof CreditService>, accountId: string, options: WatchBalanceOptions): AsyncGenerator<BalanceUpdate> {
  const initial = options.initialBackoffMs ?? 100;
  const cap = options.maxBackoffMs ?? 5000;
  const outer = options.signal;
  let last: BalanceUpdate | null = null;
  let failures = 0;
  while (!outer?.aborted) {
    const call = new AbortController();
    const stop = () => call.abort();
    outer?.addEventListener("abort", stop);
    let error: ConnectError | null = null;
    try {
      for await (const message of credit.watchBalance({ accountId }, { signal: call.signal, timeoutMs: 0 })) {
        failures = 0;
        const update: BalanceUpdate = { sequence: message.sequence, balance: message.balance ?? create(BalanceSchema) };
        if (last && (update.sequence < last.sequence || sameState(update, last))) continue;
        last = update;
        yield update;
      }
    } catch (err) {
      if (outer?.aborted) return;
      error = ConnectError.from(err);
      if (FINAL_WATCH_CODES.has(error.code)) throw error;
    } finally {
      outer?.removeEventListener("abort", stop);
      call.abort();
    }
    failures += 1;
    options.onReconnect?.(failures, error);
    await pause(Math.random() * Math.min(cap, initial * 2 ** (failures - 1)), outer);
  }
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

/**
 * Retries UNAVAILABLE (a store or the server is away) and ABORTED (the same key is in flight)
 * only, of unary calls: a stream's request is consumed once, and watchBalance reconnects itself.
 */
function retries(options: RetryOptions = {}): Interceptor {
  const maxAttempts = options.maxAttempts ?? 4;
  const initial = options.initialBackoffMs ?? 50;
  const cap = options.maxBackoffMs ?? 2000;
  return (next) => async (req) => {
    if (req.stream) return next(req);
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
  const credit = createClient(CreditService, transport);
  return {
    credit,
    admin: createClient(CreditAdminService, transport),
    events: createClient(CreditEventService, transport),
    watchBalance: (accountId, watchOptions) => watchBalance(credit, accountId, watchOptions),
  };
}
