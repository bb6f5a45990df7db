import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { addMonths } from "../../src/domain/calendar.js";
import { allowancePeriod, allowancePeriodIndex, billingPeriod, prorate, type Period } from "../../src/domain/periods.js";
import { DAY, HOUR, utc } from "./fixtures.js";

const iso = (p: Period) => [p.start.toISOString(), p.end.toISOString()];
const before = (d: Date, ms = 1) => new Date(d.getTime() - ms);

/** Anchors from 2020 to 2040, biased towards the month ends where clamping happens. */
const anchorArb = fc
  .record({
    year: fc.integer({ min: 2020, max: 2040 }),
    month: fc.integer({ min: 0, max: 11 }),
    day: fc.oneof(fc.integer({ min: 1, max: 31 }), fc.integer({ min: 28, max: 31 })),
    ms: fc.integer({ min: 0, max: DAY - 1 }),
  })
  .map(({ year, month, day, ms }) => {
    const lastDay = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
    return new Date(Date.UTC(year, month, Math.min(day, lastDay)) + ms);
  });

describe("allowance periods are monthly from the anchor, clamped to the month end, counted from the anchor", () => {
  it("anchor Jan 31 2030: Jan 31 → Feb 28 → Mar 31 → Apr 30 → May 31", () => {
    const anchor = utc("2030-01-31T09:30:00Z");
    expect([0, 1, 2, 3].map((k) => iso(allowancePeriod(anchor, k)))).toEqual([
      ["2030-01-31T09:30:00.000Z", "2030-02-28T09:30:00.000Z"],
      ["2030-02-28T09:30:00.000Z", "2030-03-31T09:30:00.000Z"],
      ["2030-03-31T09:30:00.000Z", "2030-04-30T09:30:00.000Z"],
      ["2030-04-30T09:30:00.000Z", "2030-05-31T09:30:00.000Z"],
    ]);
  });

  it("anchor Jan 31 2028 (leap year): the second period starts Feb 29", () => {
    expect(iso(allowancePeriod(utc("2028-01-31T00:00:00Z"), 1))).toEqual(["2028-02-29T00:00:00.000Z", "2028-03-31T00:00:00.000Z"]);
  });

  it("anchor Feb 29 2028: Mar 29 … Jan 29 → Feb 28 2029 → Mar 29 2029 (not Mar 28), and Feb 29 again in 2032", () => {
    const anchor = utc("2028-02-29T00:00:00Z");
    expect(iso(allowancePeriod(anchor, 0))).toEqual(["2028-02-29T00:00:00.000Z", "2028-03-29T00:00:00.000Z"]);
    expect(iso(allowancePeriod(anchor, 11))).toEqual(["2029-01-29T00:00:00.000Z", "2029-02-28T00:00:00.000Z"]);
    expect(iso(allowancePeriod(anchor, 12))).toEqual(["2029-02-28T00:00:00.000Z", "2029-03-29T00:00:00.000Z"]);
    expect(addMonths(anchor, 48).toISOString()).toBe("2032-02-29T00:00:00.000Z");
    expect(iso(allowancePeriod(anchor, 47))).toEqual(["2032-01-29T00:00:00.000Z", "2032-02-29T00:00:00.000Z"]);
    expect(iso(allowancePeriod(anchor, 48))).toEqual(["2032-02-29T00:00:00.000Z", "2032-03-29T00:00:00.000Z"]);
  });

  it("a short month does not shorten later periods (anchor Mar 31: Apr 30 → May 31, not May 30)", () => {
    const anchor = utc("2030-03-31T00:00:00Z");
    expect(iso(allowancePeriod(anchor, 1))).toEqual(["2030-04-30T00:00:00.000Z", "2030-05-31T00:00:00.000Z"]);
  });

  it("property: consecutive periods tile time without gaps or overlaps, each 28–31 days long", () => {
    fc.assert(
      fc.property(anchorArb, fc.integer({ min: 0, max: 240 }), (anchor, k) => {
        const p = allowancePeriod(anchor, k);
        const next = allowancePeriod(anchor, k + 1);
        expect(p.end.getTime()).toBe(next.start.getTime());
        const length = p.end.getTime() - p.start.getTime();
        expect(length).toBeGreaterThanOrEqual(28 * DAY);
        expect(length).toBeLessThanOrEqual(31 * DAY);
        expect(p.start.getTime()).toBe(addMonths(anchor, k).getTime());
      }),
    );
  });
});

