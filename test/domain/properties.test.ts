import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { AccountBook } from "../../src/domain/account-book.js";
import { isExpired } from "../../src/domain/bucket.js";
import type { Result } from "../../src/domain/errors.js";
import { commit, extend, release, reserve } from "../../src/domain/holds.js";
import { applyDue } from "../../src/domain/maintenance.js";
import { reconcileBook } from "../../src/domain/reconcile.js";
import { currentlyHeld, type Reservation } from "../../src/domain/reservation.js";
import { adjustment, at, DAY, entrySums, HOUR, MINUTE, newBook, subscription, sumEntries, T0, topUp, newId } from "./fixtures.js";

/** Random operations on one account. Indexes pick a reservation modulo how many exist. */
type Op =
  | { readonly op: "grant"; readonly kind: "TOP_UP" | "ADJUSTMENT" | "SUBSCRIPTION"; readonly amount: bigint; readonly months: number; readonly expiresInMs: number | null }
  | { readonly op: "reserve"; readonly amount: bigint; readonly ttlMs: number }
  | { readonly op: "commit"; readonly pick: number; readonly mode: "below" | "equal" | "above"; readonly delta: bigint }
  | { readonly op: "release"; readonly pick: number }
  | { readonly op: "extend"; readonly pick: number; readonly ttlMs: number }
  | { readonly op: "advance"; readonly ms: number }
  | { readonly op: "advanceToDue" };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant("grant" as const),
    kind: fc.constantFrom("TOP_UP" as const, "ADJUSTMENT" as const, "SUBSCRIPTION" as const),
    amount: fc.bigInt({ min: 1n, max: 200n }),
    months: fc.integer({ min: 1, max: 3 }),
    expiresInMs: fc.option(fc.oneof(fc.integer({ min: 1, max: 6 * HOUR }), fc.integer({ min: 1, max: 40 * DAY })), { nil: null }),
  }),
  fc.record({ op: fc.constant("reserve" as const), amount: fc.bigInt({ min: 1n, max: 300n }), ttlMs: fc.integer({ min: MINUTE, max: 2 * DAY }) }),
  fc.record({
    op: fc.constant("commit" as const),
    pick: fc.nat(),
    mode: fc.constantFrom("below" as const, "equal" as const, "above" as const),
    delta: fc.bigInt({ min: 0n, max: 150n }),
  }),
  fc.record({ op: fc.constant("release" as const), pick: fc.nat() }),
  fc.record({ op: fc.constant("extend" as const), pick: fc.nat(), ttlMs: fc.integer({ min: MINUTE, max: 2 * DAY }) }),
  fc.record({ op: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 20 * DAY }) }),
  fc.constant({ op: "advanceToDue" as const }),
);

interface World {
  readonly book: AccountBook;
  now: Date;
  granted: bigint;
  next: number;
}

function pick(world: World, index: number): Reservation | undefined {
  const all = world.book.allReservations();
  return all.length === 0 ? undefined : all[index % all.length];
}

function snapshot(book: AccountBook): string {
  const buckets = book.allBuckets().map((b) => `${b.id}:${b.granted}/${b.remaining}/${b.held}`);
  const holds = book.allReservations().map((r) => `${r.id}:${r.status}/${r.expiresAt.getTime()}/${r.capturedAmount}/${r.releasedAmount}/${JSON.stringify(r.allocations, (_k, v: unknown) => (typeof v === "bigint" ? `${v}` : v))}`);
  return [...buckets, ...holds].join(";");
}

/** The next instant something falls due: an open hold's or a bucket's expiry. */
function nextDue(world: World): Date | undefined {
  const open = world.book.allReservations().filter((r) => r.status === "HELD").map((r) => r.expiresAt);
  const buckets = world.book.allBuckets().flatMap((b) => (b.expiresAt ? [b.expiresAt] : []));
  return [...open, ...buckets].filter((t) => t > world.now).sort((a, b) => a.getTime() - b.getTime())[0];
}

/** Runs one operation; returns the Result of a domain call that can fail, if any. */
function step(world: World, op: Op): Result<unknown> | null {
  const { book } = world;
  const id = `x${world.next++}`;
  switch (op.op) {
    case "grant": {
      world.granted += op.amount;
      const expiresAt = op.expiresInMs === null ? null : at(op.expiresInMs, world.now);
      if (op.kind === "TOP_UP") topUp(book, id, op.amount, world.now, op.months);
      else if (op.kind === "ADJUSTMENT") adjustment(book, id, op.amount, expiresAt, world.now);
      else subscription(book, id, op.amount, expiresAt, world.now);
      return null;
    }
    case "reserve": {
      const available = book.available(world.now);
      const result = reserve(book, { reservationId: id, amount: op.amount, ttlMs: op.ttlMs, metadata: {} }, world.now);
      expect(result.ok).toBe(op.amount <= available);
      if (result.ok) expect(book.available(world.now)).toBe(available - op.amount);
      return result;
    }
    case "commit": {
      const r = pick(world, op.pick);
      if (!r) return null;
      const base = r.status === "HELD" ? currentlyHeld(r) : r.capturedAmount;
      const actual = op.mode === "equal" ? base : op.mode === "above" ? base + op.delta + 1n : base - (op.delta > base ? base : op.delta);
      const wasHeld = r.status === "HELD";
      const capturedBefore = sumEntries(book, ["CAPTURE"]);
      const available = book.available(world.now);
      const result = commit(book, r, actual, world.now);
      if (wasHeld) expect(result.ok).toBe(actual - base <= available);
      if (result.ok && wasHeld) {
        expect([r.status, r.capturedAmount, currentlyHeld(r)]).toEqual(["COMMITTED", actual, 0n]);
        expect(sumEntries(book, ["CAPTURE"]) - capturedBefore).toBe(actual);
      }
      if (!wasHeld) expect(result.ok).toBe(r.status === "COMMITTED" && r.capturedAmount === actual);
      return result;
    }
    case "release": {
      const r = pick(world, op.pick);
      if (!r) return null;
      const before = r.status;
      const result = release(book, r, "OTHER", "property", world.now);
      expect(result.ok).toBe(before !== "COMMITTED");
      if (result.ok) expect(currentlyHeld(r)).toBe(0n);
      return result;
    }
    case "extend": {
      const r = pick(world, op.pick);
      if (!r) return null;
      const before = r.expiresAt.getTime();
      const result = extend(book, r, op.ttlMs, world.now);
      expect(result.ok).toBe(r.status === "HELD");
      expect(r.expiresAt.getTime()).toBeGreaterThanOrEqual(before);
      return result;
    }
    case "advance":
    case "advanceToDue": {
      world.now = op.op === "advance" ? at(op.ms, world.now) : (nextDue(world) ?? world.now);
      const before = book.entries.length;
      applyDue(book, world.now, newId);
      expect(book.entries.slice(before).every((e) => e.automatic && (e.kind === "RELEASE" || e.kind === "EXPIRE"))).toBe(true);
      expect(book.allReservations().filter((r) => r.status === "HELD" && r.expiresAt <= world.now)).toEqual([]);
      return null;
    }
  }
}

