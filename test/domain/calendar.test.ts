import { describe, expect, it } from "vitest";
import { isExpired, isUsable } from "../../src/domain/bucket.js";
import { addMonths } from "../../src/domain/calendar.js";
import { purchaseTopUp } from "../../src/domain/grants.js";
import { DEFAULT_TOP_UP_PACKS } from "../../src/domain/top-up-packs.js";
import { newBook, topUp, unwrap } from "./fixtures.js";

const d = (iso: string) => new Date(iso);

describe("addMonths clamps to the end of the target month", () => {
  it.each([
    ["Jan 31 2030 + 1 = Feb 28 (common year)", "2030-01-31T10:00:00Z", 1, "2030-02-28T10:00:00Z"],
    ["Jan 31 2028 + 1 = Feb 29 (leap year)", "2028-01-31T10:00:00Z", 1, "2028-02-29T10:00:00Z"],
    ["Jan 31 + 2 = Mar 31 (counted from the anchor, not chained)", "2030-01-31T10:00:00Z", 2, "2030-03-31T10:00:00Z"],
    ["Jan 31 + 3 = Apr 30", "2030-01-31T10:00:00Z", 3, "2030-04-30T10:00:00Z"],
    ["Feb 29 2028 + 12 = Feb 28 2029", "2028-02-29T10:00:00Z", 12, "2029-02-28T10:00:00Z"],
    ["Feb 29 2028 + 48 = Feb 29 2032", "2028-02-29T10:00:00Z", 48, "2032-02-29T10:00:00Z"],
    ["Nov 30 + 3 crosses the year end", "2030-11-30T10:00:00Z", 3, "2031-02-28T10:00:00Z"],
    ["Dec 15 + 1 = Jan 15 next year", "2030-12-15T10:00:00Z", 1, "2031-01-15T10:00:00Z"],
    ["Mar 31 - 1 = Feb 28", "2030-03-31T10:00:00Z", -1, "2030-02-28T10:00:00Z"],
    ["Jan 15 - 13 = Dec 15 two years back", "2030-01-15T10:00:00Z", -13, "2028-12-15T10:00:00Z"],
    ["+ 0 is the same instant", "2030-05-31T10:00:00Z", 0, "2030-05-31T10:00:00Z"],
  ])("%s", (_name, anchor, months, expected) => {
    expect(addMonths(d(anchor), months).toISOString()).toBe(d(expected).toISOString());
  });

  it("preserves the time of day to the millisecond, also when clamping", () => {
    expect(addMonths(d("2030-01-31T23:59:59.999Z"), 1).toISOString()).toBe("2030-02-28T23:59:59.999Z");
    expect(addMonths(d("2030-01-31T00:00:00.001Z"), 1).toISOString()).toBe("2030-02-28T00:00:00.001Z");
    expect(addMonths(d("2030-06-15T07:08:09.010Z"), 7).toISOString()).toBe("2031-01-15T07:08:09.010Z");
  });

  it("works in UTC whatever the day boundary in local time", () => {
    // 23:30 UTC on the 31st is already the 1st in UTC+1; the result must still be the UTC month end.
    expect(addMonths(d("2030-01-31T23:30:00Z"), 1).toISOString()).toBe("2030-02-28T23:30:00.000Z");
  });

  it("does not mutate the anchor", () => {
    const anchor = d("2030-01-31T10:00:00Z");
    addMonths(anchor, 1);
    expect(anchor.toISOString()).toBe("2030-01-31T10:00:00.000Z");
  });

  it("rejects a fractional number of months", () => {
    expect(() => addMonths(d("2030-01-31T10:00:00Z"), 1.5)).toThrow(RangeError);
  });

  it("monthly periods from a Jan 31 anchor: Feb 28 → Mar 31 → Apr 30, never drifting", () => {
    const anchor = d("2030-01-31T10:00:00Z");
    const ends = [1, 2, 3, 4].map((m) => addMonths(anchor, m).toISOString().slice(0, 10));
    expect(ends).toEqual(["2030-02-28", "2030-03-31", "2030-04-30", "2030-05-31"]);
  });
});

describe("purchaseTopUp expiry", () => {
  it("a default pack expires exactly 2 calendar months after purchase", () => {
    const book = newBook();
    const pack = DEFAULT_TOP_UP_PACKS[0];
    if (!pack) throw new Error("no default pack");
    expect(pack.validityMonths).toBe(2);
    const purchasedAt = d("2030-01-15T12:34:56.789Z");
    const bucket = unwrap(purchaseTopUp(book, { bucketId: "b1", pack, paymentReference: "pay-1" }, purchasedAt));
    expect(bucket.expiresAt?.toISOString()).toBe("2030-03-15T12:34:56.789Z");
    expect([bucket.kind, bucket.granted, bucket.remaining, bucket.held]).toEqual(["TOP_UP", pack.credits, pack.credits, 0n]);
    expect(bucket.validFrom).toEqual(purchasedAt);
  });

  it("clamps: bought Dec 31 2029 it expires Feb 28 2030; bought Dec 31 2027 it expires Feb 29 2028", () => {
    const book = newBook();
    expect(topUp(book, "b1", 100n, d("2029-12-31T08:00:00Z")).expiresAt?.toISOString()).toBe("2030-02-28T08:00:00.000Z");
    expect(topUp(book, "b2", 100n, d("2027-12-31T08:00:00Z")).expiresAt?.toISOString()).toBe("2028-02-29T08:00:00.000Z");
  });

  it("a custom pack expires after its own number of calendar months, clamped the same way", () => {
    const book = newBook();
    expect(topUp(book, "b1", 100n, d("2030-11-30T08:00:00Z"), 3).expiresAt?.toISOString()).toBe("2031-02-28T08:00:00.000Z");
    expect(topUp(book, "b2", 100n, d("2030-01-31T08:00:00Z"), 1).expiresAt?.toISOString()).toBe("2030-02-28T08:00:00.000Z");
  });

  it("is usable up to the last millisecond before its expiry and expired from that instant", () => {
    const book = newBook();
    const bucket = topUp(book, "b1", 100n, d("2030-01-15T12:00:00Z"));
    const expiry = d("2030-03-15T12:00:00Z");
    expect(isUsable(bucket, new Date(expiry.getTime() - 1))).toBe(true);
    expect(isUsable(bucket, expiry)).toBe(false);
    expect(isExpired(bucket, expiry)).toBe(true);
    expect(book.available(new Date(expiry.getTime() - 1))).toBe(100n);
    expect(book.available(expiry)).toBe(0n);
  });

  it("records a GRANT entry carrying the pack and payment reference", () => {
    const book = newBook();
    topUp(book, "b1", 500n);
    expect(book.entries).toEqual([
      {
        kind: "GRANT",
        bucketId: "b1",
        reservationId: null,
        amount: 500n,
        metadata: { pack_id: "pack-500", payment_reference: "pay-b1", price: "500 USD" },
        automatic: false,
        memberId: "",
      },
    ]);
  });
});
