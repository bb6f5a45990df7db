import { defineEntity, p } from "@mikro-orm/postgresql";

/**
 * Table schemas. Every table carries `account_id` in its primary key, so the schema can be
 * distributed by account (reservations and operation records lead theirs with their own id:
 * migration KeyOrder). Money-like columns are bigint and map to `bigint`.
 * The migrations in ./migrations are the source of the DDL; test/integration checks that
 * these schemas and the migrated database agree.
 */
export const AccountRow = defineEntity({
  name: "AccountRow",
  tableName: "accounts",
  properties: {
    accountId: p.text().primary(),
    createdAt: p.datetime().columnType("timestamptz"),
    clockOffsetMs: p.bigint(),
    pricingPermille: p.integer(),
    /** The number of the account's latest change record (migration AccountSequence). */
    sequence: p.bigint(),
    /** The account's own balance alert: a number of credits or a percent of its plan's allowance; both null: the default (migration BalanceAlerts). */
    alertThresholdCredits: p.bigint().nullable(),
    alertThresholdPercent: p.integer().nullable(),
    /** ARMED, LOW or EXHAUSTED (domain/balance-alert.ts). */
    alertState: p.text(),
    /** The auto top-up rule (store/auto-top-up-rows.ts); null: none (migration AutoTopUp). */
    autoTopUp: p.json<Record<string, unknown>>().nullable(),
    /** When the rule next acts with no call; null: nothing due. */
    autoTopUpDueAt: p.datetime().columnType("timestamptz").nullable(),
    /** The first UTC day whose usage_daily rows are not written yet (migration UsageDaysClosed; '-infinity': none written). */
    usageDaysOpenFrom: p.datetime().columnType("timestamptz"),
  },
});

export const BucketRow = defineEntity({
  name: "BucketRow",
  tableName: "buckets",
  properties: {
    accountId: p.text().primary(),
    bucketId: p.uuid().primary(),
    kind: p.text(),
    granted: p.bigint(),
    remaining: p.bigint(),
    held: p.bigint(),
    validFrom: p.datetime().columnType("timestamptz"),
    expiresAt: p.datetime().columnType("timestamptz").nullable(),
    sourceRef: p.text(),
    createdAt: p.datetime().columnType("timestamptz"),
    /** Its CREDITS_EXPIRING was told (migration BalanceAlerts). */
    expiryNoticed: p.boolean(),
    /** remaining > 0, generated: the predicate of buckets_live (migration BucketFlags). */
    live: p.boolean().generated("(remaining > 0) stored"),
    /** remaining > held, generated: the predicate of buckets_expiring and buckets_expiry_notice. */
    hasFree: p.boolean().generated("(remaining > held) stored"),
  },
});

export const ReservationRow = defineEntity({
  name: "ReservationRow",
  tableName: "reservations",
  properties: {
    accountId: p.text().primary(),
    reservationId: p.uuid().primary(),
    state: p.text(),
    heldAmount: p.bigint(),
    capturedAmount: p.bigint(),
    releasedAmount: p.bigint(),
    allocations: p.json<{ bucketId: string; amount: string }[]>(),
    expiresAt: p.datetime().columnType("timestamptz"),
    createdAt: p.datetime().columnType("timestamptz"),
    settledAt: p.datetime().columnType("timestamptz").nullable(),
    metadata: p.json<Record<string, string>>(),
    releaseReason: p.text().nullable(),
    releaseDetail: p.text(),
    pricing: p.json<Record<string, unknown>>().nullable(),
    /** The member the hold is for ("" for none; migration Members). */
    memberId: p.text(),
  },
});

export const LedgerEntryRow = defineEntity({
  name: "LedgerEntryRow",
  tableName: "ledger_entries",
  properties: {
    accountId: p.text().primary(),
    entryId: p.bigint().primary().autoincrement(),
    kind: p.text(),
    bucketId: p.uuid(),
    reservationId: p.uuid().nullable(),
    amount: p.bigint(),
    idempotencyKey: p.text().nullable(),
    caller: p.text(),
    metadata: p.json<Record<string, string>>(),
    createdAt: p.datetime().columnType("timestamptz"),
    /** The reservation's member ("" for none; migration Members). */
    memberId: p.text(),
  },
});

