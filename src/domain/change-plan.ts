import type { AccountBook } from "./account-book.js";
import { type CreditCount, creditCount, withinLimit } from "./balance-limit.js";
import { freeCredits, isExpired } from "./bucket.js";
import { fail, ok, type Result } from "./errors.js";
import type { Money } from "./grants.js";
import { billingPeriod, prorate } from "./periods.js";
import type { Plan } from "./plan.js";
import { addPeriodBucket, grantPeriod, notBeforeAnchor, type Subscription } from "./subscription.js";

export type PlanChangeKind = "SUBSCRIBED" | "UPGRADED" | "DOWNGRADE_SCHEDULED" | "SCHEDULED_CHANGE_CANCELLED" | "INTERVAL_CHANGED";

export interface PlanChange {
  readonly kind: PlanChangeKind;
  readonly effectiveAt: Date;
  /** What billing charges now (negative: a credit to the customer). */
  readonly proratedCharge: Money;
  readonly creditsGranted: bigint;
  readonly subscription: Subscription;
}

function money(currencyCode: string, amountMinor: bigint): Money {
  return { currencyCode, amountMinor };
}

/**
 * ChangePlan, deciding by the plans' monthly allowance and interval:
 * - no subscription: subscribe now (anchor = now), first allowance granted at once, the first
 *   billing period's price charged;
 * - the current plan again: cancels a scheduled change (or fails if none is scheduled);
 * - MONTH → YEAR: a new billing period starts now (anchor = now); the current allowance ends
 *   now and the new one is granted; charge = new price − unused part of the old price;
 * - YEAR → MONTH, or a lower or equal allowance: scheduled for the end of the billing period;
 * - a higher allowance (same interval): immediate; the current period's bucket grows by the
 *   difference; charge = price difference × remaining part of the billing period (never < 0).
 */
export function changePlan(book: AccountBook, target: Plan, now: Date, newId: () => string): Result<PlanChange> {
  const current = book.subscription;
  // Every change that grants credits, or schedules a larger allowance, is judged against the
  // account credit cap before anything is changed (src/domain/balance-limit.ts).
  const count = creditCount(book, now);
  const limited = (after: Partial<CreditCount>, apply: () => PlanChange): Result<PlanChange> => {
    const check = withinLimit(book.accountId, count, { ...count, ...after });
    return check.ok ? ok(apply()) : check;
  };
  if (!current) {
    return limited({ subscription: count.subscription + target.monthlyAllowance, allowances: [target.monthlyAllowance] }, () => subscribe(book, target, now, newId));
  }
  if (target.price.currencyCode !== current.plan.price.currencyCode) {
    return fail("PLAN_CHANGE_NOT_ALLOWED", `plan ${target.planId} is priced in ${target.price.currencyCode}, the subscription in ${current.plan.price.currencyCode}`, {
      plan_id: target.planId,
    });
  }
  const period = billingPeriod(current.anchor, current.plan.interval, notBeforeAnchor(current, now));
  const zero = money(current.plan.price.currencyCode, 0n);
  // The same plan version again: cancel what is scheduled. (A newer version of the same plan is a change like any other.)
  if (target.planId === current.plan.planId && target.version === current.plan.version) {
    if (!current.scheduled) {
      return fail("ALREADY_ON_PLAN", `account ${book.accountId} is already on plan ${target.planId}`, { plan_id: target.planId });
    }
    current.scheduled = null;
    book.touchSubscription();
    return ok({ kind: "SCHEDULED_CHANGE_CANCELLED", effectiveAt: now, proratedCharge: zero, creditsGranted: 0n, subscription: current });
  }
  if (current.plan.interval === "MONTH" && target.interval === "YEAR") {
    // The current allowance bucket ends now: its free credits leave the count, the new allowance enters it.
    const ending = current.currentBucketId ? book.bucket(current.currentBucketId) : null;
    const leaving = ending && !isExpired(ending, now) ? freeCredits(ending) : 0n;
    return limited({ subscription: count.subscription - leaving + target.monthlyAllowance, allowances: [target.monthlyAllowance] }, () =>
      restartPeriod(book, current, target, now, newId),
    );
  }
  if (current.plan.interval === target.interval && target.monthlyAllowance > current.plan.monthlyAllowance) {
    const extra = target.monthlyAllowance - current.plan.monthlyAllowance;
    return limited({ subscription: count.subscription + extra, allowances: [target.monthlyAllowance] }, () => upgrade(book, current, target, now, newId));
  }
  return limited({ allowances: [current.plan.monthlyAllowance, target.monthlyAllowance] }, () => {
    current.scheduled = { plan: target, effectiveAt: period.end };
    book.touchSubscription();
    return { kind: "DOWNGRADE_SCHEDULED", effectiveAt: period.end, proratedCharge: zero, creditsGranted: 0n, subscription: current };
  });
}

function subscribe(book: AccountBook, plan: Plan, now: Date, newId: () => string): PlanChange {
  const subscription: Subscription = { accountId: book.accountId, plan, anchor: now, grantedPeriod: -1, currentBucketId: null, scheduled: null };
  book.subscription = subscription;
  const granted = grantPeriod(book, subscription, 0, newId(), false);
  return { kind: "SUBSCRIBED", effectiveAt: now, proratedCharge: plan.price, creditsGranted: granted, subscription };
}

function upgrade(book: AccountBook, current: Subscription, target: Plan, now: Date, newId: () => string): PlanChange {
  const period = billingPeriod(current.anchor, current.plan.interval, notBeforeAnchor(current, now));
  const extra = target.monthlyAllowance - current.plan.monthlyAllowance;
  const priceDiff = target.price.amountMinor - current.plan.price.amountMinor;
  const charge = prorate(priceDiff > 0n ? priceDiff : 0n, period.end.getTime() - notBeforeAnchor(current, now).getTime(), period.end.getTime() - period.start.getTime());
  const bucketId = current.currentBucketId;
  current.plan = target;
  current.scheduled = null;
  book.touchSubscription();
  // The current period's bucket grows; a plan without allowance had none, so it gets one now.
  if (bucketId) book.grant(bucketId, extra, { plan_id: target.planId, plan_version: String(target.version), reason: "upgrade" });
  else addPeriodBucket(book, current, extra, newId(), false);
  return { kind: "UPGRADED", effectiveAt: now, proratedCharge: money(target.price.currencyCode, charge), creditsGranted: extra, subscription: current };
}

function restartPeriod(book: AccountBook, current: Subscription, target: Plan, now: Date, newId: () => string): PlanChange {
  const period = billingPeriod(current.anchor, current.plan.interval, notBeforeAnchor(current, now));
  const unused = prorate(current.plan.price.amountMinor, period.end.getTime() - notBeforeAnchor(current, now).getTime(), period.end.getTime() - period.start.getTime());
  if (current.currentBucketId) book.closeBucket(current.currentBucketId, now);
  current.plan = target;
  current.anchor = now;
  current.scheduled = null;
  const granted = grantPeriod(book, current, 0, newId(), false);
  return {
    kind: "INTERVAL_CHANGED",
    effectiveAt: now,
    proratedCharge: money(target.price.currencyCode, target.price.amountMinor - unused),
    creditsGranted: granted,
    subscription: current,
  };
}
