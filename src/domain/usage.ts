import type { AccountBook } from "./account-book.js";
import type { EntryKind } from "./ledger-entry.js";
import type { Reservation } from "./reservation.js";

/**
 * Where credits went (issue "Usage for the dashboard"): every ledger movement counted into a
 * rollup row per account, 15-minute slot (by the account's clock) and dimensions, written in the
 * same transaction as the entries. Every time zone in use today is offset from UTC by a multiple
 * of 15 minutes, so any hour, day or month bucket of any zone is a whole number of slots and a
 * series is a sum of rows, never a scan of the ledger.
 */
export const SLOT_MS = 15 * 60_000;

export type UsageDimension = "model" | "kind" | "member" | "caller";
export const USAGE_DIMENSIONS: readonly UsageDimension[] = ["model", "kind", "member", "caller"];

export interface UsageAmounts {
  consumed: bigint;
  restored: bigint;
  granted: bigint;
  expired: bigint;
  generations: bigint;
}

/** One rollup row's key and what this write adds to it. */
export interface UsageDelta extends UsageAmounts {
  readonly accountId: string;
  readonly slot: Date;
  readonly model: string;
  readonly kind: string;
  readonly member: string;
  readonly caller: string;
}

/** One row of a usage series: its bucket (an index into the series' boundaries), the group's values, the sums. */
export interface UsageSeriesRow extends Readonly<UsageAmounts> {
  readonly bucket: number;
  readonly group: Partial<Record<UsageDimension, string>>;
}

export function slotOf(at: Date): Date {
  return new Date(Math.floor(at.getTime() / SLOT_MS) * SLOT_MS);
}

/** The dimensions of a hold's movements: its priced spec, else its labels, else "unknown". */
function holdDimensions(r: Reservation): { model: string; kind: string; member: string } {
  return {
    model: r.pricing?.spec.model ?? r.metadata["model"] ?? "unknown",
    kind: r.pricing?.spec.kind ?? "unknown",
    member: r.memberId || r.metadata["member_id"] || "unknown",
  };
}

const METRIC: Partial<Record<EntryKind, keyof UsageAmounts>> = {
  CAPTURE: "consumed",
  RELEASE: "restored",
  GRANT: "granted",
  ADJUST: "granted",
  EXPIRE: "expired",
};

/**
 * What a written book adds to the rollup: its entries (HOLD moves nothing between the figures),
 * and one generation per hold it committed, in the slot and group of that hold's last entry.
 * Grants and expiries belong to a bucket, not a hold: kind is the bucket's kind, model and member
 * are "". `ctx(i)` is entry i's caller and time as persisted.
 */
export function usageDeltas(book: AccountBook, ctx: (i: number) => { caller: string; now: Date }): UsageDelta[] {
  const committed = new Set<string>();
  for (const e of book.events) if (e.kind === "HOLD_COMMITTED") committed.add(e.reservation.id);
  const lastEntry = new Map<string, number>();
  book.entries.forEach((e, i) => {
    // A Commit always captures or returns something (a hold is at least 1 credit).
    if (e.reservationId && committed.has(e.reservationId) && (e.kind === "CAPTURE" || e.kind === "RELEASE")) lastEntry.set(e.reservationId, i);
  });
  const rows = new Map<string, UsageDelta>();
  book.entries.forEach((e, i) => {
    const metric = METRIC[e.kind];
    const generation = e.reservationId !== null && lastEntry.get(e.reservationId) === i;
    if (!metric && !generation) return;
    const { caller, now } = ctx(i);
    const reservation = e.kind !== "GRANT" && e.kind !== "ADJUST" && e.kind !== "EXPIRE" && e.reservationId ? book.reservation(e.reservationId) : undefined;
    const dims = reservation ? holdDimensions(reservation) : { model: "", kind: book.bucket(e.bucketId).kind, member: "" };
    const slot = slotOf(now);
    const key = `${slot.getTime()}\u0000${dims.model}\u0000${dims.kind}\u0000${dims.member}\u0000${caller}`;
    let row = rows.get(key);
    if (!row) {
      row = { accountId: book.accountId, slot, ...dims, caller, consumed: 0n, restored: 0n, granted: 0n, expired: 0n, generations: 0n };
      rows.set(key, row);
    }
    if (metric) row[metric] += e.amount;
    if (generation) row.generations += 1n;
  });
  return [...rows.values()];
}

const HOUR_MS = 3_600_000;

/** A row of the hourly level: one dimension's value in one UTC hour. */
export interface HourlyDelta extends UsageAmounts {
  readonly accountId: string;
  readonly hour: Date;
  readonly dim: UsageDimension;
  readonly value: string;
}

/**
 * The hourly level's share of some rollup additions: each slot's sums go to its UTC hour once per
 * dimension, so a series grouped by one dimension (or none: the sum over kinds) reads about a
 * 4 × (other dimensions' combinations) fewer rows than the slots.
 */
export function hourlyDeltas(deltas: readonly UsageDelta[]): HourlyDelta[] {
  const rows = new Map<string, HourlyDelta>();
  for (const d of deltas) {
    const hour = new Date(Math.floor(d.slot.getTime() / HOUR_MS) * HOUR_MS);
    for (const dim of USAGE_DIMENSIONS) {
      const value = d[dim];
      const key = `${d.accountId}\u0000${hour.getTime()}\u0000${dim}\u0000${value}`;
      let row = rows.get(key);
      if (!row) {
        row = { accountId: d.accountId, hour, dim, value, consumed: 0n, restored: 0n, granted: 0n, expired: 0n, generations: 0n };
        rows.set(key, row);
      }
      row.consumed += d.consumed;
      row.restored += d.restored;
      row.granted += d.granted;
      row.expired += d.expired;
      row.generations += d.generations;
    }
  }
  return [...rows.values()];
}
