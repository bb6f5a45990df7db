import type { Bucket } from "./bucket.js";
import type { EntryKind } from "./ledger-entry.js";
import { currentlyHeld, type Reservation } from "./reservation.js";

/** The total of one kind of entry. */
export interface KindTotal {
  readonly kind: EntryKind;
  readonly total: bigint;
}

/** The total of one kind of entry for one bucket and reservation. */
export interface EntrySums extends KindTotal {
  readonly bucketId: string;
  readonly reservationId: string | null;
}

export interface Difference {
  readonly subject: string;
  readonly field: string;
  readonly stored: bigint;
  readonly fromEntries: bigint;
}

/** What reconciliation reads of a stored bucket. */
export type BucketAmounts = Pick<Bucket, "id" | "granted" | "remaining" | "held">;

/** What reconciliation reads of a stored reservation. */
export type ReservationAmounts = Pick<Reservation, "id" | "capturedAmount" | "releasedAmount" | "allocations">;

/** One total per kind of entry (each sum is read several times). */
function byKind(totals: readonly KindTotal[]): (...kinds: EntryKind[]) => bigint {
  const by = new Map<EntryKind, bigint>();
  for (const t of totals) by.set(t.kind, (by.get(t.kind) ?? 0n) + t.total);
  return (...kinds) => kinds.reduce((sum, k) => sum + (by.get(k) ?? 0n), 0n);
}

function differ(out: Difference[], subject: string, field: string, stored: bigint, fromEntries: bigint): void {
  if (stored !== fromEntries) out.push({ subject, field, stored, fromEntries });
}

/**
 * One bucket against the totals of every entry that names it (the effects listed in
 * ledger-entry.ts); `null`: entries name a bucket that is not stored.
 */
export function bucketDifferences(bucketId: string, bucket: BucketAmounts | null, totals: readonly KindTotal[]): Difference[] {
  const out: Difference[] = [];
  const subject = `bucket ${bucketId}`;
  if (bucket === null) {
    differ(out, subject, "exists", 0n, 1n);
    return out;
  }
  const sum = byKind(totals);
  differ(out, subject, "granted", bucket.granted, sum("GRANT", "ADJUST"));
  differ(out, subject, "remaining", bucket.remaining, sum("GRANT", "ADJUST") - sum("CAPTURE", "EXPIRE"));
  differ(out, subject, "held", bucket.held, sum("HOLD") - sum("RELEASE", "CAPTURE"));
  return out;
}

/**
 * One reservation against the totals of its entries, per bucket (each allocation is checked
 * against its own bucket's entries); `null`: entries name a reservation that is not stored.
 */
export function reservationDifferences(reservationId: string, reservation: ReservationAmounts | null, sums: readonly (KindTotal & { readonly bucketId: string })[]): Difference[] {
  const out: Difference[] = [];
  const subject = `reservation ${reservationId}`;
  if (reservation === null) {
    differ(out, subject, "exists", 0n, 1n);
    return out;
  }
  const sum = byKind(sums);
  differ(out, subject, "held", currentlyHeld(reservation), sum("HOLD") - sum("RELEASE", "CAPTURE"));
  differ(out, subject, "captured", reservation.capturedAmount, sum("CAPTURE"));
  differ(out, subject, "released", reservation.releasedAmount, sum("RELEASE"));
  for (const a of reservation.allocations) {
    const slot = byKind(sums.filter((s) => s.bucketId === a.bucketId));
    differ(out, `${subject} bucket ${a.bucketId}`, "held", a.amount, slot("HOLD") - slot("RELEASE", "CAPTURE"));
  }
  return out;
}

function group<T>(items: readonly T[], key: (item: T) => string | null): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    if (k === null) continue;
    const mine = out.get(k);
    if (mine) mine.push(item);
    else out.set(k, [item]);
  }
  return out;
}

/**
 * Recomputes every bucket and reservation from the ledger entries and returns each field that
 * differs from what is stored, and each bucket or reservation that entries name but that is not
 * stored. Empty means the stored state is exactly what the entries add up to. Linear in the
 * number of buckets, reservations and sums: each subject sees only its own sums.
 */
export function reconcileBook(buckets: readonly Bucket[], reservations: readonly Reservation[], sums: readonly EntrySums[]): Difference[] {
  const byBucket = group(sums, (s) => s.bucketId);
  const byReservation = group(sums, (s) => s.reservationId);
  const out: Difference[] = [];
  for (const b of buckets) out.push(...bucketDifferences(b.id, b, byBucket.get(b.id) ?? []));
  const bucketIds = new Set(buckets.map((b) => b.id));
  for (const id of byBucket.keys()) if (!bucketIds.has(id)) out.push(...bucketDifferences(id, null, []));
  for (const r of reservations) out.push(...reservationDifferences(r.id, r, byReservation.get(r.id) ?? []));
  const reservationIds = new Set(reservations.map((r) => r.id));
  for (const id of byReservation.keys()) if (!reservationIds.has(id)) out.push(...reservationDifferences(id, null, []));
  return out;
}
