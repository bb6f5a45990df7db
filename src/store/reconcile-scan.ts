import type pg from "pg";
import { type BucketAmounts, bucketDifferences, type Difference, type KindTotal, reservationDifferences, type ReservationAmounts } from "../domain/reconcile.js";
import type { EntryKind } from "../domain/ledger-entry.js";
import { inSnapshot, type Statement, type Transaction } from "./pg.js";
import { allocationsFromRow, type Row } from "./rows.js";
import { levelCheckSql } from "./usage-rollup.js";

/**
 * Reconcile in Postgres: the comparison runs where the entries are, and only what differs comes
 * back (normally nothing). Shipping every (reservation, bucket) sum to the server and comparing
 * there cost the server 0.7–3.5 s of CPU per Reconcile of 200,000 settled holds (row decoding,
 * BigInt parsing), all of it for rows that agree.
 *
 * In one REPEATABLE READ, READ ONLY snapshot (no lock a writer waits for):
 * - RECONCILE_SUSPECTS, one pass over the account's entries: the buckets and reservations whose
 *   entries may not add up to them. It selects; it does not report. Normally it returns nothing
 *   and Reconcile is done. Otherwise only the suspects are read in full:
 * - RECONCILE_BUCKETS and RECONCILE_RESERVATIONS: their entries summed exactly (per bucket; per
 *   reservation and bucket), with what is stored, for the domain's rules (bucketDifferences,
 *   reservationDifferences in src/domain/reconcile.ts) to decide and report.
 * The SQL restates those rules only to leave out what agrees; test/integration/reconcile-in-sql
 * .test.ts checks that each kind of difference is found and that nothing else comes back.
 */

/** Every kind of entry, once (a Record, so that a new kind cannot be left out). */
const KINDS = Object.keys({ GRANT: 0, HOLD: 0, CAPTURE: 0, RELEASE: 0, EXPIRE: 0, ADJUST: 0 } satisfies Record<EntryKind, 0>) as EntryKind[];

/** `sum(amount) filter (where kind = 'K') as "K"` for every kind: exact (bigint sums are numeric). */
const EXACT_SUMS = KINDS.map((k) => `sum(amount) filter (where kind = '${k}') as "${k}"`).join(", ");
const SUMS_AS_TEXT = (from: string) => KINDS.map((k) => `${from}."${k}"::text as "${k}"`).join(", ");

/**
 * 2^53: below it every integer is a float8, and so is every sum or difference of integers whose
 * absolute values add up to less than it.
 */
const FLOAT_EXACT = "9007199254740992";

/** A float8 total of the sums named, 0 for none. */
const f = (...names: string[]) => `(${names.map((n) => `coalesce(s.${n}, 0)`).join(" + ")})`;

/**
 * The buckets and reservations of an account whose entries may not add up to them, as
 * (`subject`, `id`) rows: one pass over the entries, summed per bucket and per reservation at
 * once (grouping sets, hash aggregates); the per-bucket sums joined to the account's buckets both
 * ways (stored buckets without entries; entries naming a bucket that is not stored), the
 * per-reservation sums to their reservations (there is no index on reservations by account: they
 * are reached through their entries, every hold having a HOLD entry). Normally none.
 *
 * The sums are float8, not bigint: a bigint sum is a numeric, allocated and converted for each of
 * ~200,000 groups, which doubled the statement's CPU (measured). A float8 sum is exact while the
 * absolute values of its terms add up to less than 2^53, which count × largest bounds; a bucket or
 * reservation past the bound is a suspect, whatever its sums. So a bucket left out agrees
 * exactly: granted = GRANT + ADJUST, remaining = granted − CAPTURE − EXPIRE, held = HOLD −
 * RELEASE − CAPTURE. So does a reservation left out: it is stored, its CAPTURE and RELEASE
 * entries add up to its captured and released amounts, and when it holds nothing (`allocations`
 * empty: every settled hold) HOLD − RELEASE − CAPTURE is 0. A reservation that still holds
 * credits is checked exactly, bucket by bucket: its share there (HOLD − RELEASE − CAPTURE of its
 * entries) against its allocation there; a bucket named twice in its allocations, or a share
 * without an allocation, makes it a suspect. With no open hold, that second pass over the
 * entries is skipped (the hash it would be joined to is empty).
 */
