import type { BookWrite, OperationRecord } from "../app/ports.js";
import { levelAdditionsSql } from "./usage-rollup.js";
import { dayOf } from "../domain/usage.js";
import { allowancePeriod } from "../domain/periods.js";
import { CHANGES_CHANNEL, changePayloads } from "./change-feed.js";
import { invariant } from "../domain/errors.js";
import type { Statement } from "./pg.js";
export type { BookWrite, CommandContext, OperationRecord } from "../app/ports.js";
import { allocationsJson, planToJson, pricingJson } from "./rows.js";
import { autoTopUpDueAt } from "../domain/auto-top-up.js";
import { requestJson, ruleJson } from "./auto-top-up-rows.js";

/** Column arrays of one multi-row write: `unnest` turns them into rows. */
function columns<T>(rows: readonly T[], pick: (row: T) => readonly unknown[], width: number): unknown[][] {
  const out: unknown[][] = Array.from({ length: width }, () => []);
  for (const row of rows) pick(row).forEach((v, i) => out[i]!.push(v));
  return out;
}

/**
 * Every write of a batch in ONE statement of data-modifying CTEs: new and changed buckets
 * and reservations, ledger entries, subscriptions, account heads (test clock, change sequence, balance alert, auto top-up rule, a usage day reopened),
 * auto top-up requests made or answered,
 * concurrency and spend limits set (or removed), the usage rollup's additions, operation records. Rows travel as
 * column arrays through `unnest`, so the text never changes with the number of rows. The statement
 * holds only the parts the batch has rows for (its shape, which names it): Postgres opens the
 * tables and indexes of every part on every execution, even one with no rows (with all 17 parts
 * in, executor start-up was a fifth of the write backends' CPU at one client). A batch of holds
 * or of commits has a handful of shapes, so each connection parses and plans each once (a prepared statement). Each CTE
 * touches different rows, so their shared snapshot is no concern. The
 * batch's events (the outbox, docs/events.md) go in the same statement: one event_batches row,
 * whose id is drawn here, after every account lock of the transaction is held. Last, it
 * notifies CHANGES_CHANNEL of the accounts whose balance may have changed (delivered at COMMIT).
 */
