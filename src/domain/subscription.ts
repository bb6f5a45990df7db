import type { AccountBook } from "./account-book.js";
import type { Plan } from "./plan.js";
import { allowancePeriod, allowancePeriodIndex, billingPeriod, type Period } from "./periods.js";

/** A downgrade (or interval change) waiting for the end of the billing period. */
export interface ScheduledChange {
  readonly plan: Plan;
  readonly effectiveAt: Date;
}

/** An account's subscription: the plan version in force, its billing anchor and what it granted last. */
export interface Subscription {
  readonly accountId: string;
  plan: Plan;
  /** Start of the first billing period; allowance periods are monthly from here. */
  anchor: Date;
  /** Index of the last allowance period whose allowance was granted; -1 before the first. */
  grantedPeriod: number;
  /** The SUBSCRIPTION bucket of the granted period, if the plan grants anything. */
  currentBucketId: string | null;
  scheduled: ScheduledChange | null;
}

export interface SubscriptionView {
  readonly subscription: Subscription;
  readonly allowancePeriod: Period;
  readonly billingPeriod: Period;
}

/**
 * A time never earlier than the anchor: with several servers a slightly slower clock may read a
 * time just before the anchor another server set; that instant belongs to the first period.
 */
export function notBeforeAnchor(subscription: Subscription, now: Date): Date {
  return now.getTime() < subscription.anchor.getTime() ? subscription.anchor : now;
}

export function describe(subscription: Subscription, at: Date): SubscriptionView {
  const now = notBeforeAnchor(subscription, at);
  const k = allowancePeriodIndex(subscription.anchor, now);
  return {
    subscription,
    allowancePeriod: allowancePeriod(subscription.anchor, k),
    billingPeriod: billingPeriod(subscription.anchor, subscription.plan.interval, now),
  };
}

/**
 * Grants allowance period `index` of the plan in force as a new SUBSCRIPTION bucket (nothing
 * for a plan without allowance). `automatic` when no caller asked for it (a roll-over).
 */
export function grantPeriod(book: AccountBook, subscription: Subscription, index: number, bucketId: string, automatic: boolean): bigint {
  subscription.grantedPeriod = index;
  subscription.currentBucketId = null;
  book.touchSubscription();
  return addPeriodBucket(book, subscription, subscription.plan.monthlyAllowance, bucketId, automatic);
}

/** A SUBSCRIPTION bucket of `amount` for the granted period, which becomes the current bucket. */
export function addPeriodBucket(book: AccountBook, subscription: Subscription, amount: bigint, bucketId: string, automatic: boolean): bigint {
  if (amount === 0n) return 0n;
  const { plan } = subscription;
  const period = allowancePeriod(subscription.anchor, subscription.grantedPeriod);
  book.addBucket(
    {
      id: bucketId,
      accountId: book.accountId,
      kind: "SUBSCRIPTION",
      granted: amount,
      remaining: 0n,
      held: 0n,
      validFrom: period.start,
      expiresAt: period.end,
      sourceRef: `plan:${plan.planId}@${plan.version};period:${subscription.grantedPeriod}`,
      createdAt: period.start,
    },
    "GRANT",
    { plan_id: plan.planId, plan_version: String(plan.version), period_start: period.start.toISOString() },
    automatic,
  );
  subscription.currentBucketId = bucketId;
  book.touchSubscription();
  return amount;
}

/**
 * Period roll-over without a cron job: applies a scheduled change whose time has come, then
 * grants the allowance of the period containing `now` if it was not granted yet. Months nobody
 * touched grant nothing retroactively; only the current period's bucket comes into being. (The
 * previous period's bucket has expired on its own: its expires_at is the period end.)
 */
export function rollSubscription(book: AccountBook, now: Date, newId: () => string): void {
  const subscription = book.subscription;
  if (!subscription) return;
  const scheduled = subscription.scheduled;
  if (scheduled && scheduled.effectiveAt.getTime() <= now.getTime()) {
    const previousPlan = subscription.plan;
    subscription.plan = scheduled.plan;
    subscription.scheduled = null;
    book.touchSubscription();
    const zero = { currencyCode: scheduled.plan.price.currencyCode, amountMinor: 0n };
    book.emit({ kind: "PLAN_CHANGED", change: "SCHEDULED_CHANGE_APPLIED", previousPlan, plan: scheduled.plan, effectiveAt: scheduled.effectiveAt, proratedCharge: zero, subscription: describe(subscription, now) });
  }
  const index = allowancePeriodIndex(subscription.anchor, notBeforeAnchor(subscription, now));
  if (index <= subscription.grantedPeriod) return;
  const previous = allowancePeriod(subscription.anchor, subscription.grantedPeriod);
  grantPeriod(book, subscription, index, newId(), true);
  // Billing charges a period when a billing period began since the last granted allowance period
  // (every month on monthly plans, every twelfth on yearly ones; a roll that skipped months
  // untouched still renews the billing period in force once).
  const period = allowancePeriod(subscription.anchor, index);
  const billing = billingPeriod(subscription.anchor, subscription.plan.interval, period.start);
  book.emit({
    kind: "PERIOD_RENEWED",
    plan: subscription.plan,
    periodStart: period.start,
    periodEnd: period.end,
    billingRenewed: billing.start.getTime() > previous.start.getTime(),
    billingPeriodEnd: billing.end,
  });
}