export const OperationRow = defineEntity({
  name: "OperationRow",
  tableName: "operations",
  properties: {
    accountId: p.text().primary(),
    idempotencyKey: p.text().primary(),
    method: p.text(),
    requestHash: p.blob(),
    response: p.blob(),
    createdAt: p.datetime().columnType("timestamptz"),
  },
});

export const PlanRow = defineEntity({
  name: "PlanRow",
  tableName: "plans",
  properties: {
    planId: p.text().primary(),
    version: p.integer().primary(),
    accountId: p.text().nullable(),
    name: p.text(),
    monthlyAllowance: p.bigint(),
    priceMinor: p.bigint(),
    currency: p.text(),
    billingInterval: p.text(),
    createdAt: p.datetime().columnType("timestamptz"),
  },
});

export const SubscriptionRow = defineEntity({
  name: "SubscriptionRow",
  tableName: "subscriptions",
  properties: {
    accountId: p.text().primary(),
    planId: p.text(),
    planVersion: p.integer(),
    plan: p.json<Record<string, unknown>>(),
    anchor: p.datetime().columnType("timestamptz"),
    grantedPeriod: p.integer(),
    grantedPeriodEnd: p.datetime().columnType("timestamptz"),
    currentBucketId: p.uuid().nullable(),
    scheduledPlan: p.json<Record<string, unknown>>().nullable(),
    scheduledEffectiveAt: p.datetime().columnType("timestamptz").nullable(),
    updatedAt: p.datetime().columnType("timestamptz"),
  },
});

export const AccountTopUpPackRow = defineEntity({
  name: "AccountTopUpPackRow",
  tableName: "account_top_up_packs",
  properties: {
    accountId: p.text().primary(),
    packId: p.text().primary(),
    credits: p.bigint(),
    priceMinor: p.bigint(),
    currency: p.text(),
    validityMonths: p.integer(),
  },
});

export const RateCardRow = defineEntity({
  name: "RateCardRow",
  tableName: "rate_cards",
  properties: {
    version: p.text().primary(),
    body: p.json<Record<string, unknown>>(),
    createdAt: p.datetime().columnType("timestamptz"),
  },
});

/** The outbox's write transactions and their feed order (migration EventOutbox, docs/events.md). */
export const EventBatchRow = defineEntity({
  name: "EventBatchRow",
  tableName: "event_batches",
  properties: {
    batchId: p.bigint().primary(),
    /** null until the sequencer numbers the committed batch (store/event-feed.ts). */
    position: p.bigint().nullable().unique(),
    eventCount: p.integer(),
    recordedAt: p.datetime().columnType("timestamptz"),
  },
});

/** One event of the outbox: written in the transaction of the change it tells. */
export const EventRow = defineEntity({
  name: "EventRow",
  tableName: "events",
  properties: {
    batchId: p.bigint().primary(),
    idx: p.integer().primary(),
    accountId: p.text(),
    accountSequence: p.bigint(),
    kind: p.text(),
    occurredAt: p.datetime().columnType("timestamptz"),
    /** The encoded proto Event with only its payload set (rpc/event-encoding.ts). */
    payload: p.blob(),
  },
});

/** The one row of feed state: the last position retention removed. */
export const EventFeedStateRow = defineEntity({
  name: "EventFeedStateRow",
  tableName: "event_feed_state",
  properties: {
    id: p.integer().primary(),
    prunedThrough: p.bigint(),
  },
});

/** The broker relay's cursor, per stream (migration EventRelay; store/relay-lease.ts). */
export const EventRelayCursorRow = defineEntity({
  name: "EventRelayCursorRow",
  tableName: "event_relay_cursors",
  properties: {
    stream: p.text().primary(),
    position: p.bigint(),
    /** null: after the whole batch at `position`. */
    idx: p.integer().nullable(),
    /** Events the broker acknowledged as new (not duplicates) through this cursor, for operators. */
    published: p.bigint(),
    /** Events the broker dropped as redeliveries of an event_id it already held. */
    duplicates: p.bigint(),
    updatedAt: p.datetime().columnType("timestamptz"),
  },
});

export const entities = [
  RateCardRow,
  AccountRow,
  BucketRow,
  ReservationRow,
  LedgerEntryRow,
  OperationRow,
  PlanRow,
  SubscriptionRow,
  AccountTopUpPackRow,
  EventBatchRow,
  EventRow,
  EventFeedStateRow,
  EventRelayCursorRow,
];
