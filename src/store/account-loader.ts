import type { LoadedAccount, RecordedOperation } from "../app/ports.js";
import { AccountBook } from "../domain/account-book.js";
import type { Statement } from "./pg.js";
import { autoTopUpFromRow } from "./auto-top-up-rows.js";
import { alertFromRow, bucketFromRow, concurrencyFromRow, reservationFromRow, type Row, spendFromRow, subscriptionFromRow } from "./rows.js";

export type LockMode = "wait" | "skip-locked";

/**
 * Locks the accounts' rows in account order (so two batches that share accounts never
 * deadlock); its rows are the ids that exist (and, with skip-locked, were free: skip-locked never
 * waits, so only a "wait" statement can take part in a deadlock).
 */
export function lockStatement(accountIds: readonly string[], mode: LockMode): Statement {
  return mode === "wait"
    ? { sql: `select account_id from accounts where account_id = any(?::text[]) order by account_id for update`, params: [accountIds], name: "lock_accounts" }
    : { sql: `select account_id from accounts where account_id = any(?::text[]) order by account_id for update skip locked`, params: [accountIds], name: "lock_accounts_skip" };
}

/** What to load for one account. */
export interface BookRequest {
  readonly accountId: string;
  /** Server time (plus any test-clock step about to be taken): holds overdue by then are loaded. */
  readonly now: Date;
  /** Reservations to load in any state (Commit, Release, Extend). */
  readonly reservationIds: readonly string[];
  /** Idempotency keys whose operation records to load. */
  readonly idempotencyKeys: readonly string[];
  /**
   * Load the team controls (caps, spend limits, running holds per member) even if the account has
   * no cap or limit yet (SetConcurrencyLimit, SetSpendLimit, RemoveSpendLimit).
   */
  readonly controls?: boolean;
  /** Epochs of the auto top-up requests an answer (CompleteAutoTopUp, FailAutoTopUp) names. */
  readonly autoTopUpEpochs?: readonly number[];
}

/** A loaded, locked account, as the apply stage takes it. */
export type LoadedBook = LoadedAccount;

const BUCKET_COLUMNS = `account_id, bucket_id, kind, granted::text as granted, remaining::text as remaining, held::text as held,
  valid_from, expires_at, source_ref, created_at, expiry_noticed`;
const RESERVATION_COLUMNS = `account_id, reservation_id, state, held_amount::text as held_amount, captured_amount::text as captured_amount,
  released_amount::text as released_amount, allocations, expires_at, created_at, settled_at, metadata, release_reason, release_detail, pricing, member_id`;

/**
 * The working sets of several accounts in ONE statement (one snapshot, one round trip): per
 * account its head (test-clock offset, pricing, change sequence, subscription), its earliest open hold's expiry,
 * the buckets with credits left (and the current subscription bucket even when spent, so an
 * upgrade can grow it), the holds
 * overdue by the account's own time, the named reservations in any state (a hold both overdue and named comes
 * twice; the book keeps one), and the operation
 * records of the named keys, its auto top-up rule (a column of its row) and the requests an answer names, and for an account with concurrency or spend limits (or about to set one) the
 * limits and its running holds summed per member (the reservations_account_due range: open holds
 * only). Each branch is an index lookup (buckets_live, the primary keys,
 * reservations_account_due); named reservations and keys are probed one (account, id) pair at a
 * time (LATERAL), never by scanning an account's history, which for a hot account is long. Amounts travel as text, so bigints stay exact. Accounts that do
 * not exist are absent from the result.
 */