export const RECONCILE_SUSPECTS = `
  with sums as (
    select grouping(bucket_id) = 0 as of_bucket, bucket_id, reservation_id, count(*) as n,
      greatest(max(amount)::float8, -min(amount)::float8) as largest,
      sum(amount::float8) filter (where kind in ('GRANT', 'ADJUST')) as granted, sum(amount::float8) filter (where kind = 'HOLD') as hold,
      sum(amount::float8) filter (where kind = 'CAPTURE') as capture, sum(amount::float8) filter (where kind = 'RELEASE') as release,
      sum(amount::float8) filter (where kind = 'EXPIRE') as expire
    from ledger_entries where account_id = ? group by grouping sets ((bucket_id), (reservation_id))
  ),
  flagged as materialized (
    select reservation_id, suspect, allocations from (
      select s.reservation_id, r.allocations,
        r.reservation_id is null
        or s.n * s.largest >= ${FLOAT_EXACT}
        or r.captured_amount::float8 <> ${f("capture")}
        or r.released_amount::float8 <> ${f("release")}
        or (r.allocations = '[]' and ${f("hold")} - ${f("release", "capture")} <> 0) as suspect
      from sums s left join reservations r on r.reservation_id = s.reservation_id and r.account_id = ?
      where not s.of_bucket and s.reservation_id is not null) checked
    where suspect or allocations <> '[]'
  ),
  allocated as (
    select f.reservation_id, (a ->> 'bucketId')::uuid as bucket_id, sum((a ->> 'amount')::bigint) as amount, count(*) as n
    from flagged f cross join lateral jsonb_array_elements(f.allocations) a where not f.suspect group by 1, 2
  ),
  shares as (
    select reservation_id, bucket_id, coalesce(sum(amount) filter (where kind = 'HOLD'), 0) - coalesce(sum(amount) filter (where kind in ('RELEASE', 'CAPTURE')), 0) as held
    from ledger_entries where account_id = ? and reservation_id in (select reservation_id from allocated) group by reservation_id, bucket_id
  )
  select 'bucket' as subject, coalesce(b.bucket_id, s.bucket_id)::text as id
    from (select * from sums where of_bucket) s
    full join (select bucket_id, granted, remaining, held from buckets where account_id = ?) b on b.bucket_id = s.bucket_id
   where b.bucket_id is null or s.bucket_id is null
      or s.n * s.largest >= ${FLOAT_EXACT}
      or b.granted::float8 <> ${f("granted")}
      or b.remaining::float8 <> ${f("granted")} - ${f("capture", "expire")}
      or b.held::float8 <> ${f("hold")} - ${f("release", "capture")}
  union
  select 'reservation', reservation_id::text from flagged where suspect
  union
  select 'reservation', coalesce(a.reservation_id, s.reservation_id)::text
    from allocated a full join shares s on s.reservation_id = a.reservation_id and s.bucket_id = a.bucket_id
   where a.n > 1 or (a.amount is distinct from s.held and (a.amount is not null or s.held <> 0))`;

/** The suspect buckets, stored or not, each with the exact totals of its entries per kind. */
export const RECONCILE_BUCKETS = `
  select coalesce(b.bucket_id, t.bucket_id)::text as bucket_id, b.bucket_id is not null as stored,
    b.granted::text as granted, b.remaining::text as remaining, b.held::text as held, ${SUMS_AS_TEXT("t")}
  from (select bucket_id, ${EXACT_SUMS} from ledger_entries where account_id = ? and bucket_id = any(?::uuid[]) group by bucket_id) t
  full join (select bucket_id, granted, remaining, held from buckets where account_id = ? and bucket_id = any(?::uuid[])) b on b.bucket_id = t.bucket_id
  order by b.bucket_id is null, 1`;

/** The suspect reservations' entries summed exactly per (reservation, bucket), each with its reservation as stored. */
export const RECONCILE_RESERVATIONS = `
  select e.reservation_id::text as reservation_id, e.bucket_id::text as bucket_id, ${SUMS_AS_TEXT("e")},
    r.reservation_id is not null as stored, r.captured_amount::text as captured_amount, r.released_amount::text as released_amount, r.allocations
  from (select reservation_id, bucket_id, ${EXACT_SUMS} from ledger_entries where account_id = ? and reservation_id = any(?::uuid[]) group by reservation_id, bucket_id) e
  left join reservations r on r.reservation_id = e.reservation_id and r.account_id = ?
  order by e.reservation_id, e.bucket_id`;

