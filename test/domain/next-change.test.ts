import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AccountBook } from "../../src/domain/account-book.js";
import type { Bucket } from "../../src/domain/bucket.js";
import { applyDue, nextChangeAt } from "../../src/domain/maintenance.js";
import { addMonths } from "../../src/domain/calendar.js";
import { adjustment, at, BASIC_YEARLY, DAY, hold, MINUTE, newBook, newId, PRO, subscribed, T0, topUp } from "./fixtures.js";

/** The book as a later read would load it: the same buckets and subscription, no pending changes. */
function reloaded(book: AccountBook): AccountBook {
  const copy = (b: Bucket): Bucket => ({ ...b });
  return new AccountBook(book.accountId, book.allBuckets().map(copy), [], book.subscription ? { ...book.subscription } : null);
}

/** What GetBalance shows, without its as-of time. */
function shown(book: AccountBook, now: Date) {
  const { asOf: _asOf, ...rest } = book.balance(now);
  return rest;
}

describe("nextChangeAt: until when a balance read stays exact", () => {
  it("is null for an account where nothing ever falls due", () => {
    const book = newBook();
    adjustment(book, "adj", 50n, null);
    expect(nextChangeAt(reloaded(book), T0, null)).toBeNull();
  });

  it("is the earliest of a bucket's expiry, a not-yet-valid bucket's start and the next hold's expiry", () => {
    const book = newBook();
    topUp(book, "top", 10n, T0, 2); // expires two months on
    adjustment(book, "adj", 5n, at(10 * DAY));
    expect(nextChangeAt(reloaded(book), T0, null)).toEqual(at(10 * DAY));
    expect(nextChangeAt(reloaded(book), T0, at(3 * DAY))).toEqual(at(3 * DAY));
    expect(nextChangeAt(reloaded(book), at(11 * DAY), null)).toEqual(addMonths(T0, 2));
  });

  it("is now when a hold is already due (a read must settle it, not cache it)", () => {
    const book = newBook();
    adjustment(book, "adj", 50n, null);
    hold(book, "r1", 5n, T0, MINUTE);
    expect(nextChangeAt(reloaded(book), at(2 * MINUTE), at(MINUTE))).toEqual(at(2 * MINUTE));
  });

  it("ends at the allowance period's end on a monthly plan, and a scheduled change's start", () => {
    const { book } = subscribed(PRO, T0);
    expect(nextChangeAt(reloaded(book), at(DAY), null)).toEqual(addMonths(T0, 1));
    const yearly = subscribed(BASIC_YEARLY, T0).book;
    yearly.subscription!.scheduled = { plan: PRO, effectiveAt: at(5 * DAY) };
    expect(nextChangeAt(reloaded(yearly), at(DAY), null)).toEqual(at(5 * DAY));
  });

  it("property: before that instant the balance shown is the same and nothing is due; at it, something may be", () => {
    const bucketArb = fc.record({
      validFromMin: fc.integer({ min: -600, max: 600 }),
      lifeMin: fc.option(fc.integer({ min: 1, max: 1200 }), { nil: null }),
      amount: fc.bigInt({ min: 1n, max: 1000n }),
    });
    fc.assert(
      fc.property(fc.array(bucketArb, { minLength: 1, maxLength: 5 }), fc.option(fc.integer({ min: 1, max: 1200 }), { nil: null }), fc.integer({ min: 0, max: 1000 }), (specs, holdMin, probe) => {
        const book = newBook();
        specs.forEach((s, i) => {
          const validFrom = at(s.validFromMin * MINUTE);
          const expiresAt = s.lifeMin === null ? null : new Date(validFrom.getTime() + s.lifeMin * MINUTE);
          book.addBucket({ id: `b${i}`, accountId: book.accountId, kind: "ADJUSTMENT", granted: s.amount, remaining: 0n, held: 0n, validFrom, expiresAt, sourceRef: `adj:${i}`, createdAt: validFrom }, "ADJUST", {});
        });
        const nextHold = holdMin === null ? null : at(holdMin * MINUTE);
        const first = reloaded(book);
        if (applyDue(first, T0, newId)) return; // a read would settle first, never cache
        const until = nextChangeAt(reloaded(book), T0, nextHold);
        const end = until?.getTime() ?? T0.getTime() + 2000 * MINUTE;
        const t = new Date(T0.getTime() + Math.floor(((end - T0.getTime()) * probe) / 1001));
        expect(t.getTime()).toBeLessThan(end);
        const later = reloaded(book);
        expect(applyDue(later, t, newId)).toBe(false);
        expect(shown(later, t)).toEqual(shown(reloaded(book), T0));
        if (nextHold) expect(t.getTime()).toBeLessThan(nextHold.getTime());
      }),
      { numRuns: 300 },
    );
  });
});
