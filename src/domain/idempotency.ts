import type { Failure } from "./errors.js";

/** An idempotency key as a call claims it: the key and the hash of the request it came with. */
export interface KeyClaim {
  readonly key: string;
  readonly requestHash: Uint8Array;
}

/** What is known under a key, wherever it is kept (Redis, Postgres's operation record). */
export type KnownKey =
  /** A call completed and recorded its answer. */
  | { readonly state: "done"; readonly requestHash: Uint8Array; readonly response: Uint8Array }
  /** A call with the key is still running (only Redis knows this). */
  | { readonly state: "running" };

/** What a call with a known key gets instead of running. */
export type KeyDecision =
  | { readonly kind: "done"; readonly response: Uint8Array }
  | { readonly kind: "mismatch" }
  | { readonly kind: "in_flight" };

/**
 * THE idempotency rule, for the Redis fast path and the Postgres record alike: a key whose call
 * completed replays its recorded answer byte for byte to the same request and refuses any other
 * (IDEMPOTENCY_KEY_REUSED); a key whose first call is still running answers IDEMPOTENCY_KEY_IN_USE
 * to every request, the same or not, since that call's outcome decides what the key means (a
 * failed call leaves no record). Nothing known: null, the call runs.
 */
export function decideKey(claim: KeyClaim, known: KnownKey | undefined): KeyDecision | null {
  if (!known) return null;
  if (known.state === "running") return { kind: "in_flight" };
  if (Buffer.compare(known.requestHash, claim.requestHash) !== 0) return { kind: "mismatch" };
  return { kind: "done", response: new Uint8Array(known.response) };
}

/** The answer a decision gives: the recorded response, or the refusal. */
export function keyAnswer(key: string, decision: KeyDecision): { readonly ok: true; readonly response: Uint8Array } | { readonly ok: false; readonly failure: Failure } {
  switch (decision.kind) {
    case "done":
      return { ok: true, response: decision.response };
    case "mismatch":
      return {
        ok: false,
        failure: { reason: "IDEMPOTENCY_KEY_REUSED", message: `idempotency key ${key} was already used for a different request`, metadata: { idempotency_key: key } },
      };
    case "in_flight":
      return {
        ok: false,
        failure: { reason: "IDEMPOTENCY_KEY_IN_USE", message: `a call with idempotency key ${key} is still running; retry`, metadata: { idempotency_key: key } },
      };
  }
}