const LOAD_BOOKS = `
  select a.account_id, a.clock_offset_ms, a.pricing_permille, a.sequence::text as sequence,
    a.alert_threshold_credits::text as alert_threshold_credits, a.alert_threshold_percent, a.alert_state, a.auto_top_up,
    (select min(expires_at) from reservations where account_id = a.account_id and state = 'HELD') as next_hold_expiry,
    s.plan, s.anchor, s.granted_period, s.current_bucket_id, s.scheduled_plan, s.scheduled_effective_at,
    (select coalesce(json_agg(b), '[]'::json) from (
        select ${BUCKET_COLUMNS} from buckets where account_id = a.account_id and live
        union all
        select ${BUCKET_COLUMNS} from buckets where account_id = a.account_id and bucket_id = s.current_bucket_id and remaining = 0) b) as buckets,
    (select coalesce(json_agg(r), '[]'::json) from (
        select ${RESERVATION_COLUMNS} from reservations
         where account_id = a.account_id and state = 'HELD' and expires_at <= u.at + a.clock_offset_ms * interval '1 millisecond'
        union all
        select ${RESERVATION_COLUMNS} from reservations
         where account_id = a.account_id and reservation_id = any(array(
           select n.reservation_id from unnest(?::text[], ?::uuid[]) as n(account_id, reservation_id) where n.account_id = a.account_id))) r) as reservations,
    (select json_agg(json_build_object('key', o.idempotency_key, 'hash', encode(o.request_hash, 'hex'), 'response', encode(o.response, 'base64')))
       from operations o
      where o.account_id = a.account_id and o.idempotency_key = any(array(
        select k.idempotency_key from unnest(?::text[], ?::text[]) as k(account_id, idempotency_key) where k.account_id = a.account_id))) as operations,
    (select json_agg(json_build_object('requestId', t.request_id, 'epoch', t.epoch, 'credits', t.credits::text, 'pack', t.pack,
        'requestedAt', t.requested_at, 'expiresAt', t.expires_at, 'outcome', t.outcome, 'paymentReference', t.payment_reference,
        'bucketId', t.bucket_id, 'failureReason', t.failure_reason, 'answeredAt', t.answered_at))
       from auto_top_up_requests t
      where t.account_id = a.account_id and t.epoch = any(array(
        select n.epoch from unnest(?::text[], ?::int[]) as n(account_id, epoch) where n.account_id = a.account_id))) as auto_top_up_requests,
    cl.limits as concurrency_limits,
    sl.limits as spend_limits,
    cl.limits is not null or sl.limits is not null or a.account_id = any(?::text[]) as controls_tracked,
    -- CASE: an account without a limit never runs the sum (a sub-select in a WHEN branch not taken is not executed).
    case when cl.limits is not null or sl.limits is not null or a.account_id = any(?::text[]) then
      (select json_agg(json_build_object('member', g.member_id, 'open', g.n, 'held', g.held::text)) from (
          select member_id, count(*) as n, sum(held_amount) as held from reservations
           where account_id = a.account_id and state = 'HELD'
           group by member_id) g)
    end as running_holds
  from unnest(?::text[], ?::timestamptz[]) as u(account_id, at)
  join accounts a on a.account_id = u.account_id
  cross join lateral (
    select json_agg(json_build_object('member', c.member_id, 'open', c.max_open_holds, 'held', c.max_held_credits::text)) as limits
      from concurrency_limits c where c.account_id = a.account_id) cl
  cross join lateral (
    select json_agg(json_build_object('member', l.member_id, 'period', l.period, 'max', l.max_credits::text, 'mode', l.mode,
        'zone', l.time_zone, 'start', l.period_start, 'used', l.used::text, 'reached', l.reached)) as limits
      from spend_limits l where l.account_id = a.account_id) sl
  left join subscriptions s on s.account_id = a.account_id`;

/** The statement of loadBooks; run it after the lock statement (in the same pipeline is fine: it takes a new snapshot). */
export function loadStatement(requests: readonly BookRequest[]): Statement {
  const tracked = requests.filter((r) => r.controls === true).map((r) => r.accountId);
  return {
    sql: LOAD_BOOKS,
    // Named reservations and keys travel as (account, id) pairs: each account probes only its own.
    params: [
      requests.flatMap((r) => r.reservationIds.map(() => r.accountId)),
      requests.flatMap((r) => r.reservationIds),
      requests.flatMap((r) => r.idempotencyKeys.map(() => r.accountId)),
      requests.flatMap((r) => r.idempotencyKeys),
      requests.flatMap((r) => (r.autoTopUpEpochs ?? []).map(() => r.accountId)),
      requests.flatMap((r) => r.autoTopUpEpochs ?? []),
      tracked,
      tracked,
      requests.map((r) => r.accountId),
      requests.map((r) => r.now),
    ],
    name: "load_books",
  };
}

/** When the account's earliest open hold falls due (a row of loadStatement). */
export function nextHoldExpiry(row: Row): Date | null {
  const value = row["next_hold_expiry"] as Date | null | undefined;
  return value ?? null;
}

/** The rows of loadStatement by account: a reader builds its own book from one with bookFromRow. */
export function rowsByAccount(rows: readonly Row[]): Map<string, Row> {
  return new Map(rows.map((row) => [row["account_id"] as string, row]));
}

/** The books (and operation records) of loadStatement's rows. */
export function booksFromRows(rows: readonly Row[]): Map<string, LoadedBook> {
  const out = new Map<string, LoadedBook>();
  for (const [accountId, row] of rowsByAccount(rows)) {
    const operations = new Map<string, RecordedOperation>();
    for (const op of (row["operations"] as { key: string; hash: string; response: string }[] | null) ?? []) {
      operations.set(op.key, { requestHash: Buffer.from(op.hash, "hex"), response: Buffer.from(op.response, "base64") });
    }
    out.set(accountId, { book: bookFromRow(accountId, row), nextHoldExpiry: nextHoldExpiry(row), operations });
  }
  return out;
}

export function bookFromRow(accountId: string, row: Row): AccountBook {
  return new AccountBook(
    accountId,
    (row["buckets"] as Row[]).map(bucketFromRow),
    (row["reservations"] as Row[]).map(reservationFromRow),
    subscriptionFromRow(accountId, row),
    Number(row["clock_offset_ms"] ?? 0),
    Number(row["pricing_permille"] ?? 1000),
    BigInt((row["sequence"] as string | undefined) ?? "0"),
    alertFromRow(row),
    concurrencyFromRow(row),
    spendFromRow(row),
    autoTopUpFromRow(row),
  );
}
