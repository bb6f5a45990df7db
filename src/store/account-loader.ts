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

/**
 * The working set of a command: the subscription, the buckets with credits left (and the current
 * subscription bucket even when spent, so an upgrade can grow it), the overdue holds and, if
 * named, one reservation in any state.
 */
export async function loadBook(q: Query, accountId: string, head: Row, now: Date, reservationId: string | null): Promise<AccountBook> {
  const subscription = subscriptionFromRow(accountId, head);
  // Each branch is an index lookup (buckets_live, the primary keys, reservations_account_due);
  // an OR across them would scan every bucket or reservation the account ever had.
  const buckets = await q(
    `select * from buckets where account_id = ? and remaining > 0
     union all
     select * from buckets where account_id = ? and bucket_id = ?::uuid and remaining = 0`,
    [accountId, accountId, subscription?.currentBucketId ?? null],
  );
  const reservations = await q(
    `select * from reservations where account_id = ? and state = 'HELD' and expires_at <= ?
     union all
     select * from reservations where account_id = ? and reservation_id = ?::uuid`,
    [accountId, now, accountId, reservationId],
  );
  return new AccountBook(
    accountId,
    buckets.map(bucketFromRow),
    reservations.map(reservationFromRow),
    subscription,
    Number(head["clock_offset_ms"] ?? 0),
    Number(head["pricing_permille"] ?? 1000),
  );
}
