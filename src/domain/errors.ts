/**
 * The closed list of expected failures. Domain and use cases return these as values;
 * rpc/errors.ts maps each to exactly one gRPC code. Precedence when several apply:
 * bad input (INVALID_FIELD) is checked before anything is read, then idempotency
 * (KEY_REUSED / KEY_IN_USE), then existence (NOT_FOUND), then state and funds.
 */
export type FailureReason =
  | "INVALID_FIELD"
  | "IDEMPOTENCY_KEY_REUSED"
  | "IDEMPOTENCY_KEY_IN_USE"
  | "ACCOUNT_NOT_FOUND"
  | "RESERVATION_NOT_FOUND"
  | "PACK_NOT_FOUND"
  | "PLAN_NOT_FOUND"
  | "ALREADY_ON_PLAN"
  | "PLAN_CHANGE_NOT_ALLOWED"
  | "TEST_CLOCK_DISABLED"
  | "UNKNOWN_MODEL"
  | "UNSUPPORTED_KIND"
  | "RESOLUTION_OUT_OF_RANGE"
  | "DURATION_OUT_OF_RANGE"
  | "COUNT_OUT_OF_RANGE"
  | "UNSUPPORTED_QUALITY"
  | "RATE_CARD_NOT_FOUND"
  | "INSUFFICIENT_CREDITS"
  | "CONCURRENCY_LIMIT_EXCEEDED"
  | "SPEND_LIMIT_EXCEEDED"
  | "SPEND_LIMIT_NOT_FOUND"
  | "AUTO_TOP_UP_REQUEST_STALE"
  | "AUTO_TOP_UP_REQUEST_NOT_FOUND"
  | "BALANCE_LIMIT"
  | "RESERVATION_NOT_HELD"
  | "RESERVATION_EXPIRED"
  | "STORE_UNAVAILABLE"
  | "SHUTTING_DOWN"
  | "READ_LIMIT_EXCEEDED"
  | "TOO_MANY_WATCHERS"
  | "CURSOR_EXPIRED"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED";

export interface Failure {
  readonly reason: FailureReason;
  readonly message: string;
  /** Structured detail for the caller (field name, requested and available amounts, state). */
  readonly metadata: Readonly<Record<string, string>>;
}

export type Result<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly failure: Failure };

export function ok<T>(value: T): Result<T> {
  return { ok: true, value };
}

export function fail<T = never>(reason: FailureReason, message: string, metadata: Record<string, string> = {}): Result<T> {
  return { ok: false, failure: { reason, message, metadata } };
}

/** A failure carried through a throw, for code paths (stores, adapters) that cannot return values. */
export class FailureError extends Error {
  constructor(readonly failure: Failure) {
    super(failure.message);
    this.name = "FailureError";
  }
}

/** A broken invariant: a bug, never an expected outcome. Surfaces as INTERNAL. */
export class InvariantViolation extends Error {
  constructor(message: string) {
    super(`invariant violated: ${message}`);
    this.name = "InvariantViolation";
  }
}

export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new InvariantViolation(message);
}
