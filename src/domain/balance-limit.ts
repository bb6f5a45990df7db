import type { AccountBook } from "./account-book.js";
import { freeCredits, isExpired } from "./bucket.js";
import { fail, ok, type Result } from "./errors.js";
import { MAX_ACCOUNT_CREDITS } from "./limits.js";

/**
 * The credits an account holds, as counted against MAX_ACCOUNT_CREDITS: its held credits, the
 * free credits of its unexpired top-ups and adjustments, and for its subscription the larger of
 * the free credits of its allowance bucket and the allowance the subscription will grant next
 * (the plan in force's, and a scheduled plan's). Everything GetBalance can show as available or
 * held is counted, so the totals stay below the cap, far from int64.
 *
 * Why the next allowance counts ahead: a period roll-over is never refused (the allowance was
 * paid for). The roll-over ends the old allowance bucket, whose free credits expire, and grants
 * the next allowance, which the count already holds — so it never raises the count, and an
 * account under the cap stays under it without anything automatic ever being refused.
 */
export interface CreditCount {
  readonly held: bigint;
  /** Free credits of unexpired TOP_UP and ADJUSTMENT buckets. */
  readonly grants: bigint;
  /** Free credits of unexpired SUBSCRIPTION buckets. */
  readonly subscription: bigint;
  /** Monthly allowances the subscription may grant at its next roll-over. */
  readonly allowances: readonly bigint[];
}

export function creditCount(book: AccountBook, now: Date): CreditCount {
  let held = 0n;
  let grants = 0n;
  let subscription = 0n;
  for (const bucket of book.allBuckets()) {
    held += bucket.held;
    if (isExpired(bucket, now)) continue;
    if (bucket.kind === "SUBSCRIPTION") subscription += freeCredits(bucket);
    else grants += freeCredits(bucket);
  }
  const plan = book.subscription;
  const allowances = plan ? [plan.plan.monthlyAllowance, ...(plan.scheduled ? [plan.scheduled.plan.monthlyAllowance] : [])] : [];
  return { held, grants, subscription, allowances };
}

/** The count as one number. */
export function counted(count: CreditCount): bigint {
  let subscription = count.subscription;
  for (const allowance of count.allowances) if (allowance > subscription) subscription = allowance;
  return count.held + count.grants + subscription;
}

/**
 * BALANCE_LIMIT when going from `before` to `after` would raise the count above the cap. A change
 * that does not raise it (a downgrade, a cancellation) is never refused, even above the cap.
 */
export function withinLimit(accountId: string, before: CreditCount, after: CreditCount): Result<true> {
  const holds = counted(before);
  const next = counted(after);
  if (next <= MAX_ACCOUNT_CREDITS || next <= holds) return ok(true);
  return fail("BALANCE_LIMIT", `account ${accountId} would hold more than ${MAX_ACCOUNT_CREDITS} credits: it holds ${holds}, the grant adds ${next - holds}`, {
    limit: String(MAX_ACCOUNT_CREDITS),
    account_credits: String(holds),
    requested: String(next - holds),
  });
}

/** BALANCE_LIMIT when a new TOP_UP or ADJUSTMENT bucket of `amount` would take the account past the cap. */
export function grantWithinLimit(book: AccountBook, amount: bigint, now: Date): Result<true> {
  const before = creditCount(book, now);
  return withinLimit(book.accountId, before, { ...before, grants: before.grants + amount });
}
