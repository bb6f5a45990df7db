import type { AccountBook } from "../domain/account-book.js";
import { allowancePeriod } from "../domain/periods.js";
import { allocationsJson, planToJson, pricingJson } from "./rows.js";
import { type Query, valuesList } from "./sql.js";

export interface CommandContext {
  readonly caller: string;
  readonly idempotencyKey: string | null;
  readonly now: Date;
}

/** One data-modifying statement (without RETURNING) and its parameters. */
export interface Statement {
  readonly sql: string;
  readonly params: readonly unknown[];
}

/**
 * Writes what a command changed in the book — new and changed buckets and reservations, the
 * ledger entries, the subscription, the test clock — plus `extra` (the operation record), as ONE
 * statement of data-modifying CTEs: one round trip whatever the command did. (Each CTE touches
 * different rows, so their shared snapshot is no concern.)
 */
export async function persistBook(q: Query, book: AccountBook, ctx: CommandContext, extra: readonly Statement[] = []): Promise<void> {
  const parts = [
    insertBuckets(book),
    updateBuckets(book),
    insertReservations(book),
    updateReservations(book),
    insertEntries(book, ctx),
    saveSubscription(book, ctx),
    book.clockChanged ? { sql: `update accounts set clock_offset_ms = ? where account_id = ?`, params: [book.clockOffsetMs, book.accountId] } : null,
    ...extra,
  ].filter((p): p is Statement => p !== null);
  if (parts.length === 0) return;
  const sql = `with ${parts.map((p, i) => `w${i} as (${p.sql} returning 1)`).join(",\n")} select 1`;
  await q(sql, parts.flatMap((p) => p.params));
}

function saveSubscription(book: AccountBook, ctx: CommandContext): Statement | null {
  const s = book.subscription;
  if (!s || !book.subscriptionChanged) return null;
  const grantedEnd = allowancePeriod(s.anchor, s.grantedPeriod).end;
  return {
    sql: `insert into subscriptions (account_id, plan_id, plan_version, plan, anchor, granted_period, granted_period_end,
       current_bucket_id, scheduled_plan, scheduled_effective_at, updated_at)
     values (?, ?, ?, ?::jsonb, ?, ?, ?, ?::uuid, ?::jsonb, ?, ?)
     on conflict (account_id) do update set plan_id = excluded.plan_id, plan_version = excluded.plan_version,
       plan = excluded.plan, anchor = excluded.anchor, granted_period = excluded.granted_period,
       granted_period_end = excluded.granted_period_end, current_bucket_id = excluded.current_bucket_id,
       scheduled_plan = excluded.scheduled_plan, scheduled_effective_at = excluded.scheduled_effective_at,
       updated_at = excluded.updated_at`,
    params: [
      book.accountId, s.plan.planId, s.plan.version, planToJson(s.plan), s.anchor, s.grantedPeriod, grantedEnd,
      s.currentBucketId, s.scheduled ? planToJson(s.scheduled.plan) : null, s.scheduled?.effectiveAt ?? null, ctx.now,
    ],
  };
}

function insertBuckets(book: AccountBook): Statement | null {
  const rows = [...book.newBuckets].map((id) => book.bucket(id));
  if (rows.length === 0) return null;
  return {
    sql: `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
     values ${valuesList(rows.length, 10, ["", "::uuid", "", "::bigint", "::bigint", "::bigint", "::timestamptz", "::timestamptz", "", "::timestamptz"])}`,
    params: rows.flatMap((b) => [b.accountId, b.id, b.kind, b.granted, b.remaining, b.held, b.validFrom, b.expiresAt, b.sourceRef, b.createdAt]),
  };
}

function updateBuckets(book: AccountBook): Statement | null {
  const rows = [...book.changedBuckets].filter((id) => !book.newBuckets.has(id)).map((id) => book.bucket(id));
  if (rows.length === 0) return null;
  return {
    sql: `update buckets b set granted = v.granted, remaining = v.remaining, held = v.held, expires_at = v.expires_at
       from (values ${valuesList(rows.length, 5, ["::uuid", "::bigint", "::bigint", "::bigint", "::timestamptz"])})
         as v(bucket_id, granted, remaining, held, expires_at)
      where b.account_id = ? and b.bucket_id = v.bucket_id`,
    params: [...rows.flatMap((b) => [b.id, b.granted, b.remaining, b.held, b.expiresAt]), book.accountId],
  };
}

function insertReservations(book: AccountBook): Statement | null {
  const rows = [...book.newReservations].map((id) => book.reservation(id)!);
  if (rows.length === 0) return null;
  return {
    sql: `insert into reservations (account_id, reservation_id, state, held_amount, captured_amount, released_amount,
       allocations, expires_at, created_at, settled_at, metadata, release_reason, release_detail, pricing)
     values ${valuesList(rows.length, 14, ["", "::uuid", "", "::bigint", "::bigint", "::bigint", "::jsonb", "::timestamptz", "::timestamptz", "::timestamptz", "::jsonb", "::text", "", "::jsonb"])}`,
    params: rows.flatMap((r) => [
      r.accountId, r.id, r.status, r.heldAmount, r.capturedAmount, r.releasedAmount, allocationsJson(r),
      r.expiresAt, r.createdAt, r.settledAt, JSON.stringify(r.metadata), r.releaseReason, r.releaseDetail, pricingJson(r),
    ]),
  };
}

function updateReservations(book: AccountBook): Statement | null {
  const rows = [...book.changedReservations].filter((id) => !book.newReservations.has(id)).map((id) => book.reservation(id)!);
  if (rows.length === 0) return null;
  const casts = ["::uuid", "::text", "::bigint", "::bigint", "::jsonb", "::timestamptz", "::timestamptz", "::text", "::text"];
  return {
    sql: `update reservations r set state = v.state, captured_amount = v.captured_amount, released_amount = v.released_amount,
         allocations = v.allocations, expires_at = v.expires_at, settled_at = v.settled_at,
         release_reason = v.release_reason, release_detail = v.release_detail
       from (values ${valuesList(rows.length, 9, casts)})
         as v(reservation_id, state, captured_amount, released_amount, allocations, expires_at, settled_at, release_reason, release_detail)
      where r.account_id = ? and r.reservation_id = v.reservation_id`,
    params: [
      ...rows.flatMap((r) => [r.id, r.status, r.capturedAmount, r.releasedAmount, allocationsJson(r), r.expiresAt, r.settledAt, r.releaseReason, r.releaseDetail]),
      book.accountId,
    ],
  };
}

function insertEntries(book: AccountBook, ctx: CommandContext): Statement | null {
  if (book.entries.length === 0) return null;
  return {
    sql: `insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, idempotency_key, caller, metadata, created_at)
     values ${valuesList(book.entries.length, 9, ["", "", "::uuid", "::uuid", "::bigint", "::text", "", "::jsonb", "::timestamptz"])}`,
    params: book.entries.flatMap((e) => [
      book.accountId, e.kind, e.bucketId, e.reservationId, e.amount,
      e.automatic ? null : ctx.idempotencyKey, e.automatic ? "system" : ctx.caller,
      JSON.stringify(e.metadata), ctx.now,
    ]),
  };
}
