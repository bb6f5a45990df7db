import { invariant } from "../domain/errors.js";
import { keyAnswer } from "../domain/idempotency.js";
import type { AccountCommand, CommandOutcome, IdempotencyCache, IdempotencyClaim, IdempotencyScope } from "./ports.js";
import { type AppDeps, type Reply, refuse } from "./deps.js";

/**
 * Wraps a mutating command with the Redis fast path: what Redis knows of the key is decided by
 * domain/idempotency.ts (the rule the Postgres record follows too): a replay, IDEMPOTENCY_KEY_REUSED,
 * or IDEMPOTENCY_KEY_IN_USE (ABORTED, safe to retry) while the key's first call still runs.
 * Whatever Redis says or fails to say, the command itself checks the durable operation record in
 * Postgres, so a flushed or unreachable Redis never causes a second effect, and neither does a
 * value in Redis that fails its authentication (it is ignored, and overwritten with the real
 * answer). Failed calls leave no record: a retry runs again.
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
    case "mismatch":
    case "in_flight": {
      const answer = keyAnswer(claim.key, lookup);
      return answer.ok ? { ok: true, bytes: answer.response } : answer;
    }
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

/**
 * A mutating command with its idempotency claim, through the Redis fast path and the store, at
 * the clock's now. Keys are the account's, also for a command on a reservation: its account is
 * learnt first (remembered by the store, so usually without a round trip).
 */
export async function mutate(deps: AppDeps, command: AccountCommand & { readonly idempotency: IdempotencyClaim }): Promise<Reply> {
  const { target } = command;
  const accountId = "accountId" in target ? target.accountId : await deps.store.locateReservation(target.reservationId);
  if (accountId === null) {
    const reservationId = "reservationId" in target ? target.reservationId : "";
    return refuse("RESERVATION_NOT_FOUND", `reservation ${reservationId} not found`, { reservation_id: reservationId });
  }
  return idempotent(deps.cache, { kind: "account", id: accountId }, command.idempotency, () => deps.store.execute(command, deps.clock.now()));
}
