import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { commit, release, reserve } from "../../src/domain/holds.js";
import type { EntryKind } from "../../src/domain/ledger-entry.js";
import { applyDue } from "../../src/domain/maintenance.js";
import { boundaries } from "../../src/domain/time-zone.js";
import { isZero, LEVEL_MARKS, levelPlan, type SignedRange, slotOf, type UsageAmounts, type UsageDelta, type UsageDimension, type UsageSeriesRow, usageDeltas } from "../../src/domain/usage.js";
import { adjustment, at, DAY, HOUR, MINUTE, newBook, newId, T0, topUp } from "./fixtures.js";
import { type LevelDelta, levelDeltas } from "./usage-levels.js";

type Op =
  | { readonly op: "grant"; readonly amount: bigint; readonly expiresInMs: number | null; readonly topUp: boolean }
  | { readonly op: "reserve"; readonly amount: bigint; readonly model: string; readonly member: string }
  | { readonly op: "commit"; readonly pick: number; readonly delta: bigint; readonly above: boolean }
  | { readonly op: "release"; readonly pick: number }
  | { readonly op: "advance"; readonly ms: number; readonly caller: string };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant("grant" as const), amount: fc.bigInt({ min: 1n, max: 500n }), expiresInMs: fc.option(fc.integer({ min: MINUTE, max: 5 * DAY }), { nil: null }), topUp: fc.boolean() }),
  fc.record({ op: fc.constant("reserve" as const), amount: fc.bigInt({ min: 1n, max: 200n }), model: fc.constantFrom("", "sdxl", "veo-lite"), member: fc.constantFrom("", "ann", "bob") }),
  fc.record({ op: fc.constant("commit" as const), pick: fc.nat(), delta: fc.bigInt({ min: 0n, max: 50n }), above: fc.boolean() }),
  fc.record({ op: fc.constant("release" as const), pick: fc.nat() }),
  fc.record({ op: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 30 * HOUR }), caller: fc.constantFrom("runner-a", "runner-b") }),
);

const METRIC_KINDS: Record<string, EntryKind[]> = { consumed: ["CAPTURE"], restored: ["RELEASE"], granted: ["GRANT", "ADJUST"], expired: ["EXPIRE"] };