/**
 * Settings for the snapshot's statements only (SET LOCAL; they end with the transaction):
 * - no JIT: compiling these statements cost Postgres about 1 s of CPU per Reconcile of 200,000
 *   holds, more than running them (measured);
 * - no parallel workers: Reconcile takes one core at most, the rest is the hot path's;
 * - work_mem for the sums per reservation to stay in memory (~50 MB of hash at 200,000 holds,
 *   with hash_mem_multiplier's 2×; a larger account spills to disk rather than failing).
 */
export const RECONCILE_SETTINGS: readonly Statement[] = [
  { sql: "set local jit = off" },
  { sql: "set local max_parallel_workers_per_gather = 0" },
  { sql: "set local work_mem = '32MB'" },
];

/**
 * Each spend limit's counter against the ledger: the CAPTURE entries of the scope's holds that
 * started at or after the counter's period start (domain/spend-limit.ts). The counter of a period
 * that has ended still agrees: a Commit after the end moves it to the new period first. The
 * captures are read once (materialized) whatever the number of limits, and only for an account
 * that has one.
 */
export const RECONCILE_SPEND = `
  with captures as materialized (
    select r.member_id, r.created_at, e.amount
      from ledger_entries e join reservations r on r.account_id = e.account_id and r.reservation_id = e.reservation_id
     where e.account_id = ? and e.kind = 'CAPTURE')
  select l.member_id, l.period, l.used::text as used,
    (select coalesce(sum(c.amount), 0) from captures c
      where c.created_at >= l.period_start and (l.member_id = '' or c.member_id = l.member_id))::text as from_entries
    from spend_limits l where l.account_id = ?
   order by l.member_id, l.period`;

/**
 * The usage rollup against the entries, per 15-minute slot (domain/usage.ts): consumed = CAPTURE,
 * restored = RELEASE, granted = GRANT + ADJUST, expired = EXPIRE; its hourly level against its
 * slots (per UTC hour, dimension and value), its daily level against its hourly one (per UTC day,
 * dimension and value, for the account's closed days: usage-rollup.ts CLOSE_USAGE_DAYS); and its
 * generations against the committed holds.
 * Only the slots (and figures) that differ come back.
 */
export const RECONCILE_USAGE = `
  with rolled as (
    select slot, sum(consumed) as consumed, sum(restored) as restored, sum(granted) as granted, sum(expired) as expired
      from usage_rollup where account_id = ? group by slot),
  entered as (
    select to_timestamp(floor(extract(epoch from created_at) / 900) * 900) as slot,
      coalesce(sum(amount) filter (where kind = 'CAPTURE'), 0) as consumed,
      coalesce(sum(amount) filter (where kind = 'RELEASE'), 0) as restored,
      coalesce(sum(amount) filter (where kind in ('GRANT', 'ADJUST')), 0) as granted,
      coalesce(sum(amount) filter (where kind = 'EXPIRE'), 0) as expired
      from ledger_entries where account_id = ? and kind <> 'HOLD' group by 1)
  select 'usage ' || to_char(coalesce(r.slot, e.slot) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"') as subject,
    f.field, f.stored::text as stored, f.from_entries::text as from_entries
    from rolled r full join entered e on e.slot = r.slot
    cross join lateral (values ('consumed', coalesce(r.consumed, 0), coalesce(e.consumed, 0)),
      ('restored', coalesce(r.restored, 0), coalesce(e.restored, 0)),
      ('granted', coalesce(r.granted, 0), coalesce(e.granted, 0)),
      ('expired', coalesce(r.expired, 0), coalesce(e.expired, 0))) as f(field, stored, from_entries)
   where f.stored <> f.from_entries
  union all
  ${levelCheckSql("hour", "usage hourly", 'YYYY-MM-DD"T"HH24"Z"')}
  union all
  ${levelCheckSql("day", "usage daily", "YYYY-MM-DD")}
  union all
  select 'usage generations', 'generations', s.stored::text, s.committed::text from (
    select (select coalesce(sum(generations), 0) from usage_rollup where account_id = ?) as stored,
      (select count(*) from reservations where account_id = ? and state = 'COMMITTED') as committed) s
   where s.stored <> s.committed
  order by 1, 2`;