const PARTS = {
  new_buckets: `
  new_buckets as (
    insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at, expiry_noticed)
    select * from unnest(?::text[], ?::uuid[], ?::text[], ?::bigint[], ?::bigint[], ?::bigint[], ?::timestamptz[], ?::timestamptz[], ?::text[], ?::timestamptz[], ?::boolean[])
    returning 1)`,
  changed_buckets: `
  changed_buckets as (
    update buckets b set granted = v.granted, remaining = v.remaining, held = v.held, expires_at = v.expires_at, expiry_noticed = v.expiry_noticed
      from unnest(?::text[], ?::uuid[], ?::bigint[], ?::bigint[], ?::bigint[], ?::timestamptz[], ?::boolean[])
        as v(account_id, bucket_id, granted, remaining, held, expires_at, expiry_noticed)
     where b.account_id = v.account_id and b.bucket_id = v.bucket_id
    returning 1)`,
  new_reservations: `
  new_reservations as (
    insert into reservations (account_id, reservation_id, state, held_amount, captured_amount, released_amount,
      allocations, expires_at, created_at, settled_at, metadata, release_reason, release_detail, pricing, member_id)
    select * from unnest(?::text[], ?::uuid[], ?::text[], ?::bigint[], ?::bigint[], ?::bigint[],
      ?::jsonb[], ?::timestamptz[], ?::timestamptz[], ?::timestamptz[], ?::jsonb[], ?::text[], ?::text[], ?::jsonb[], ?::text[])
    returning 1)`,
  changed_reservations: `
  changed_reservations as (
    update reservations r set state = v.state, captured_amount = v.captured_amount, released_amount = v.released_amount,
        allocations = v.allocations, expires_at = v.expires_at, settled_at = v.settled_at,
        release_reason = v.release_reason, release_detail = v.release_detail
      from unnest(?::text[], ?::uuid[], ?::text[], ?::bigint[], ?::bigint[], ?::jsonb[], ?::timestamptz[], ?::timestamptz[], ?::text[], ?::text[])
        as v(account_id, reservation_id, state, captured_amount, released_amount, allocations, expires_at, settled_at, release_reason, release_detail)
     where r.account_id = v.account_id and r.reservation_id = v.reservation_id
    returning 1)`,
  new_entries: `
  new_entries as (
    insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, idempotency_key, caller, metadata, created_at, member_id)
    select * from unnest(?::text[], ?::text[], ?::uuid[], ?::uuid[], ?::bigint[], ?::text[], ?::text[], ?::jsonb[], ?::timestamptz[], ?::text[])
    returning 1)`,
  subscriptions_saved: `
  subscriptions_saved as (
    insert into subscriptions (account_id, plan_id, plan_version, plan, anchor, granted_period, granted_period_end,
      current_bucket_id, scheduled_plan, scheduled_effective_at, updated_at)
    select * from unnest(?::text[], ?::text[], ?::int[], ?::jsonb[], ?::timestamptz[], ?::int[], ?::timestamptz[],
      ?::uuid[], ?::jsonb[], ?::timestamptz[], ?::timestamptz[])
    on conflict (account_id) do update set plan_id = excluded.plan_id, plan_version = excluded.plan_version,
      plan = excluded.plan, anchor = excluded.anchor, granted_period = excluded.granted_period,
      granted_period_end = excluded.granted_period_end, current_bucket_id = excluded.current_bucket_id,
      scheduled_plan = excluded.scheduled_plan, scheduled_effective_at = excluded.scheduled_effective_at,
      updated_at = excluded.updated_at
    returning 1)`,
  heads: `
  heads as (
    update accounts a set clock_offset_ms = v.offset_ms, sequence = v.sequence,
        alert_threshold_credits = v.alert_credits, alert_threshold_percent = v.alert_percent, alert_state = v.alert_state,
        auto_top_up = v.auto_top_up, auto_top_up_due_at = v.auto_top_up_due_at,
        usage_days_open_from = least(a.usage_days_open_from, v.usage_day)
      from unnest(?::text[], ?::bigint[], ?::bigint[], ?::bigint[], ?::int[], ?::text[], ?::jsonb[], ?::timestamptz[], ?::timestamptz[])
        as v(account_id, offset_ms, sequence, alert_credits, alert_percent, alert_state, auto_top_up, auto_top_up_due_at, usage_day)
     where a.account_id = v.account_id
    returning 1)`,
  auto_top_up_requests_saved: `
  auto_top_up_requests_saved as (
    insert into auto_top_up_requests (account_id, epoch, request_id, credits, pack, requested_at, expires_at, outcome,
      payment_reference, bucket_id, failure_reason, answered_at)
    select * from unnest(?::text[], ?::int[], ?::text[], ?::bigint[], ?::jsonb[], ?::timestamptz[], ?::timestamptz[], ?::text[],
      ?::text[], ?::uuid[], ?::text[], ?::timestamptz[])
    on conflict (account_id, epoch) do update set outcome = excluded.outcome, payment_reference = excluded.payment_reference,
      bucket_id = excluded.bucket_id, failure_reason = excluded.failure_reason, answered_at = excluded.answered_at
    returning 1)`,
  concurrency_saved: `
  concurrency_saved as (
    insert into concurrency_limits (account_id, member_id, max_open_holds, max_held_credits, updated_at)
    select * from unnest(?::text[], ?::text[], ?::int[], ?::bigint[], ?::timestamptz[])
    on conflict (account_id, member_id) do update set max_open_holds = excluded.max_open_holds,
      max_held_credits = excluded.max_held_credits, updated_at = excluded.updated_at
    returning 1)`,
  spend_saved: `
  spend_saved as (
    insert into spend_limits (account_id, member_id, period, max_credits, mode, time_zone, period_start, used, reached, updated_at)
    select * from unnest(?::text[], ?::text[], ?::text[], ?::bigint[], ?::text[], ?::text[], ?::timestamptz[], ?::bigint[], ?::boolean[], ?::timestamptz[])
    on conflict (account_id, member_id, period) do update set max_credits = excluded.max_credits, mode = excluded.mode,
      time_zone = excluded.time_zone, period_start = excluded.period_start, used = excluded.used, reached = excluded.reached,
      updated_at = excluded.updated_at
    returning 1)`,
  spend_removed: `
  spend_removed as (
    delete from spend_limits l using unnest(?::text[], ?::text[], ?::text[]) as v(account_id, member_id, period)
     where l.account_id = v.account_id and l.member_id = v.member_id and l.period = v.period
    returning 1)`,
  usage_added: `
  usage_slots as (
    select * from unnest(?::text[], ?::timestamptz[], ?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::bigint[], ?::bigint[], ?::bigint[])
      as v(account_id, slot, model, kind, member_id, caller, consumed, restored, granted, expired, generations)),
  usage_added as (
    insert into usage_rollup as u (account_id, slot, model, kind, member_id, caller, consumed, restored, granted, expired, generations)
    select * from usage_slots
    on conflict (account_id, slot, model, kind, member_id, caller) do update set consumed = u.consumed + excluded.consumed,
      restored = u.restored + excluded.restored, granted = u.granted + excluded.granted, expired = u.expired + excluded.expired,
      generations = u.generations + excluded.generations
    returning 1),${levelAdditionsSql("usage_slots")}`,
  new_operations: `
  new_operations as (
    insert into operations (account_id, idempotency_key, method, request_hash, response, created_at)
    select * from unnest(?::text[], ?::text[], ?::text[], ?::bytea[], ?::bytea[], ?::timestamptz[])
    returning 1)`,
  new_batch: `
  new_batch as (
    insert into event_batches (batch_id, event_count, recorded_at)
    select nextval('event_batch_ids'), n, now() from (select ?::int as n) c where n > 0
    returning batch_id)`,
  new_events: `
  new_events as (
    insert into events (batch_id, idx, account_id, account_sequence, kind, occurred_at, payload)
    select b.batch_id, v.ord - 1, v.account_id, v.account_sequence, v.kind, v.occurred_at, v.payload
      from new_batch b, unnest(?::text[], ?::bigint[], ?::text[], ?::timestamptz[], ?::bytea[])
        with ordinality as v(account_id, account_sequence, kind, occurred_at, payload, ord)
    returning 1)`,
} as const;

