import { AccountBook } from "../domain/account-book.js";
import { bucketFromRow, reservationFromRow, type Row, subscriptionFromRow } from "./rows.js";
import type { Query } from "./sql.js";

export type LockMode = "none" | "wait" | "skip-locked";

const LOCKS: Readonly<Record<LockMode, string>> = {
  none: "",
  wait: "for update of a",
  "skip-locked": "for update of a skip locked",
};

/**
 * The account row (locked as asked) with its test-clock offset and subscription, in one round
 * trip; null when the account does not exist (or, with skip-locked, is locked elsewhere).
 */
export async function loadAccountHead(q: Query, accountId: string, lock: LockMode): Promise<Row | null> {
  const rows = await q(
    `select a.clock_offset_ms, a.pricing_permille, s.plan, s.anchor, s.granted_period, s.current_bucket_id, s.scheduled_plan, s.scheduled_effective_at
       from accounts a left join subscriptions s on s.account_id = a.account_id
      where a.account_id = ? ${LOCKS[lock]}`,
    [accountId],
  );
  return rows[0] ?? null;
}

/** The account's own clock: server time plus its test-clock offset. */
export function accountTime(head: Row, serverNow: Date): Date {
  return new Date(serverNow.getTime() + Number(head["clock_offset_ms"] ?? 0));
}

const BUCKET_COLUMNS = `account_id, bucket_id, kind, granted::text as granted, remaining::text as remaining, held::text as held,
  valid_from, expires_at, source_ref, created_at`;
const RESERVATION_COLUMNS = `account_id, reservation_id, state, held_amount::text as held_amount, captured_amount::text as captured_amount,
  released_amount::text as released_amount, allocations, expires_at, created_at, settled_at, metadata, release_reason, release_detail, pricing`;

/** A stored operation record: the idempotency backstop. */
export interface StoredOperation {
  readonly requestHash: Buffer;
  readonly response: Buffer;
}

/**
 * The working set of a command, in one round trip after the account lock: the operation record
 * of the call's idempotency key (if any), the buckets with credits left (and the current
 * subscription bucket even when spent, so an upgrade can grow it), the overdue holds and, if
 * named, one reservation in any state. Each branch is an index lookup (buckets_live, the primary
 * keys, reservations_account_due); an OR across them would scan everything the account ever had.
 * Amounts travel as text, so bigints stay exact.
 */
export async function loadBook(
  q: Query,
  accountId: string,
  head: Row,
  now: Date,
  reservationId: string | null,
  idempotencyKey: string | null = null,
): Promise<{ book: AccountBook; operation: StoredOperation | null }> {
  const subscription = subscriptionFromRow(accountId, head);
  const rows = await q(
    `select
       (select coalesce(json_agg(b), '[]'::json) from (
          select ${BUCKET_COLUMNS} from buckets where account_id = ? and remaining > 0
          union all
          select ${BUCKET_COLUMNS} from buckets where account_id = ? and bucket_id = ?::uuid and remaining = 0) b) as buckets,
       (select coalesce(json_agg(r), '[]'::json) from (
          select ${RESERVATION_COLUMNS} from reservations where account_id = ? and state = 'HELD' and expires_at <= ?
          union all
          select ${RESERVATION_COLUMNS} from reservations where account_id = ? and reservation_id = ?::uuid) r) as reservations,
       (select json_build_object('hash', encode(request_hash, 'hex'), 'response', encode(response, 'base64'))
          from operations where account_id = ? and idempotency_key = ?) as operation`,
    [accountId, accountId, subscription?.currentBucketId ?? null, accountId, now, accountId, reservationId, accountId, idempotencyKey],
  );
  const row = rows[0]!;
  const op = row["operation"] as { hash: string; response: string } | null;
  const book = new AccountBook(
    accountId,
    (row["buckets"] as Row[]).map(bucketFromRow),
    (row["reservations"] as Row[]).map(reservationFromRow),
    subscription,
    Number(head["clock_offset_ms"] ?? 0),
    Number(head["pricing_permille"] ?? 1000),
  );
  return { book, operation: op ? { requestHash: Buffer.from(op.hash, "hex"), response: Buffer.from(op.response, "base64") } : null };
}