function usageFrom(rows: readonly Row[]): Difference[] {
  return rows.map((row) => ({
    subject: row["subject"] as string,
    field: row["field"] as string,
    stored: BigInt(row["stored"] as string),
    fromEntries: BigInt(row["from_entries"] as string),
  }));
}

function spendFrom(rows: readonly Row[]): Difference[] {
  return rows.flatMap((row) => {
    const member = row["member_id"] as string;
    const subject = `spend limit ${member === "" ? "(account)" : member} ${row["period"] as string}`;
    const stored = BigInt(row["used"] as string);
    const fromEntries = BigInt(row["from_entries"] as string);
    return stored === fromEntries ? [] : [{ subject, field: "used", stored, fromEntries }];
  });
}

/** The totals of a row, by kind (null: none of that kind). */
function totalsOf(row: Row): KindTotal[] {
  const out: KindTotal[] = [];
  for (const kind of KINDS) {
    const sum = row[kind] as string | null;
    if (sum !== null) out.push({ kind, total: BigInt(sum) });
  }
  return out;
}

function bucketsFrom(rows: readonly Row[]): Difference[] {
  return rows.flatMap((row) => {
    const id = row["bucket_id"] as string;
    const stored: BucketAmounts | null = row["stored"]
      ? { id, granted: BigInt(row["granted"] as string), remaining: BigInt(row["remaining"] as string), held: BigInt(row["held"] as string) }
      : null;
    return bucketDifferences(id, stored, totalsOf(row));
  });
}

/** Rows of RECONCILE_RESERVATIONS (each reservation's rows together) → its differences. */
function reservationsFrom(rows: readonly Row[]): Difference[] {
  const out: Difference[] = [];
  for (let at = 0; at < rows.length; ) {
    const first = rows[at]!;
    const id = first["reservation_id"] as string;
    const stored: ReservationAmounts | null = first["stored"]
      ? { id, capturedAmount: BigInt(first["captured_amount"] as string), releasedAmount: BigInt(first["released_amount"] as string), allocations: allocationsFromRow(first) }
      : null;
    const sums: (KindTotal & { bucketId: string })[] = [];
    for (; at < rows.length && rows[at]!["reservation_id"] === id; at++) {
      const bucketId = rows[at]!["bucket_id"] as string;
      for (const t of totalsOf(rows[at]!)) sums.push({ ...t, bucketId });
    }
    out.push(...reservationDifferences(id, stored, sums));
  }
  return out;
}

/**
 * Reconciles one account in one snapshot (REPEATABLE READ, READ ONLY: no lock that a writer
 * waits for): the suspects in one round trip, then, if there are any, their exact totals in a
 * second. Postgres does the linear work (one pass over the entries per statement, hash
 * aggregates and joins); the server handles only what differs, so the event loop stays free.
 * Differences: buckets (stored ones first, then those only entries name), then reservations,
 * each in id order, then spend-limit counters, then the usage rollup's slots.
 */
export function reconcileAccount(pool: pg.Pool, accountId: string): Promise<Difference[]> {
  return inSnapshot(pool, (tx) => reconcileIn(tx, accountId));
}

async function reconcileIn(tx: Transaction, accountId: string): Promise<Difference[]> {
  const [suspects, spendRows, usageRows] = (
    await tx.run([
      ...RECONCILE_SETTINGS,
      { sql: RECONCILE_SUSPECTS, params: [accountId, accountId, accountId, accountId] },
      { sql: RECONCILE_SPEND, params: [accountId, accountId] },
      { sql: RECONCILE_USAGE, params: Array<string>(10).fill(accountId) },
    ])
  ).slice(RECONCILE_SETTINGS.length);
  const spend = [...spendFrom(spendRows!), ...usageFrom(usageRows!)];
  const ids = (subject: string) => suspects!.filter((row) => row["subject"] === subject).map((row) => row["id"] as string);
  const [buckets, reservations] = [ids("bucket"), ids("reservation")];
  if (buckets.length + reservations.length === 0) return spend;
  const [bucketRows, reservationRows] = await tx.run([
    { sql: RECONCILE_BUCKETS, params: [accountId, buckets, accountId, buckets] },
    { sql: RECONCILE_RESERVATIONS, params: [accountId, reservations, accountId] },
  ]);
  return [...bucketsFrom(bucketRows!), ...reservationsFrom(reservationRows!), ...spend];
}