type Part = keyof typeof PARTS;
const PART_NAMES = Object.keys(PARTS) as Part[];

/** The statement of one shape (the parts with rows, a bit each in PART_NAMES' order) and its placeholder count, made once per shape. */
const statements = new Map<number, { sql: string; placeholders: number }>();

function shapedStatement(shape: number): { sql: string; placeholders: number } {
  let statement = statements.get(shape);
  if (statement === undefined) {
    const ctes = PART_NAMES.filter((_, i) => shape & (1 << i)).map((part) => PARTS[part]);
    const sql = `\n  with\n${ctes.join(",\n")}\n  select pg_notify('${CHANGES_CHANNEL}', ids) from unnest(?::text[]) as ids`;
    statement = { sql, placeholders: sql.split("?").length - 1 };
    statements.set(shape, statement);
  }
  return statement;
}

/** The accounts a write changes anything of (what their readers may have cached). */
export function changedAccounts(writes: readonly BookWrite[]): Set<string> {
  const out = new Set<string>();
  for (const { book } of writes) {
    const changed =
      book.entries.length > 0 || book.newBuckets.size > 0 || book.changedBuckets.size > 0 || book.newReservations.size > 0 ||
      book.changedReservations.size > 0 || book.subscriptionChanged || book.clockChanged || book.alertChanged || book.autoTopUp?.changed === true ||
      (book.concurrency?.changed.size ?? 0) > 0 || (book.spend?.changed.size ?? 0) > 0 || (book.spend?.removed.size ?? 0) > 0;
    if (changed) out.add(book.accountId);
  }
  return out;
}