describe("the usage rollup's additions (property)", () => {
  it("every series, by any zone's days, sums to the entries it covers; generations are the committed holds", () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 60 }), fc.constantFrom("UTC", "Europe/Paris", "Asia/Kolkata", "America/St_Johns", "Asia/Kathmandu", "Pacific/Chatham"), (ops, zone) => {
        const book = newBook();
        adjustment(book, "seed", 1000n, null, at(-DAY));
        let now = T0;
        let caller = "runner-a";
        // The context of each entry as the apply stage records it: who and when.
        const contexts: { caller: string; now: Date }[] = [];
        const stamp = () => {
          while (contexts.length < book.entries.length) contexts.push({ caller, now });
        };
        stamp();
        let n = 0;
        for (const op of ops) {
          const holds = book.allReservations().filter((r) => r.status === "HELD");
          switch (op.op) {
            case "grant":
              if (op.topUp) topUp(book, `g${n++}`, op.amount, now);
              else adjustment(book, `g${n++}`, op.amount, op.expiresInMs === null ? null : at(op.expiresInMs, now), now);
              break;
            case "reserve":
              reserve(book, { reservationId: `r${n++}`, amount: op.amount, ttlMs: 6 * HOUR, metadata: op.model ? { model: op.model } : {}, memberId: op.member }, now);
              break;
            case "commit": {
              const r = holds[op.pick % Math.max(1, holds.length)];
              if (r) commit(book, r, op.above ? r.heldAmount + op.delta : r.heldAmount > op.delta ? r.heldAmount - op.delta : 0n, now);
              break;
            }
            case "release": {
              const r = holds[op.pick % Math.max(1, holds.length)];
              if (r) release(book, r, "GENERATION_FAILED", "", now);
              break;
            }
            case "advance":
              now = at(op.ms, now);
              caller = op.caller;
              applyDue(book, now, newId);
              break;
          }
          stamp();
        }
        const deltas = usageDeltas(book, (i) => contexts[i]!);
        // Totals: each figure is its entries.
        for (const [metric, kinds] of Object.entries(METRIC_KINDS)) {
          const fromEntries = book.entries.filter((e) => kinds.includes(e.kind)).reduce((s, e) => s + e.amount, 0n);
          expect(deltas.reduce((s, d) => s + d[metric as "consumed"], 0n), metric).toBe(fromEntries);
        }
        expect(deltas.reduce((s, d) => s + d.generations, 0n)).toBe(BigInt(book.allReservations().filter((r) => r.status === "COMMITTED").length));
        // Days of the zone: the slots' sums per day are the entries' per day.
        const bounds = boundaries(zone, "DAY", at(-DAY), at(40 * DAY, now), 1000)!;
        const dayOf = (t: Date) => bounds.findLastIndex((b) => b.getTime() <= t.getTime());
        const bySlots = new Map<number, bigint>();
        for (const d of deltas) bySlots.set(dayOf(d.slot), (bySlots.get(dayOf(d.slot)) ?? 0n) + d.consumed);
        const byEntries = new Map<number, bigint>();
        book.entries.forEach((e, i) => {
          if (e.kind === "CAPTURE") byEntries.set(dayOf(contexts[i]!.now), (byEntries.get(dayOf(contexts[i]!.now)) ?? 0n) + e.amount);
        });
        const nonZero = (m: Map<number, bigint>) => [...m].filter(([, v]) => v !== 0n).sort((a, b) => a[0] - b[0]);
        expect(nonZero(bySlots)).toEqual(nonZero(byEntries));
        // The hourly level: per dimension, the same totals, each hour holding its slots.
        const hourly = levelDeltas(deltas, "hour");
        for (const dim of ["model", "kind", "member", "caller"] as const) {
          const rows = hourly.filter((h) => h.dim === dim);
          expect(rows.reduce((s, h) => s + h.consumed, 0n), dim).toBe(deltas.reduce((s, d) => s + d.consumed, 0n));
          expect(rows.reduce((s, h) => s + h.generations, 0n), dim).toBe(deltas.reduce((s, d) => s + d.generations, 0n));
          for (const d of deltas) {
            const h = rows.find((r) => r.value === d[dim] && r.start.getTime() <= d.slot.getTime() && d.slot.getTime() < r.start.getTime() + HOUR);
            expect(h, `${dim} ${d[dim]} at ${d.slot.toISOString()}`).toBeDefined();
          }
        }
        // The levels read by a plan (days or hours on top, corrected at each boundary) give, per
        // bucket and value, exactly what the slots give, in this zone, by DAY and by HOUR.
        const daily = levelDeltas(deltas, "day");
        const hourBounds = boundaries(zone, "HOUR", at(0), at(3 * DAY), 1000)!;
        for (const [unitBounds, top] of [[bounds, "day"], [hourBounds, "hour"]] as const) {
          for (const dim of ["model", "member", null] as const) {
            const fromLevels = combineLevels(readPlan(levelPlan(unitBounds, top), deltas, top === "day" ? daily : hourly, hourly, daily, dim), unitBounds.length - 1, dim);
            expect(fromLevels, `${top} ${dim}`).toEqual(seriesFromSlots(deltas, unitBounds, dim));
          }
        }
        // Every slot is a 15-minute boundary.
        for (const d of deltas) expect(slotOf(d.slot).getTime()).toBe(d.slot.getTime());
      }),
      { numRuns: 150 }, // fast-check prints the seed and path of a failure, to replay it
    );
  });
});

type Amounts = Pick<UsageDelta, "consumed" | "restored" | "granted" | "expired" | "generations">;
const amountsOf = (r: Amounts): Amounts => ({ consumed: r.consumed, restored: r.restored, granted: r.granted, expired: r.expired, generations: r.generations });

/** What the store's leveled statement returns for a plan, computed from the levels in memory. */
function readPlan(plan: ReturnType<typeof levelPlan>, slots: readonly UsageDelta[], top: readonly LevelDelta[], hours: readonly LevelDelta[], days: readonly LevelDelta[], dim: UsageDimension | null): LevelRow[] {
  const levelDim = dim ?? "kind";
  const value = (v: string): string | null => (dim === null ? null : v);
  const rows: LevelRow[] = [];
  const last = plan.topBounds.length - 1;
  for (const t of top.filter((r) => r.dim === levelDim)) {
    const ms = t.start.getTime();
    if (ms < plan.topBounds[0]!.getTime() || ms >= plan.topBounds[last]!.getTime()) continue;
    const index = plan.topBounds.findLastIndex((b) => b.getTime() <= ms);
    rows.push({ part: "top", index, sign: 1, value: value(t.value), ...amountsOf(t) });
  }
  const fixes = (ranges: readonly SignedRange[], items: readonly { at: Date; value: string; amounts: Amounts }[]) => {
    for (const r of ranges) {
      for (const i of items) if (i.at >= r.from && i.at < r.to) rows.push({ part: "fix", index: r.boundary, sign: r.sign, value: value(i.value), ...i.amounts });
    }
  };
  // A range may start or end on a mark of a row (an hour's half hour, a day's half hours): the row
  // gives the figures between the two as the difference of its prefixes before them.
  const cut = (ranges: readonly SignedRange[], rowsOf: readonly LevelDelta[], span: number, marks: readonly number[]) => {
    for (const r of ranges) {
      for (const row of rowsOf.filter((x) => x.dim === levelDim)) {
        const start = row.start.getTime();
        if (start + span <= r.from.getTime() || start >= r.to.getTime()) continue;
        const before = (at: number): Amounts => {
          if (at <= start) return { consumed: 0n, restored: 0n, granted: 0n, expired: 0n, generations: 0n };
          if (at >= start + span) return amountsOf(row);
          const k = marks.indexOf(at - start);
          if (k < 0) throw new Error(`a range ends inside a row, off its marks: ${new Date(at).toISOString()}`);
          return amountsOf(row.prefixes[k]!);
        };
        const hi = before(r.to.getTime());
        const lo = before(r.from.getTime());
        const amounts = { consumed: hi.consumed - lo.consumed, restored: hi.restored - lo.restored, granted: hi.granted - lo.granted, expired: hi.expired - lo.expired, generations: hi.generations - lo.generations };
        rows.push({ part: "fix", index: r.boundary, sign: r.sign, value: value(row.value), ...amounts });
      }
    }
  };
  cut(plan.hours, hours, HOUR, LEVEL_MARKS.hour);
  cut(plan.days, days, DAY, LEVEL_MARKS.day);
  fixes(plan.slots, slots.map((s) => ({ at: s.slot, value: s[levelDim], amounts: amountsOf(s) })));
  return rows;
}

