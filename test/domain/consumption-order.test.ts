import { describe, expect, it } from "vitest";
import { type Bucket, compareConsumption } from "../../src/domain/bucket.js";
import { adjustment, allocationsOf, at, DAY, hold, HOUR, movements, newBook, subscription, T0, topUp } from "./fixtures.js";

const ids = (buckets: readonly Bucket[]) => buckets.map((b) => b.id);

function bare(id: string, kind: Bucket["kind"], expiresAt: Date | null, createdAt: Date = T0): Bucket {
  return { id, accountId: "a", kind, granted: 1n, remaining: 1n, held: 0n, validFrom: createdAt, expiresAt, sourceRef: "", createdAt };
}

describe("compareConsumption: the one consumption order", () => {
  it("puts TOP_UP before ADJUSTMENT before SUBSCRIPTION, whatever the expiries", () => {
    const sub = bare("sub", "SUBSCRIPTION", at(DAY));
    const adj = bare("adj", "ADJUSTMENT", null);
    const top = bare("top", "TOP_UP", at(300 * DAY));
    expect(ids([sub, adj, top].sort(compareConsumption))).toEqual(["top", "adj", "sub"]);
    expect(compareConsumption(top, sub)).toBeLessThan(0);
    expect(compareConsumption(sub, adj)).toBeGreaterThan(0);
  });

  it("within a kind takes the earliest expiry first and never-expiring last", () => {
    const never = bare("never", "ADJUSTMENT", null);
    const late = bare("late", "ADJUSTMENT", at(30 * DAY));
    const soon = bare("soon", "ADJUSTMENT", at(2 * DAY));
    expect(ids([never, late, soon].sort(compareConsumption))).toEqual(["soon", "late", "never"]);
  });

  it("with equal expiries takes the oldest first", () => {
    const young = bare("a-young", "TOP_UP", at(60 * DAY), at(2 * HOUR));
    const old = bare("z-old", "TOP_UP", at(60 * DAY), at(HOUR));
    expect(ids([young, old].sort(compareConsumption))).toEqual(["z-old", "a-young"]);
    const neverYoung = bare("n-young", "ADJUSTMENT", null, at(2 * HOUR));
    const neverOld = bare("n-old", "ADJUSTMENT", null, at(HOUR));
    expect(ids([neverYoung, neverOld].sort(compareConsumption))).toEqual(["n-old", "n-young"]);
  });

  it("is a total order: only the same bucket compares equal", () => {
    const a = bare("a", "TOP_UP", at(DAY));
    const b = bare("b", "TOP_UP", at(DAY));
    expect(compareConsumption(a, b)).toBeLessThan(0);
    expect(compareConsumption(b, a)).toBeGreaterThan(0);
    expect(compareConsumption(a, a)).toBe(0);
  });
});

describe("AccountBook.usableBuckets", () => {
  it("lists usable buckets in consumption order", () => {
    const book = newBook();
    subscription(book, "sub", 100n, at(30 * DAY));
    adjustment(book, "adj-never", 10n, null);
    adjustment(book, "adj-soon", 10n, at(5 * DAY));
    topUp(book, "top-later", 10n, at(HOUR)); // bought later: expires later
    topUp(book, "top-first", 10n);
    expect(ids(book.usableBuckets(at(2 * HOUR)))).toEqual(["top-first", "top-later", "adj-soon", "adj-never", "sub"]);
  });

  it("leaves out expired buckets and buckets not valid yet", () => {
    const book = newBook();
    adjustment(book, "expired", 10n, at(DAY));
    adjustment(book, "future", 10n, null, at(3 * DAY));
    adjustment(book, "live", 10n, null);
    expect(ids(book.usableBuckets(at(2 * DAY)))).toEqual(["live"]);
    expect(ids(book.usableBuckets(at(DAY - 1)))).toEqual(["expired", "live"]);
    expect(book.available(at(2 * DAY))).toBe(10n);
  });
});

describe("a reserve spanning several buckets takes them in consumption order", () => {
  it("drains top-ups, then adjustments, then the subscription, recording each allocation", () => {
    const book = newBook();
    subscription(book, "sub", 100n, at(30 * DAY));
    adjustment(book, "adj-never", 5n, null);
    adjustment(book, "adj-soon", 7n, at(10 * DAY));
    topUp(book, "top-young", 3n, at(HOUR));
    topUp(book, "top-old", 4n);
    const grants = book.entries.length;

    const r = hold(book, "r1", 30n, at(2 * HOUR));

    expect(allocationsOf(r)).toEqual([
      ["top-old", 4n],
      ["top-young", 3n],
      ["adj-soon", 7n],
      ["adj-never", 5n],
      ["sub", 11n],
    ]);
    expect(movements(book, grants)).toEqual([
      ["HOLD", "top-old", 4n],
      ["HOLD", "top-young", 3n],
      ["HOLD", "adj-soon", 7n],
      ["HOLD", "adj-never", 5n],
      ["HOLD", "sub", 11n],
    ]);
    expect(book.bucket("sub").held).toBe(11n);
    expect(book.available(at(2 * HOUR))).toBe(89n);
  });

  it("a second reserve continues where the free credits are, skipping fully held buckets", () => {
    const book = newBook();
    subscription(book, "sub", 50n, at(30 * DAY));
    topUp(book, "top", 10n);
    hold(book, "r1", 6n);
    const r2 = hold(book, "r2", 8n);
    expect(allocationsOf(r2)).toEqual([
      ["top", 4n],
      ["sub", 4n],
    ]);
    const r3 = hold(book, "r3", 5n);
    expect(allocationsOf(r3)).toEqual([["sub", 5n]]);
  });

  it("does not take credits from an expired top-up, even though top-ups come first", () => {
    const book = newBook();
    subscription(book, "sub", 50n, null);
    topUp(book, "top", 10n, T0, 1);
    const r = hold(book, "r1", 5n, at(40 * DAY));
    expect(allocationsOf(r)).toEqual([["sub", 5n]]);
  });
});