/** The statement that writes what a batch of commands changed; null when nothing did. */
export function persistStatement(writes: readonly BookWrite[], operations: readonly OperationRecord[] = []): Statement | null {
  const books = writes.map((w) => w.book);
  const newBuckets = books.flatMap((book) => [...book.newBuckets].map((id) => book.bucket(id)));
  const changedBuckets = books.flatMap((book) => [...book.changedBuckets].filter((id) => !book.newBuckets.has(id)).map((id) => book.bucket(id)));
  const newReservations = books.flatMap((book) => [...book.newReservations].map((id) => book.reservation(id)!));
  const changedReservations = books.flatMap((book) =>
    [...book.changedReservations].filter((id) => !book.newReservations.has(id)).map((id) => book.reservation(id)!),
  );
  const entries = writes.flatMap(({ book, contexts }) => book.entries.map((entry, i) => ({ accountId: book.accountId, entry, ctx: contexts[i]! })));
  const subscriptions = writes.filter((w) => w.book.subscription && w.book.subscriptionChanged);
  // Every book that changed took a new change sequence (apply.ts); its test clock travels along (unchanged or not: the book holds the locked row's value).
  // An auto top-up rule may change with no change record (a request expired, a month began): its head is written all the same.
  const heads = books.filter((b) => b.clockChanged || b.changeCount > 0 || b.autoTopUp?.changed === true);
  for (const b of heads) if (b.changeCount > 0) invariant(b.sequence > b.loadedSequence, `account ${b.accountId} changed without a change record`);
  const requests = books.flatMap((book) => [...(book.autoTopUp?.changedRequests ?? [])].map((epoch) => ({ book, request: book.autoTopUp!.requests.get(epoch)! })));
  const events = writes.flatMap(({ book, events }) => events.map((event) => ({ accountId: book.accountId, event })));
  const limits = writes.flatMap(({ book, now }) => [...(book.concurrency?.changed ?? [])].map((member) => ({ book, now, limit: book.concurrency!.limits.get(member)! })));
  const spendSaved = writes.flatMap(({ book, now }) => [...(book.spend?.changed ?? [])].map((key) => ({ book, now, limit: book.spend!.limits.get(key)! })));
  const spendRemoved = books.flatMap((book) => [...(book.spend?.removed.values() ?? [])].map((limit) => ({ book, limit })));
  const usage = writes.flatMap((w) => w.usage ?? []);
  // The first UTC day of each account's usage rows: a day the sweeper has closed already (a clock
  // behind the closer's) is reopened by the account's head, `least` with its first open day
  // (store/usage-rollup.ts CLOSE_USAGE_DAYS writes it again); every other write leaves it as it is.
  const usageDays = new Map<string, Date>();
  for (const u of usage) {
    const day = dayOf(u.slot);
    const seen = usageDays.get(u.accountId);
    if (seen === undefined || day < seen) usageDays.set(u.accountId, day);
  }
  const headIds = new Set(heads.map((b) => b.accountId));
  for (const id of usageDays.keys()) invariant(headIds.has(id), `account ${id} added usage without a head`);
  // Each part's rows, as its column arrays; a part without rows stays out of the statement.
  const rows: Record<Part, [number, () => unknown[]]> = {
    new_buckets: [newBuckets.length, () => columns(newBuckets, (b) => [b.accountId, b.id, b.kind, b.granted, b.remaining, b.held, b.validFrom, b.expiresAt, b.sourceRef, b.createdAt, b.expiryNoticed === true], 11)],
    changed_buckets: [changedBuckets.length, () => columns(changedBuckets, (b) => [b.accountId, b.id, b.granted, b.remaining, b.held, b.expiresAt, b.expiryNoticed === true], 7)],
    new_reservations: [
      newReservations.length,
      () =>
        columns(
          newReservations,
          (r) => [
            r.accountId, r.id, r.status, r.heldAmount, r.capturedAmount, r.releasedAmount, allocationsJson(r),
            r.expiresAt, r.createdAt, r.settledAt, JSON.stringify(r.metadata), r.releaseReason, r.releaseDetail, pricingJson(r), r.memberId,
          ],
          15,
        ),
    ],
    changed_reservations: [
      changedReservations.length,
      () =>
        columns(
          changedReservations,
          (r) => [r.accountId, r.id, r.status, r.capturedAmount, r.releasedAmount, allocationsJson(r), r.expiresAt, r.settledAt, r.releaseReason, r.releaseDetail],
          10,
        ),
    ],
    new_entries: [
      entries.length,
      () =>
        columns(
          entries,
          ({ accountId, entry: e, ctx }) => [
            accountId, e.kind, e.bucketId, e.reservationId, e.amount,
            e.automatic ? null : ctx.idempotencyKey, e.automatic ? "system" : ctx.caller, JSON.stringify(e.metadata), ctx.now, e.memberId,
          ],
          10,
        ),
    ],
    subscriptions_saved: [
      subscriptions.length,
      () =>
        columns(
          subscriptions,
          ({ book, now }) => {
            const s = book.subscription!;
            return [
              book.accountId, s.plan.planId, s.plan.version, planToJson(s.plan), s.anchor, s.grantedPeriod, allowancePeriod(s.anchor, s.grantedPeriod).end,
              s.currentBucketId, s.scheduled ? planToJson(s.scheduled.plan) : null, s.scheduled?.effectiveAt ?? null, now,
            ];
          },
          11,
        ),
    ],
    heads: [
      heads.length,
      () =>
        columns(heads, (b) => {
          const t = b.alert.threshold;
          const rule = b.autoTopUp?.rule;
          return [
            b.accountId, b.clockOffsetMs, b.sequence, t?.kind === "credits" ? t.credits : null, t?.kind === "percent" ? t.percent : null, b.alert.state,
            ruleJson(b.autoTopUp), rule ? autoTopUpDueAt(rule) : null, usageDays.get(b.accountId) ?? null,
          ];
        }, 9),
    ],
    auto_top_up_requests_saved: [
      requests.length,
      () =>
        columns(
          requests,
          ({ book, request: r }) => [
            book.accountId, r.epoch, r.requestId, r.credits, r.pack ? JSON.stringify(requestJson(r).pack) : null, r.requestedAt, r.expiresAt, r.outcome,
            r.paymentReference, r.bucketId, r.failureReason, r.answeredAt,
          ],
          12,
        ),
    ],
    concurrency_saved: [limits.length, () => columns(limits, ({ book, now, limit }) => [book.accountId, limit.memberId, limit.maxOpenHolds, limit.maxHeldCredits, now], 5)],
    spend_saved: [
      spendSaved.length,
      () =>
        columns(
          spendSaved,
          ({ book, now, limit: l }) => [book.accountId, l.memberId, l.period, l.maxCredits, l.mode, l.timeZone, l.periodStart, l.used, l.reached, now],
          10,
        ),
    ],
    spend_removed: [spendRemoved.length, () => columns(spendRemoved, ({ book, limit }) => [book.accountId, limit.memberId, limit.period], 3)],
    usage_added: [usage.length, () => columns(usage, (u) => [u.accountId, u.slot, u.model, u.kind, u.member, u.caller, u.consumed, u.restored, u.granted, u.expired, u.generations], 11)],
    new_operations: [operations.length, () => columns(operations, (o) => [o.accountId, o.key, o.method, o.requestHash, Buffer.from(o.response), o.createdAt], 6)],
    new_batch: [events.length, () => [events.length]],
    new_events: [
      events.length,
      () => columns(events, ({ accountId, event: e }) => [accountId, e.sequence, e.kind, e.occurredAt, Buffer.from(e.payload.buffer, e.payload.byteOffset, e.payload.byteLength)], 5),
    ],
  };
  let shape = 0;
  const params: unknown[] = [];
  PART_NAMES.forEach((part, i) => {
    const [count, values] = rows[part];
    if (count === 0) return;
    shape |= 1 << i;
    params.push(...values());
  });
  if (shape === 0) return null;
  params.push(changePayloads(changedAccounts(writes)));
  const { sql, placeholders } = shapedStatement(shape);
  // A part whose columns and placeholders disagree would shift every later part's values: refuse it here.
  invariant(placeholders === params.length, `persist statement of shape ${shape}: ${placeholders} placeholders, ${params.length} values`);
  return { sql, params, name: `persist_books_${shape.toString(36)}` };
}
