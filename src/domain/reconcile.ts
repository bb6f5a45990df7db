import type { Bucket } from "./bucket.js";
import type { EntryKind } from "./ledger-entry.js";
import { currentlyHeld, type Reservation } from "./reservation.js";

/** The total of one kind of entry for one bucket and reservation. */
export interface EntrySums {
  readonly bucketId: string;
  readonly reservationId: string | null;
  readonly kind: EntryKind;
  readonly total: bigint;
}

export interface Difference {
  readonly subject: string;
  readonly field: string;
  readonly stored: bigint;
  readonly fromEntries: bigint;
}

function sum(sums: readonly EntrySums[], pick: (s: EntrySums) => boolean, kinds: readonly EntryKind[]): bigint {
  return sums.filter((s) => pick(s) && kinds.includes(s.kind)).reduce((t, s) => t + s.total, 0n);
}

/**
 * Recomputes every bucket and reservation from the ledger entries (the effects listed in
 * ledger-entry.ts) and returns each field that differs from what is stored. Empty means the
 * stored state is exactly what the entries add up to.
 */
export function reconcileBook(buckets: readonly Bucket[], reservations: readonly Reservation[], sums: readonly EntrySums[]): Difference[] {
  const out: Difference[] = [];
  const check = (subject: string, field: string, stored: bigint, fromEntries: bigint) => {
    if (stored !== fromEntries) out.push({ subject, field, stored, fromEntries });
  };
  for (const b of buckets) {
    const mine = (s: EntrySums) => s.bucketId === b.id;
    check(`bucket ${b.id}`, "granted", b.granted, sum(sums, mine, ["GRANT", "ADJUST"]));
    check(`bucket ${b.id}`, "remaining", b.remaining, sum(sums, mine, ["GRANT", "ADJUST"]) - sum(sums, mine, ["CAPTURE", "EXPIRE"]));
    check(`bucket ${b.id}`, "held", b.held, sum(sums, mine, ["HOLD"]) - sum(sums, mine, ["RELEASE", "CAPTURE"]));
  }
  const known = new Set(buckets.map((b) => b.id));
  for (const s of sums) if (!known.has(s.bucketId)) check(`bucket ${s.bucketId}`, "exists", 0n, 1n);
  for (const r of reservations) {
    const mine = (s: EntrySums) => s.reservationId === r.id;
    check(`reservation ${r.id}`, "held", currentlyHeld(r), sum(sums, mine, ["HOLD"]) - sum(sums, mine, ["RELEASE", "CAPTURE"]));
    check(`reservation ${r.id}`, "captured", r.capturedAmount, sum(sums, mine, ["CAPTURE"]));
    check(`reservation ${r.id}`, "released", r.releasedAmount, sum(sums, mine, ["RELEASE"]));
    for (const a of r.allocations) {
      const slot = (s: EntrySums) => s.reservationId === r.id && s.bucketId === a.bucketId;
      check(`reservation ${r.id} bucket ${a.bucketId}`, "held", a.amount, sum(sums, slot, ["HOLD"]) - sum(sums, slot, ["RELEASE", "CAPTURE"]));
    }
  }
  return out;
}
