import { setImmediate } from "node:timers/promises";
import type pg from "pg";
import { type BucketAmounts, bucketDifferences, type Difference, type KindTotal, reservationDifferences, type ReservationAmounts } from "../domain/reconcile.js";
import type { EntryKind } from "../domain/ledger-entry.js";
import { inSnapshot, type Statement, type Transaction } from "./pg.js";
import { allocationsFromRow, type Row } from "./rows.js";

/**
 * Rows a cursor hands over per round trip, and rows checked in one go on the event loop. The
 * next chunk is fetched while this one is checked, slice by slice, with the event loop free
 * between slices (a slice is 3–4 ms of CPU here, measured), so the server keeps answering other
 * calls while a large account is reconciled, and holds no more than two chunks of it in memory.
 * (Each round trip also costs a socket write, which on a busy machine costs about a time slice.)
 */
export const RECONCILE_CHUNK_ROWS = 2000;
const SLICE_ROWS = 1000;

/** Every kind of entry, once (a Record, so that a new kind cannot be left out). */
const KINDS = Object.keys({ GRANT: 0, HOLD: 0, CAPTURE: 0, RELEASE: 0, EXPIRE: 0, ADJUST: 0 } satisfies Record<EntryKind, 0>) as EntryKind[];

/**
 * The account's entries summed per (reservation, bucket), one column per kind (null: none of
 * that kind), each with its reservation's stored amounts: one pass over the entries, in
 * Postgres. Entries without a reservation (grants, adjustments, expiries) come first, one row
 * per bucket; then the rows of each reservation together. Reservations have no index by account
 * alone, so they are reached through their entries (every hold has a HOLD entry) and their key.
 */
export const RECONCILE_ENTRIES = `
  select e.reservation_id::text as reservation_id, e.bucket_id::text as bucket_id, ${KINDS.map((k) => `e."${k}"::text as "${k}"`).join(", ")},
    r.reservation_id is not null as stored, r.captured_amount::text as captured_amount, r.released_amount::text as released_amount, r.allocations
  from (
    select reservation_id, bucket_id, ${KINDS.map((k) => `sum(amount) filter (where kind = '${k}') as "${k}"`).join(", ")}
      from ledger_entries where account_id = ? group by reservation_id, bucket_id) e
  left join reservations r on r.reservation_id = e.reservation_id and r.account_id = ?
  order by e.reservation_id nulls first`;

/** The account's buckets, as stored. */
export const RECONCILE_BUCKETS = `
  select bucket_id::text as bucket_id, granted::text as granted, remaining::text as remaining, held::text as held from buckets where account_id = ?`;

/** A cursor reads its whole result: planned for that rather than for its first rows. */
const CURSOR_SETTINGS: Statement = { sql: "set local cursor_tuple_fraction = 1" };

type BucketTotal = KindTotal & { readonly bucketId: string };

/** The totals of a row of RECONCILE_ENTRIES, by kind. */
function totalsOf(row: Row, bucketId: string): BucketTotal[] {
  const out: BucketTotal[] = [];
  for (const kind of KINDS) {
    const total = row[kind] as string | null;
    if (total !== null) out.push({ bucketId, kind, total: BigInt(total) });
  }
  return out;
}

/** One reservation's rows of RECONCILE_ENTRIES as they arrive (they come together). */
interface ReservationRows {
  readonly id: string;
  readonly stored: ReservationAmounts | null;
  readonly sums: BucketTotal[];
}

/**
 * Reconciles one account in one snapshot (REPEATABLE READ, READ ONLY: no lock that a writer
 * waits for): its entries, summed in Postgres, are read in chunks through a cursor, each
 * reservation checked as its rows arrive and each bucket's totals added up; then its buckets.
 * Time is linear in the account's entries; memory holds one chunk and one total per bucket.
 */
export function reconcileAccount(pool: pg.Pool, accountId: string): Promise<Difference[]> {
  return inSnapshot(pool, async (tx) => {
    const reservations: Difference[] = [];
    // Per bucket, a running total per kind: one small map per bucket, however many entries.
    const bucketTotals = new Map<string, Map<EntryKind, bigint>>();
    let open: ReservationRows | null = null;
    const close = () => {
      if (open) reservations.push(...reservationDifferences(open.id, open.stored, open.sums));
      open = null;
    };
    await eachChunk(tx, "reconcile_entries", RECONCILE_ENTRIES, [accountId, accountId], (rows) => {
      for (const row of rows) {
        const bucketId = row["bucket_id"] as string;
        const totals = totalsOf(row, bucketId);
        let mine = bucketTotals.get(bucketId);
        if (!mine) bucketTotals.set(bucketId, (mine = new Map()));
        for (const t of totals) mine.set(t.kind, (mine.get(t.kind) ?? 0n) + t.total);
        const reservationId = row["reservation_id"] as string | null;
        if (reservationId === null) continue;
        if (open?.id !== reservationId) {
          close();
          const stored: ReservationAmounts | null = row["stored"]
            ? { id: reservationId, capturedAmount: BigInt(row["captured_amount"] as string), releasedAmount: BigInt(row["released_amount"] as string), allocations: allocationsFromRow(row) }
            : null;
          open = { id: reservationId, stored, sums: [] };
        }
        open.sums.push(...totals);
      }
    });
    close();
    const buckets: Difference[] = [];
    await eachChunk(tx, "reconcile_buckets", RECONCILE_BUCKETS, [accountId], (rows) => {
      for (const row of rows) {
        const id = row["bucket_id"] as string;
        const stored: BucketAmounts = { id, granted: BigInt(row["granted"] as string), remaining: BigInt(row["remaining"] as string), held: BigInt(row["held"] as string) };
        const totals = [...(bucketTotals.get(id) ?? [])].map(([kind, total]) => ({ kind, total }));
        buckets.push(...bucketDifferences(id, stored, totals));
        bucketTotals.delete(id);
      }
    });
    // Buckets that entries name and that are not stored.
    for (const id of bucketTotals.keys()) buckets.push(...bucketDifferences(id, null, []));
    return [...buckets, ...reservations];
  });
}

/**
 * Reads `sql` through a cursor, RECONCILE_CHUNK_ROWS rows per round trip, handing them to
 * `each` SLICE_ROWS at a time, one event-loop turn each.
 */
async function eachChunk(tx: Transaction, cursor: string, sql: string, params: readonly unknown[], each: (rows: Row[]) => void): Promise<void> {
  const fetch: Statement = { sql: `fetch forward ${RECONCILE_CHUNK_ROWS} from ${cursor}` };
  const opened = await tx.run([CURSOR_SETTINGS, { sql: `declare ${cursor} no scroll cursor for ${sql}`, params }, fetch]);
  let rows = opened[2]!;
  for (;;) {
    // The next chunk is on its way while this one is checked (the cursor closes with the transaction).
    const next = rows.length < RECONCILE_CHUNK_ROWS ? null : tx.run([fetch]);
    try {
      for (let at = 0; at < rows.length; at += SLICE_ROWS) {
        if (at > 0) await setImmediate();
        each(rows.slice(at, at + SLICE_ROWS));
      }
    } catch (err) {
      await next?.catch(() => {}); // the transaction rolls back once the fetch in flight is back
      throw err;
    }
    if (next === null) return;
    rows = (await next)[0]!;
  }
}