function checkInvariants(world: World): void {
  const { book } = world;
  const buckets = book.allBuckets();
  const reservations = book.allReservations();
  // (a) no bucket negative, held never above remaining
  for (const b of buckets) {
    expect(b.held, `held of ${b.id}`).toBeGreaterThanOrEqual(0n);
    expect(b.remaining, `remaining of ${b.id}`).toBeGreaterThanOrEqual(b.held);
    expect(b.remaining, `remaining of ${b.id}`).toBeLessThanOrEqual(b.granted);
  }
  // (b) conservation: every granted credit is still in a bucket, captured or expired
  const remaining = buckets.reduce((t, b) => t + b.remaining, 0n);
  expect(remaining + sumEntries(book, ["CAPTURE"]) + sumEntries(book, ["EXPIRE"])).toBe(world.granted);
  expect(sumEntries(book, ["GRANT", "ADJUST"])).toBe(world.granted);
  // (c) what buckets hold is what open reservations hold; settled ones hold nothing
  const heldByOpen = reservations.filter((r) => r.status === "HELD").reduce((t, r) => t + currentlyHeld(r), 0n);
  expect(book.held()).toBe(heldByOpen);
  for (const r of reservations) {
    if (r.status !== "HELD") expect(r.allocations, `allocations of settled ${r.id}`).toEqual([]);
    for (const a of r.allocations) expect(a.amount).toBeGreaterThan(0n);
  }
  // (d) the stored state is exactly what the entries add up to
  expect(reconcileBook(buckets, reservations, entrySums(book))).toEqual([]);
  // (e) available never negative, and never counts an expired bucket
  expect(book.available(world.now)).toBeGreaterThanOrEqual(0n);
  for (const b of book.usableBuckets(world.now)) expect(b.expiresAt === null || b.expiresAt > world.now).toBe(true);
  // time only moves through applyDue, so an expired bucket keeps no free credits: only held ones
  for (const b of buckets) if (isExpired(b, world.now)) expect(b.remaining, `free credits left in expired ${b.id}`).toBe(b.held);
  // only maintenance is automatic, and it only releases and expires
  for (const e of book.entries) if (e.automatic) expect(["RELEASE", "EXPIRE"]).toContain(e.kind);
}

function run(ops: readonly Op[]): void {
  const world: World = { book: newBook("acct-prop"), now: T0, granted: 0n, next: 0 };
  for (const op of ops) {
    const entriesBefore = world.book.entries.length;
    const stateBefore = snapshot(world.book);
    const result = step(world, op);
    // (f) a failed Result changes nothing: no entry, no bucket or reservation field
    if (result && !result.ok) {
      expect(world.book.entries.length, `entries after failed ${op.op}`).toBe(entriesBefore);
      expect(snapshot(world.book)).toBe(stateBefore);
    }
    checkInvariants(world);
  }
}

describe("properties of random operation sequences on one account book", () => {
  it("keeps buckets non-negative, conserves credits, and always reconciles with its entries", () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => run(ops)),
      { numRuns: 400 },
    );
  });

  it("the same holds when time moves in small steps around hold and bucket expiries", () => {
    const smallSteps = opArb.map((op): Op => (op.op === "advance" ? { op: "advance", ms: op.ms % (3 * HOUR) } : op));
    fc.assert(
      fc.property(fc.array(smallSteps, { minLength: 1, maxLength: 60 }), (ops) => run(ops)),
      { numRuns: 300 },
    );
  });

  it("a sequence that only reserves and releases gives every credit back", () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 1n, max: 50n }), { minLength: 1, maxLength: 10 }), (amounts) => {
        const book = newBook();
        subscription(book, "sub", 200n, null);
        const holds = amounts.flatMap((amount, i) => {
          const result = reserve(book, { reservationId: `r${i}`, amount, ttlMs: HOUR, metadata: {} }, T0);
          return result.ok ? [result.value] : [];
        });
        for (const r of holds) expect(release(book, r, "CANCELLED", "", T0).ok).toBe(true);
        expect(book.available(T0)).toBe(200n);
        expect(sumEntries(book, ["HOLD"])).toBe(sumEntries(book, ["RELEASE"]));
      }),
      { numRuns: 300 },
    );
  });
});
