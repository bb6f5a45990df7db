import type { AccountBook } from "../domain/account-book.js";
import { allocationsJson } from "./rows.js";
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
    `update buckets b set granted = v.granted, remaining = v.remaining, held = v.held
       from (values ${valuesList(rows.length, 4, ["::uuid", "::bigint", "::bigint", "::bigint"])}) as v(bucket_id, granted, remaining, held)
      where b.account_id = ? and b.bucket_id = v.bucket_id`,
    [...rows.flatMap((b) => [b.id, b.granted, b.remaining, b.held]), book.accountId],
  );
}

async function insertReservations(q: Query, book: AccountBook): Promise<void> {
  const rows = [...book.newReservations].map((id) => book.reservation(id)!);
  if (rows.length === 0) return;
  await q(
    `insert into reservations (account_id, reservation_id, state, held_amount, captured_amount, released_amount,
       allocations, expires_at, created_at, settled_at, metadata, release_reason, release_detail)
     values ${valuesList(rows.length, 13, ["", "", "", "", "", "", "::jsonb", "", "", "", "::jsonb"])}`,
    rows.flatMap((r) => [
      r.accountId, r.id, r.status, r.heldAmount, r.capturedAmount, r.releasedAmount, allocationsJson(r),
      r.expiresAt, r.createdAt, r.settledAt, JSON.stringify(r.metadata), r.releaseReason, r.releaseDetail,
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
