import type { AccountBook } from "../domain/account-book.js";
import type { ConcurrencyLimit } from "../domain/concurrency-limit.js";
import { invariant, ok, type Result } from "../domain/errors.js";
import type { ActionValues, SetConcurrencyLimitAction } from "./commands.js";
import type { AppDeps, Reply } from "./deps.js";
import { mutate } from "./idempotent.js";
import type { IdempotencyClaim } from "./ports.js";

export interface SetConcurrencyLimitInput {
  readonly accountId: string;
  /** Validated at the edge. */
  readonly limit: ConcurrencyLimit;
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

/**
 * SetConcurrencyLimit: the caps on running holds of a member (or the whole account), in place of
 * any before. A change record of the account (CONCURRENCY_LIMIT_SET). Holds already running are
 * never cut: a cap lowered below what runs only refuses new holds until enough settle.
 */
export async function setConcurrencyLimit(deps: AppDeps, input: SetConcurrencyLimitInput): Promise<Reply> {
  const action: SetConcurrencyLimitAction = { kind: "SetConcurrencyLimit", limit: input.limit };
  return mutate(deps, { target: { accountId: input.accountId }, createAccount: false, idempotency: input.claim, caller: input.caller, action });
}

export function applySetConcurrencyLimit(book: AccountBook, action: SetConcurrencyLimitAction): Result<ActionValues["SetConcurrencyLimit"]> {
  const set = book.setConcurrencyLimit(action.limit);
  if (!set.ok) return set;
  invariant(book.concurrency, "set above");
  return ok({ limit: book.concurrency.view(action.limit.memberId) });
}
