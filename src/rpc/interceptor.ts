import { randomUUID } from "node:crypto";
import { type Metadata, ServerInterceptingCall, type ServerInterceptor, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Metrics } from "../observability/metrics.js";
import { identify, mayCall, type TokenEntry } from "./auth.js";
import { ID_PATTERN, MAX_ID_LENGTH } from "../domain/limits.js";
import { failureToStatus } from "./errors.js";
import type { StreamLimit } from "./stream-limit.js";

/**
 * Who is calling, by call (its request metadata, the one object the interceptor and the handler
 * both see): set by the interceptor, read once into the handler's CallContext. Nothing a client
 * sends can set it.
 */
const callers = new WeakMap<Metadata, string>();

/**
 * The identity recorded on ledger entries, as the interceptor established it for this call: the
 * token's principal name (or, with authentication off, the unchecked `x-caller` metadata), or
 * "anonymous".
 */
export function callerOf(metadata: Metadata): string {
  const value = callers.get(metadata);
  return value !== undefined && value.length <= MAX_ID_LENGTH && ID_PATTERN.test(value) ? value : "anonymous";
}

export interface CallInterceptorOptions {
  /** Configured tokens; null when authentication is off (development): the caller is `x-caller`, unchecked. */
  readonly tokens: readonly TokenEntry[] | null;
  /** Reflection and health served without a token when true. */
  readonly openReflection: boolean;
  readonly openHealth: boolean;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** The server's cap on open streaming calls (stream-limit.ts); none: streams are not counted. */
  readonly streams?: StreamLimit;
}

const REFLECTION = /^\/grpc\.reflection\.v1(alpha)?\.ServerReflection\//;
const HEALTH = /^\/grpc\.health\.v1\.Health\//;
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

function firstString(metadata: Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  return typeof value === "string" ? value : undefined;
}

/**
 * A request id of our own, held until the call ends (a stream's for as long as it is open).
 * randomUUID builds its text by concatenation: a chain of ~14 string pieces, ~490 bytes of heap
 * per id where the flat text takes ~65 (10,000 open WatchBalance streams: ~4 MB). toLowerCase
 * returns the flat text (the id is lower case already).
 */
function newRequestId(): string {
  return randomUUID().toLowerCase();
}

type Decision =
  | { readonly caller: string }
  | { readonly caller: string; readonly code: status; readonly reason: "UNAUTHENTICATED" | "PERMISSION_DENIED"; readonly message: string };

function decide(options: CallInterceptorOptions, path: string, metadata: Metadata): Decision {
  const fallback = firstString(metadata, "x-caller");
  if (options.tokens === null) return { caller: fallback && REQUEST_ID.test(fallback) ? fallback : "anonymous" };
  if ((options.openReflection && REFLECTION.test(path)) || (options.openHealth && HEALTH.test(path))) return { caller: "anonymous" };
  const principal = identify(options.tokens, firstString(metadata, "authorization"));
  if (!principal) return { caller: "anonymous", code: status.UNAUTHENTICATED, reason: "UNAUTHENTICATED", message: "a valid bearer token is required" };
  if (REFLECTION.test(path) || HEALTH.test(path) || mayCall(principal.role, path)) return { caller: principal.name };
  // The refused principal is named in the log line: the audit trail shows who tried.
  return { caller: principal.name, code: status.PERMISSION_DENIED, reason: "PERMISSION_DENIED", message: `role ${principal.role} may not call ${path}` };
}

/** The account or reservation a request is about, for the log line. */
function subjectOf(message: unknown): string | undefined {
  const m = message as { accountId?: unknown; reservationId?: unknown } | null;
  if (typeof m?.accountId === "string" && m.accountId) return m.accountId;
  if (typeof m?.reservationId === "string" && m.reservationId) return m.reservationId;
  return undefined;
}

/**
 * Every call, unary or streaming, passes here first: a request id, authentication and
 * authorization (before the request is read), then one log line and the RPC metrics when it
 * completes. Tokens are never logged; only the principal's name travels on, to the handler's
 * CallContext (callerOf).
 */
export function createCallInterceptor(options: CallInterceptorOptions): ServerInterceptor {
  return (descriptor, call) => {
    const path = descriptor.path;
    const [, service = "", method = ""] = path.split("/");
    const started = performance.now();
    let requestId = "";
    let caller = "anonymous";
    let subject: string | undefined;
    let finished = false;
    const streams = descriptor.requestStream || descriptor.responseStream ? options.streams : undefined;
    let counted = false;
    const finish = (code: status) => {
      if (finished) return;
      finished = true;
      if (counted) streams!.close();
      const seconds = (performance.now() - started) / 1000;
      const labels = { service, method, code: status[code] ?? String(code) };
      options.metrics.rpcHandled.inc(labels);
      options.metrics.rpcSeconds.observe(labels, seconds);
      options.log.info(
        { requestId, method: `${service}/${method}`, caller, account: subject, code: labels.code, durationMs: Math.round(seconds * 10_000) / 10 },
        "rpc",
      );
    };
    return new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, nextMetadata) {
            const given = firstString(metadata, "x-request-id");
            requestId = given && REQUEST_ID.test(given) ? given : newRequestId();
            const decision = decide(options, path, metadata);
            caller = decision.caller;
            if ("code" in decision) {
              const refusal = failureToStatus({ reason: decision.reason, message: decision.message, metadata: {} });
              call.sendStatus({ code: decision.code, details: decision.message, metadata: refusal.metadata! });
              finish(decision.code);
              return;
            }
            if (streams) {
              if (!streams.tryOpen()) {
                const refusal = streams.refusal();
                call.sendStatus(refusal);
                finish(refusal.code);
                return;
              }
              counted = true;
            }
            callers.set(metadata, caller);
            nextMetadata(metadata);
          },
          onReceiveMessage(message, nextMessage) {
            subject = subjectOf(message);
            nextMessage(message);
          },
          // A stream the client cancels (or whose connection goes) ends without a status: its log
          // line and metrics are written here instead.
          onCancel() {
            finish(status.CANCELLED);
          },
        });
      },
      sendStatus(statusObject, next) {
        finish(statusObject.code);
        next(statusObject);
      },
    });
  };
}
