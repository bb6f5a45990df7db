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
const DAY_MS = 24 * HOUR_MS;

/** The coarser levels of the rollup: UTC hours (usage_hourly) and UTC days (usage_daily). */
export type UsageLevel = "hour" | "day";
export const LEVEL_MS: Readonly<Record<UsageLevel, number>> = { hour: HOUR_MS, day: DAY_MS };

const HALF_HOUR_MS = HOUR_MS / 2;
const HALF_HOURS_A_DAY = DAY_MS / HALF_HOUR_MS;

/**
 * Marks inside a level's span (ms from its start): an hour's half hour; every half hour of a day
 * (00:30 … 23:30 UTC). A row also keeps the figures before each mark (its prefixes: written by the
 * hour's upserts, store/usage-rollup.ts levelAdditionsSql, and by the day's close,
 * CLOSE_USAGE_DAYS), so a range that starts or ends on a mark takes the difference of two prefixes
 * of one row instead of the finer rows below it (domain levelPlan, store leveledStatement). A
 * write never touches a closed day's row (it reopens the day instead), so the day's 47 marks cost
 * the write path nothing.
 */
export const LEVEL_MARKS: Readonly<Record<UsageLevel, readonly number[]>> = {
  hour: [HALF_HOUR_MS],
  day: Array.from({ length: HALF_HOURS_A_DAY - 1 }, (_, k) => (k + 1) * HALF_HOUR_MS),
};

/** A stretch of time at one level whose sums a series adds (sign 1) or takes away (−1) at a boundary. */
export interface SignedRange {
  readonly boundary: number;
  readonly sign: 1 | -1;
  readonly from: Date;
  readonly to: Date;
}

/**
 * How a series grouped by at most one dimension is read from the levels, whatever the zone.
 * Each boundary B of the series is moved to the nearest start R of the top level (UTC days for
 * DAY and MONTH series, hours for HOUR ones), and the top level is summed between the moved
 * boundaries. The difference C = sum[B, R) is then corrected at the boundary in steps of the
 * levels' marks (LEVEL_MARKS): from B to its nearest half hour H by 15-minute slots, and from H
 * to R by the prefixes of one row: the day's (DAY tops: every half hour is a day mark) or the
 * hour's (HOUR tops: an hour cut at its half). Each step is added to the bucket that starts at B
 * and taken from the one that ends there (signed: either point may lie on either side). A bucket
 * [B_j, B_j+1) is exactly top[R_j, R_j+1) + C_j − C_j+1, so any zone stays exact, and a
 * boundary of a DAY or MONTH series reads one day row per value (a row the top scan reads
 * anyway) and, in zones 15 or 45 minutes off the hour only (Kathmandu, Chatham), one slot per
 * value: UTC, Paris, Kolkata and New York no more than the days themselves.
 */
export interface LevelPlan {
  readonly top: UsageLevel;
  readonly topBounds: readonly Date[];
  /** Ranges within one UTC day whose ends are half hours (00:00, 00:30, …, 24:00). */
  readonly days: readonly SignedRange[];
  /** Hour ranges whose ends are whole or half hours. */
  readonly hours: readonly SignedRange[];
  readonly slots: readonly SignedRange[];
}

export function levelPlan(bounds: readonly Date[], top: UsageLevel): LevelPlan {
  const topMs = LEVEL_MS[top];
  const topBounds: Date[] = [];
  const days: SignedRange[] = [];
  const hours: SignedRange[] = [];
  const slots: SignedRange[] = [];
  bounds.forEach((b, boundary) => {
    const at = b.getTime();
    const r = Math.round(at / topMs) * topMs;
    const h = Math.round(at / HALF_HOUR_MS) * HALF_HOUR_MS;
    const q = top === "day" ? h : r;
    topBounds.push(new Date(r));
    if (q !== r) days.push(signed(boundary, q, r));
    if (h !== q) hours.push(signed(boundary, h, q));
    if (at !== h) slots.push(signed(boundary, at, h));
  });
  return { top, topBounds, days, hours, slots };
}

/** The start of the UTC day that holds `at`. */
export function dayOf(at: Date): Date {
  return new Date(Math.floor(at.getTime() / DAY_MS) * DAY_MS);
}

/** Which of a day's marks `at` is, counting the day's start as 0 and its end as 48 (`at` on a half hour). */
export function markOf(day: Date, at: Date): number {
  return (at.getTime() - day.getTime()) / HALF_HOUR_MS;
}

/** The start of the hour that holds `at` (UTC hours). */
export function hourOf(at: Date): Date {
  return new Date(Math.floor(at.getTime() / HOUR_MS) * HOUR_MS);
}

function signed(boundary: number, from: number, to: number): SignedRange {
  return from < to ? { boundary, sign: 1, from: new Date(from), to: new Date(to) } : { boundary, sign: -1, from: new Date(to), to: new Date(from) };
}

export function isZero(a: UsageAmounts): boolean {
  return a.consumed === 0n && a.restored === 0n && a.granted === 0n && a.expired === 0n && a.generations === 0n;
}

/** A series' order: by bucket, then by the group's values in code-point order (the same in every path and every database collation). */
export function sortSeries(rows: UsageSeriesRow[]): UsageSeriesRow[] {
  const key = (r: UsageSeriesRow): string => USAGE_DIMENSIONS.map((d) => r.group[d] ?? "").join("\u0000");
  const keys = new Map(rows.map((r) => [r, key(r)]));
  return rows.sort((a, b) => a.bucket - b.bucket || (keys.get(a)! < keys.get(b)! ? -1 : keys.get(a)! > keys.get(b)! ? 1 : 0));
}