describe("allowancePeriodIndex", () => {
  const anchor = utc("2030-01-31T09:30:00Z");

  it("is 0 at the anchor itself", () => {
    expect(allowancePeriodIndex(anchor, anchor)).toBe(0);
  });

  it("a boundary instant belongs to the next period; 1 ms before it to the previous one", () => {
    for (const k of [1, 2, 3, 12, 13, 25]) {
      const boundary = addMonths(anchor, k);
      expect(allowancePeriodIndex(anchor, boundary)).toBe(k);
      expect(allowancePeriodIndex(anchor, before(boundary))).toBe(k - 1);
    }
  });

  it("uses the clamped boundary, not the calendar day: Feb 28 09:29 is still period 0, Mar 30 is period 1", () => {
    expect(allowancePeriodIndex(anchor, utc("2030-02-28T09:29:59.999Z"))).toBe(0);
    expect(allowancePeriodIndex(anchor, utc("2030-02-28T09:30:00Z"))).toBe(1);
    expect(allowancePeriodIndex(anchor, utc("2030-03-30T23:00:00Z"))).toBe(1);
    expect(allowancePeriodIndex(anchor, utc("2030-03-31T09:30:00Z"))).toBe(2);
  });

  it("throws for an instant before the anchor", () => {
    expect(() => allowancePeriodIndex(anchor, before(anchor))).toThrow(RangeError);
    expect(() => allowancePeriodIndex(anchor, utc("2029-12-31T00:00:00Z"))).toThrow(RangeError);
  });

  it("property: the period with that index contains the instant", () => {
    fc.assert(
      fc.property(anchorArb, fc.integer({ min: 0, max: 10 * 366 * DAY }), (a, offset) => {
        const now = new Date(a.getTime() + offset);
        const k = allowancePeriodIndex(a, now);
        const p = allowancePeriod(a, k);
        expect(k).toBeGreaterThanOrEqual(0);
        expect(p.start.getTime()).toBeLessThanOrEqual(now.getTime());
        expect(now.getTime()).toBeLessThan(p.end.getTime());
      }),
    );
  });

  it("property: exactly at addMonths(anchor, k) the index is k, 1 ms earlier it is k − 1", () => {
    fc.assert(
      fc.property(anchorArb, fc.integer({ min: 1, max: 240 }), (a, k) => {
        const boundary = addMonths(a, k);
        expect(allowancePeriodIndex(a, boundary)).toBe(k);
        expect(allowancePeriodIndex(a, before(boundary))).toBe(k - 1);
      }),
    );
  });
});

describe("billingPeriod", () => {
  const anchor = utc("2030-01-31T09:30:00Z");

  it("on a monthly plan is the allowance period", () => {
    for (const now of [anchor, utc("2030-03-01T00:00:00Z"), utc("2031-02-28T09:30:00Z")]) {
      expect(billingPeriod(anchor, "MONTH", now)).toEqual(allowancePeriod(anchor, allowancePeriodIndex(anchor, now)));
    }
  });

  it("on a yearly plan is the anchor year: 12 allowance periods", () => {
    const year = billingPeriod(anchor, "YEAR", utc("2030-07-04T00:00:00Z"));
    expect(iso(year)).toEqual(["2030-01-31T09:30:00.000Z", "2031-01-31T09:30:00.000Z"]);
    expect(year.start).toEqual(allowancePeriod(anchor, 0).start);
    expect(year.end).toEqual(allowancePeriod(anchor, 11).end);
  });

  it("a yearly boundary belongs to the next year; 1 ms before it to the current one", () => {
    const boundary = addMonths(anchor, 12);
    expect(iso(billingPeriod(anchor, "YEAR", before(boundary)))).toEqual(["2030-01-31T09:30:00.000Z", "2031-01-31T09:30:00.000Z"]);
    expect(iso(billingPeriod(anchor, "YEAR", boundary))).toEqual(["2031-01-31T09:30:00.000Z", "2032-01-31T09:30:00.000Z"]);
  });

  it("a yearly period from Feb 29 ends on Feb 28 of the next year", () => {
    expect(iso(billingPeriod(utc("2028-02-29T00:00:00Z"), "YEAR", utc("2028-12-01T00:00:00Z")))).toEqual([
      "2028-02-29T00:00:00.000Z",
      "2029-02-28T00:00:00.000Z",
    ]);
  });

  it("property: a yearly billing period is exactly the 12 allowance periods 12y … 12y + 11 and contains now", () => {
    fc.assert(
      fc.property(anchorArb, fc.integer({ min: 0, max: 10 * 366 * DAY }), (a, offset) => {
        const now = new Date(a.getTime() + offset);
        const k = allowancePeriodIndex(a, now);
        const y = Math.floor(k / 12);
        const year = billingPeriod(a, "YEAR", now);
        expect(year.start).toEqual(allowancePeriod(a, 12 * y).start);
        expect(year.end).toEqual(allowancePeriod(a, 12 * y + 11).end);
        expect(year.start.getTime()).toBeLessThanOrEqual(now.getTime());
        expect(now.getTime()).toBeLessThan(year.end.getTime());
      }),
    );
  });
});

