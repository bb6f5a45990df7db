import type { Failure } from "../domain/errors.js";
import type { IdempotencyClaim } from "./ports.js";

/** What a key already means for a request: its recorded answer, or a refusal. */
export type KnownAnswer = { readonly ok: true; readonly response: Uint8Array } | { readonly ok: false; readonly failure: Failure };

/** The key was recorded with another request. */
export function keyReused(key: string): Failure {
  return { reason: "IDEMPOTENCY_KEY_REUSED", message: `idempotency key ${key} was already used for a different request`, metadata: { idempotency_key: key } };
}

/** The key's first call is still running: its outcome decides what the key means (ABORTED, retry). */
export function keyInUse(key: string): Failure {
  return { reason: "IDEMPOTENCY_KEY_IN_USE", message: `a call with idempotency key ${key} is still running; retry`, metadata: { idempotency_key: key } };
}

/**
 * THE rule for a completed call recorded under the claim's key (in Redis or in Postgres): the
 * same request replays the recorded answer byte for byte, another request is refused; nothing
 * recorded: null, the call runs.
 */
export function recordedAnswer(claim: IdempotencyClaim, recorded: { readonly requestHash: Uint8Array; readonly response: Uint8Array } | undefined): KnownAnswer | null {
  if (!recorded) return null;
  if (Buffer.compare(recorded.requestHash, claim.requestHash) !== 0) return { ok: false, failure: keyReused(claim.key) };
  return { ok: true, response: new Uint8Array(recorded.response) };
}
