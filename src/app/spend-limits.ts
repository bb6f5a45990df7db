import type { AccountBook } from "../domain/account-book.js";
import { accountTime } from "../domain/clock.js";
import { fail, ok, type Result } from "../domain/errors.js";
import { applyDue } from "../domain/maintenance.js";
import type { SpendLimitSpec, SpendPeriod, SpendView } from "../domain/spend-limit.js";
import type { ActionValues, RemoveSpendLimitAction, SetSpendLimitAction } from "./commands.js";
import type { AppDeps, Reply } from "./deps.js";
import { mutate } from "./idempotent.js";
import type { IdempotencyClaim } from "./ports.js";

export interface SetSpendLimitInput {
  readonly accountId: string;
  /** Validated at the edge. */
  readonly limit: SpendLimitSpec;
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

export interface RemoveSpendLimitInput {
  readonly accountId: string;
  readonly memberId: string;
  readonly period: SpendPeriod;
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

/**
 * SetSpendLimit: the limit of one (member, period), in place of any before. A change record of
 * the account (SPEND_LIMIT_SET). A new limit counts what the scope already spent in the current
 * period; a limit lowered below it refuses new holds only: running holds are never cut.
 */
export async function setSpendLimit(deps: AppDeps, input: SetSpendLimitInput): Promise<Reply> {
  const action: SetSpendLimitAction = { kind: "SetSpendLimit", limit: input.limit };
  return mutate(deps, { target: { accountId: input.accountId }, createAccount: false, idempotency: input.claim, caller: input.caller, action });
}

/** RemoveSpendLimit: SPEND_LIMIT_NOT_FOUND when the scope has no limit of that period. */
export async function removeSpendLimit(deps: AppDeps, input: RemoveSpendLimitInput): Promise<Reply> {
  const action: RemoveSpendLimitAction = { kind: "RemoveSpendLimit", memberId: input.memberId, period: input.period };
  return mutate(deps, { target: { accountId: input.accountId }, createAccount: false, idempotency: input.claim, caller: input.caller, action });
}

export function applySetSpendLimit(book: AccountBook, action: SetSpendLimitAction, now: Date): Result<ActionValues["SetSpendLimit"]> {
  const set = book.setSpendLimit(action.limit, now);
  return set.ok ? ok({ limit: set.value }) : set;
}

export function applyRemoveSpendLimit(book: AccountBook, action: RemoveSpendLimitAction, now: Date): Result<ActionValues["RemoveSpendLimit"]> {
  const removed = book.removeSpendLimit(action.memberId, action.period, now);
  return removed.ok ? ok({ removed: removed.value }) : removed;
}

/**
 * GetSpendLimits: the limits that apply to a member (the account's, then its own), as of now by
 * the account's clock. A read without a lock: holds that fell due are settled in the read's own
 * copy of the book (not written), so they no longer count as held.
 */
export async function getSpendLimits(deps: AppDeps, accountId: string, memberId: string): Promise<Result<{ limits: SpendView[]; asOf: Date }>> {
  const now = deps.clock.now();
  const read = await deps.store.readBook(accountId, now);
  if (!read) return fail("ACCOUNT_NOT_FOUND", `account ${accountId} not found`, { account_id: accountId });
  const { book } = read;
  const at = accountTime(book.clockOffsetMs, now);
  if (!book.spend) return ok({ limits: [], asOf: at });
  applyDue(book, at, deps.newId);
  const limits = book.spend.applying(memberId).map((l) => book.spend!.view(l, at, book.subscription, book.running));
  return ok({ limits, asOf: at });
}