/** The same series straight from the slots: each slot in the bucket that holds it. */
function seriesFromSlots(slots: readonly UsageDelta[], bounds: readonly Date[], dim: UsageDimension | null) {
  const rows: LevelRow[] = [];
  for (const s of slots) {
    const index = bounds.findLastIndex((b) => b.getTime() <= s.slot.getTime());
    if (index < 0 || index >= bounds.length - 1) continue;
    rows.push({ part: "top", index, sign: 1, value: dim === null ? null : s[dim], ...amountsOf(s) });
  }
  return combineLevels(rows, bounds.length - 1, dim);
}

/** A row read by a plan: a top-level bucket's sums (kind "top", index = bucket), or a correction's (index = boundary, signed). */
interface LevelRow extends Readonly<UsageAmounts> {
  readonly part: "top" | "fix";
  readonly index: number;
  readonly sign: 1 | -1;
  readonly value: string | null;
}

/**
 * The model of how the store's leveled statement sums what a plan reads (store/usage-rollup.ts
 * leveledSeries does it in SQL; the e2e test holds it to the slots): the series' rows from what a plan read: each correction goes to the bucket starting at its
 * boundary and, negated, to the one ending there; buckets outside the series are dropped, and so
 * are groups whose figures all net to zero (a level cannot tell "nothing happened" from "it
 * cancelled out", so no path reports such a row).
 */
function combineLevels(rows: readonly LevelRow[], buckets: number, dim: UsageDimension | null): UsageSeriesRow[] {
  // Per value, one accumulator per bucket that becomes the answer's row, and one group object
  // shared by the value's rows (a 90-day series is ~550 rows from ~1,600 read: no key strings, no
  // map per bucket, and a row's first figures taken as they are).
  type Sums = { -readonly [K in keyof UsageSeriesRow]: UsageSeriesRow[K] };
  const perValue = new Map<string | null, { group: UsageSeriesRow["group"]; sums: (Sums | undefined)[] }>();
  const add = (bucket: number, value: string | null, negate: boolean, r: UsageAmounts): void => {
    if (bucket < 0 || bucket >= buckets) return;
    let column = perValue.get(value);
    if (!column) {
      column = { group: dim === null ? {} : { [dim]: value ?? "" }, sums: new Array<Sums | undefined>(buckets) };
      perValue.set(value, column);
    }
    const row = column.sums[bucket];
    if (!row) {
      const group = column.group;
      column.sums[bucket] = negate
        ? { bucket, group, consumed: -r.consumed, restored: -r.restored, granted: -r.granted, expired: -r.expired, generations: -r.generations }
        : { bucket, group, consumed: r.consumed, restored: r.restored, granted: r.granted, expired: r.expired, generations: r.generations };
    } else if (negate) {
      row.consumed -= r.consumed;
      row.restored -= r.restored;
      row.granted -= r.granted;
      row.expired -= r.expired;
      row.generations -= r.generations;
    } else {
      row.consumed += r.consumed;
      row.restored += r.restored;
      row.granted += r.granted;
      row.expired += r.expired;
      row.generations += r.generations;
    }
  };
  for (const r of rows) {
    if (r.part === "top") add(r.index, r.value, false, r);
    else {
      add(r.index, r.value, r.sign < 0, r);
      add(r.index - 1, r.value, r.sign > 0, r);
    }
  }
  const columns = [...perValue.entries()].sort(([a], [b]) => ((a ?? "") < (b ?? "") ? -1 : (a ?? "") > (b ?? "") ? 1 : 0)).map(([, c]) => c.sums);
  const out: UsageSeriesRow[] = [];
  for (let bucket = 0; bucket < buckets; bucket++) {
    for (const sums of columns) {
      const row = sums[bucket];
      if (row && !isZero(row)) out.push(row);
    }
  }
  return out;
}
