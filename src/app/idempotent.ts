import { invariant } from "../domain/errors.js";
import type { AccountCommand, CommandOutcome, CommandTarget, IdempotencyCache, IdempotencyClaim, IdempotencyScope } from "./ports.js";
import type { AppDeps, Reply } from "./deps.js";

/**
 * Wraps a mutating command with the Redis fast path: a key seen with the same request returns
 * the cached response; with another request, IDEMPOTENCY_KEY_REUSED; while its first call is
 * still running, IDEMPOTENCY_KEY_IN_USE (ABORTED, safe to retry) whatever the request, since the
 * first call's outcome decides what the key means. Whatever Redis says or fails
 * to say, the command itself checks the durable operation record in Postgres, so a flushed or
 * unreachable Redis never causes a second effect, and neither does a value in Redis that fails its
 * authentication (it is ignored, and overwritten with the real answer). Failed calls leave no
 * record: a retry runs again.
 */
export async function idempotent(
  cache: IdempotencyCache,
  scope: IdempotencyScope,
  claim: IdempotencyClaim,
  command: () => Promise<CommandOutcome>,
): Promise<Reply> {
  const lookup = await cache.begin(scope, claim);
  switch (lookup.kind) {
    case "done":
      return { ok: true, bytes: lookup.response };
    case "mismatch":
      return {
        ok: false,
        failure: {
          reason: "IDEMPOTENCY_KEY_REUSED",
          message: `idempotency key ${claim.key} was already used for a different request`,
          metadata: { idempotency_key: claim.key },
        },
      };
    case "in_flight":
      return {
        ok: false,
        failure: {
          reason: "IDEMPOTENCY_KEY_IN_USE",
          message: `a call with idempotency key ${claim.key} is still running; retry`,
          metadata: { idempotency_key: claim.key },
        },
      };
    case "claimed":
    case "untrusted":
    case "unavailable":
      break;
  }
  let outcome: CommandOutcome;
  try {
    outcome = await command();
  } catch (err) {
    if (lookup.kind === "claimed") await cache.abandon(scope, claim, lookup.token);
    throw err;
  }
  if (outcome.kind === "failed") {
    if (lookup.kind === "claimed") await cache.abandon(scope, claim, lookup.token);
    return { ok: false, failure: outcome.failure };
  }
  const response = outcome.response;
  invariant(response !== null, "a command with a key records its answer");
  await cache.complete(scope, claim, response);
  return { ok: true, bytes: response };
}

/** The scope of the command's keys, of the kind its target names (an account, or a reservation). */
function scopeOf(target: CommandTarget): IdempotencyScope {
  return "accountId" in target ? { kind: "account", id: target.accountId } : { kind: "reservation", id: target.reservationId };
}

/** A mutating command with its idempotency claim, through the Redis fast path and the store, at the clock's now. */
export function mutate(deps: AppDeps, command: AccountCommand & { readonly idempotency: IdempotencyClaim }): Promise<Reply> {
  return idempotent(deps.cache, scopeOf(command.target), command.idempotency, () => deps.store.execute(command, deps.clock.now()));
}
