import type { AccountBook } from "../domain/account-book.js";
import { allowancePeriod } from "../domain/periods.js";
import { allocationsJson, planToJson, pricingJson } from "./rows.js";
import { type Query, valuesList } from "./sql.js";

export interface CommandContext {
  readonly caller: string;
  readonly idempotencyKey: string | null;
  readonly now: Date;
}

/**
 * Writes what a command changed in the book: new and changed buckets, new and changed
 * reservations, and the ledger entries — each kind in one statement.
 */
export async function persistBook(q: Query, book: AccountBook, ctx: CommandContext): Promise<void> {
  await insertBuckets(q, book);
  await updateBuckets(q, book);
  await insertReservations(q, book);
  await updateReservations(q, book);
  await insertEntries(q, book, ctx);
  await saveSubscription(q, book, ctx);
  if (book.clockChanged) {
    await q(`update accounts set clock_offset_ms = ? where account_id = ?`, [book.clockOffsetMs, book.accountId]);
  }
}

async function saveSubscription(q: Query, book: AccountBook, ctx: CommandContext): Promise<void> {
  const s = book.subscription;
  if (!s || !book.subscriptionChanged) return;
  const grantedEnd = allowancePeriod(s.anchor, s.grantedPeriod).end;
  await q(
    `insert into subscriptions (account_id, plan_id, plan_version, plan, anchor, granted_period, granted_period_end,
       current_bucket_id, scheduled_plan, scheduled_effective_at, updated_at)
     values (?, ?, ?, ?::jsonb, ?, ?, ?, ?::uuid, ?::jsonb, ?, ?)
     on conflict (account_id) do update set plan_id = excluded.plan_id, plan_version = excluded.plan_version,
       plan = excluded.plan, anchor = excluded.anchor, granted_period = excluded.granted_period,
       granted_period_end = excluded.granted_period_end, current_bucket_id = excluded.current_bucket_id,
       scheduled_plan = excluded.scheduled_plan, scheduled_effective_at = excluded.scheduled_effective_at,
       updated_at = excluded.updated_at`,
    [
      book.accountId, s.plan.planId, s.plan.version, planToJson(s.plan), s.anchor, s.grantedPeriod, grantedEnd,
      s.currentBucketId, s.scheduled ? planToJson(s.scheduled.plan) : null, s.scheduled?.effectiveAt ?? null, ctx.now,
    ],
  );
}

async function insertBuckets(q: Query, book: AccountBook): Promise<void> {
  const rows = [...book.newBuckets].map((id) => book.bucket(id));
  if (rows.length === 0) return;
  await q(
    `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
     values ${valuesList(rows.length, 10)}`,
    rows.flatMap((b) => [b.accountId, b.id, b.kind, b.granted, b.remaining, b.held, b.validFrom, b.expiresAt, b.sourceRef, b.createdAt]),
  );
}

async function updateBuckets(q: Query, book: AccountBook): Promise<void> {
  const rows = [...book.changedBuckets].filter((id) => !book.newBuckets.has(id)).map((id) => book.bucket(id));
  if (rows.length === 0) return;
  await q(
    `update buckets b set granted = v.granted, remaining = v.remaining, held = v.held, expires_at = v.expires_at
       from (values ${valuesList(rows.length, 5, ["::uuid", "::bigint", "::bigint", "::bigint", "::timestamptz"])})
         as v(bucket_id, granted, remaining, held, expires_at)
      where b.account_id = ? and b.bucket_id = v.bucket_id`,
    [...rows.flatMap((b) => [b.id, b.granted, b.remaining, b.held, b.expiresAt]), book.accountId],
  );
}

async function insertReservations(q: Query, book: AccountBook): Promise<void> {
  const rows = [...book.newReservations].map((id) => book.reservation(id)!);
  if (rows.length === 0) return;
  await q(
    `insert into reservations (account_id, reservation_id, state, held_amount, captured_amount, released_amount,
       allocations, expires_at, created_at, settled_at, metadata, release_reason, release_detail, pricing)
     values ${valuesList(rows.length, 14, ["", "", "", "", "", "", "::jsonb", "", "", "", "::jsonb", "", "", "::jsonb"])}`,
    rows.flatMap((r) => [
      r.accountId, r.id, r.status, r.heldAmount, r.capturedAmount, r.releasedAmount, allocationsJson(r),
      r.expiresAt, r.createdAt, r.settledAt, JSON.stringify(r.metadata), r.releaseReason, r.releaseDetail, pricingJson(r),
    ]),
  );
}

async function updateReservations(q: Query, book: AccountBook): Promise<void> {
  const rows = [...book.changedReservations].filter((id) => !book.newReservations.has(id)).map((id) => book.reservation(id)!);
  for (const r of rows) {
    await q(
      `update reservations set state = ?, captured_amount = ?, released_amount = ?, allocations = ?::jsonb,
         expires_at = ?, settled_at = ?, release_reason = ?, release_detail = ?
       where account_id = ? and reservation_id = ?`,
      [r.status, r.capturedAmount, r.releasedAmount, allocationsJson(r), r.expiresAt, r.settledAt, r.releaseReason, r.releaseDetail, r.accountId, r.id],
    );
  }
}

async function insertEntries(q: Query, book: AccountBook, ctx: CommandContext): Promise<void> {
  if (book.entries.length === 0) return;
  await q(
    `insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, idempotency_key, caller, metadata, created_at)
     values ${valuesList(book.entries.length, 9, ["", "", "::uuid", "::uuid", "::bigint", "", "", "::jsonb"])}`,
    book.entries.flatMap((e) => [
      book.accountId, e.kind, e.bucketId, e.reservationId, e.amount,
      e.automatic ? null : ctx.idempotencyKey, e.automatic ? "system" : ctx.caller,
      JSON.stringify(e.metadata), ctx.now,
    ]),
  );
}
