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
  command: () => Promise<CommandOutcome<unknown>>,
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
  let outcome: CommandOutcome<unknown>;
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
  await cache.complete(scope, claim, outcome.response);
  return { ok: true, bytes: outcome.response };
}

/** The scope of `scopeId`'s keys, of the kind the command's target names (an account, or a reservation). */
function scopeOf(target: CommandTarget, scopeId: string): IdempotencyScope {
  return { kind: "accountId" in target ? "account" : "reservation", id: scopeId };
}

/** A mutating command with its idempotency claim, through the Redis fast path and the store, at the clock's now. */
export function mutate<T>(deps: AppDeps, scopeId: string, command: AccountCommand<T> & { readonly idempotency: IdempotencyClaim }): Promise<Reply> {
  return idempotent(deps.cache, scopeOf(command.target, scopeId), command.idempotency, () => deps.store.execute(command, deps.clock.now()));
}