describe("prorate: amount × remaining / total, rounded to the minor unit, halves away from zero", () => {
  it.each([
    ["2000 × 20/30 days = 1333.33 → 1333", 2000n, 20 * DAY, 30 * DAY, 1333n],
    ["1000 × 20/30 days = 666.67 → 667", 1000n, 20 * DAY, 30 * DAY, 667n],
    ["1500 × 1/2 = 750", 1500n, 1, 2, 750n],
    ["1 × 1/2 = 0.5 → 1 (half rounds up)", 1n, 1, 2, 1n],
    ["−1 × 1/2 = −0.5 → −1 (half rounds away from zero)", -1n, 1, 2, -1n],
    ["5 × 1/2 = 2.5 → 3", 5n, DAY, 2 * DAY, 3n],
    ["−5 × 1/2 = −2.5 → −3", -5n, DAY, 2 * DAY, -3n],
    ["−2000 × 20/30 = −1333.33 → −1333", -2000n, 20 * DAY, 30 * DAY, -1333n],
    ["1 × 1/3 = 0.33 → 0", 1n, 1, 3, 0n],
    ["2 × 1/3 = 0.67 → 1", 2n, 1, 3, 1n],
    ["20000 × 265/365 days = 14520.55 → 14521", 20000n, 265 * DAY, 365 * DAY, 14521n],
    ["20000 × 275/365 days = 15068.49 → 15068", 20000n, 275 * DAY, 365 * DAY, 15068n],
    ["nothing remaining → 0", 3000n, 0, 30 * DAY, 0n],
    ["the whole period remaining → the whole amount", 3000n, 31 * DAY, 31 * DAY, 3000n],
    ["1 ms short of the whole period → still the whole amount", 3000n, 31 * DAY - 1, 31 * DAY, 3000n],
    ["zero amount → 0", 0n, 5 * HOUR, DAY, 0n],
  ])("%s", (_name, amount, remaining, total, expected) => {
    expect(prorate(amount, remaining, total)).toBe(expected);
  });

  it("uses integer arithmetic: amounts beyond 2^53 stay exact", () => {
    expect(prorate(9_007_199_254_740_993n, 1, 1)).toBe(9_007_199_254_740_993n);
    expect(prorate(100_000_000_000_000_001n, 1, 2)).toBe(50_000_000_000_000_001n); // ….5 → up
    expect(prorate(10n ** 17n, 1, 3)).toBe(33_333_333_333_333_333n);
  });

  it("rejects a window that makes no sense", () => {
    expect(() => prorate(100n, 1, 0)).toThrow(RangeError);
    expect(() => prorate(100n, -1, 10)).toThrow(RangeError);
    expect(() => prorate(100n, 11, 10)).toThrow(RangeError);
  });

  const windowArb = fc.integer({ min: 1, max: 366 * DAY }).chain((total) => fc.tuple(fc.integer({ min: 0, max: total }), fc.constant(total)));

  it("property: 0 ≤ prorate(a, r, t) ≤ a for a ≥ 0", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 10n ** 15n }), windowArb, (a, [r, t]) => {
        const p = prorate(a, r, t);
        expect(p >= 0n && p <= a).toBe(true);
      }),
    );
  });

  it("property: the result is the nearest integer, a tie goes away from zero, and the sign is symmetric", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 10n ** 15n }), windowArb, (a, [r, t]) => {
        const p = prorate(a, r, t);
        const exact2 = 2n * a * BigInt(r); // 2 × a × r, compared with 2 × p × t
        const diff2 = 2n * p * BigInt(t) - exact2; // 2t × (p − a·r/t)
        expect(diff2 > -BigInt(t) && diff2 <= BigInt(t)).toBe(true); // −½ < p − x ≤ ½
        expect(prorate(-a, r, t)).toBe(-p);
      }),
    );
  });

  it("property: more time remaining never charges less", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 10n ** 12n }), windowArb, fc.nat(), (a, [r, t], extra) => {
        const r2 = Math.min(t, r + extra);
        expect(prorate(a, r2, t) >= prorate(a, r, t)).toBe(true);
      }),
    );
  });
});
