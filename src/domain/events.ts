import type { AlertView } from "./balance-alert.js";
import type { AutoTopUpEvent } from "./auto-top-up.js";
import type { Bucket } from "./bucket.js";
import type { ConcurrencyLimit } from "./concurrency-limit.js";
import type { SpendView } from "./spend-limit.js";
import type { Money } from "./grants.js";
import type { Plan } from "./plan.js";
import type { Reservation } from "./reservation.js";
import type { PlanChangeKind } from "./change-plan.js";
import type { SubscriptionView } from "./subscription.js";

/** What the event feed tells of a plan: ChangePlan's kinds, and a scheduled change taking effect. */
export type PlanEventChange = PlanChangeKind | "SCHEDULED_CHANGE_APPLIED";

/**
 * One fact of a change record, as the domain states it. Every method of AccountBook that changes
 * the book, or the rule that calls it, states what happened as one of these, in the same step: the
 * apply stage (app/apply.ts) stamps them with the change record's sequence and the store writes
 * them in the transaction that writes the change (the transactional outbox, docs/events.md).
 * Objects are the live ones of the book: they are encoded when the command that emitted them ends.
 */
export type LedgerEvent =
  | { readonly kind: "HOLD_CREATED" | "HOLD_COMMITTED" | "HOLD_RELEASED" | "HOLD_EXPIRED" | "HOLD_EXTENDED"; readonly reservation: Reservation }
  | { readonly kind: "CREDITS_GRANTED"; readonly bucket: Bucket; readonly amount: bigint; readonly source: string }
  | { readonly kind: "CREDITS_EXPIRED"; readonly bucket: Bucket; readonly amount: bigint; readonly reservationId: string | null }
  /** A bucket's free credits will expire within the notice period (once per bucket; domain/expiry-notice.ts). */
  | { readonly kind: "CREDITS_EXPIRING"; readonly bucket: Bucket; readonly amount: bigint; readonly expiresAt: Date }
  /** An alert line crossed, or the alert was set (domain/balance-alert.ts); `available` as the change left it, `alert` as it stands after. */
  | { readonly kind: "BALANCE_LOW" | "BALANCE_EXHAUSTED" | "BALANCE_RECOVERED" | "BALANCE_ALERT_SET"; readonly available: bigint; readonly alert: AlertView }
  | {
      readonly kind: "PLAN_CHANGED";
      readonly change: PlanEventChange;
      readonly previousPlan: Plan | null;
      readonly plan: Plan;
      readonly effectiveAt: Date;
      readonly proratedCharge: Money;
      readonly subscription: SubscriptionView;
    }
  | {
      readonly kind: "PERIOD_RENEWED";
      readonly plan: Plan;
      readonly periodStart: Date;
      readonly periodEnd: Date;
      /** Set when a billing period began with the allowance period: billing charges `plan.price` for it. */
      readonly billingRenewed: boolean;
      readonly billingPeriodEnd: Date;
    }
  | { readonly kind: "TEST_CLOCK_ADVANCED"; readonly advancedMs: number; readonly now: Date }
  /** New caps on running holds (domain/concurrency-limit.ts). */
  | { readonly kind: "CONCURRENCY_LIMIT_SET"; readonly limit: ConcurrencyLimit }
  /** A spend limit created, replaced or removed (domain/spend-limit.ts), with its figures then. */
  | { readonly kind: "SPEND_LIMIT_SET" | "SPEND_LIMIT_REMOVED"; readonly limit: SpendView }
  /** A Reserve took a scope past a SOFT limit (the limit's figures before it). */
  | { readonly kind: "SPEND_LIMIT_REACHED"; readonly limit: SpendView; readonly requested: bigint; readonly reservationId: string; readonly memberId: string }
  /** The auto top-up rule set, a request made, answered, or the rule disabled (domain/auto-top-up.ts). */
  | AutoTopUpEvent;

export type LedgerEventKind = LedgerEvent["kind"];

/** Every kind the feed can carry, in the order of the proto's EventKind. */
export const EVENT_KINDS: readonly LedgerEventKind[] = [
  "HOLD_CREATED",
  "HOLD_COMMITTED",
  "HOLD_RELEASED",
  "HOLD_EXPIRED",
  "HOLD_EXTENDED",
  "CREDITS_GRANTED",
  "CREDITS_EXPIRED",
  "CREDITS_EXPIRING",
  "PLAN_CHANGED",
  "PERIOD_RENEWED",
  "BALANCE_LOW",
  "BALANCE_EXHAUSTED",
  "BALANCE_RECOVERED",
  "TEST_CLOCK_ADVANCED",
  "BALANCE_ALERT_SET",
  "CONCURRENCY_LIMIT_SET",
  "SPEND_LIMIT_SET",
  "SPEND_LIMIT_REMOVED",
  "SPEND_LIMIT_REACHED",
  "AUTO_TOP_UP_SET",
  "AUTO_TOP_UP_REQUESTED",
  "AUTO_TOP_UP_COMPLETED",
  "AUTO_TOP_UP_FAILED",
  "AUTO_TOP_UP_DISABLED",
];
