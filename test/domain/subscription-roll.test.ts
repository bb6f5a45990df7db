import { describe as group, expect, it } from "vitest";
import { AccountBook } from "../../src/domain/account-book.js";
import { addMonths } from "../../src/domain/calendar.js";
import { commit, release } from "../../src/domain/holds.js";
import { applyDue } from "../../src/domain/maintenance.js";
import type { Plan } from "../../src/domain/plan.js";
import { describe } from "../../src/domain/subscription.js";
import {
  allocationsOf,
  allowanceBucket,
  BASIC,
  DAY,
  hold,
  HOUR,
  ledgerProblems,
  MINUTE,
  movements,
  newId,
  PRO_YEARLY,
  spend,
  subscribed,
  subscriptionBuckets,
  sumEntries,
  topUp,
  unwrap,
  utc,
} from "./fixtures.js";

const plus = (d: Date, ms: number) => new Date(d.getTime() + ms);

/** The same account as a new command would load it. */
function reloaded(book: AccountBook): AccountBook {
  return new AccountBook(book.accountId, book.allBuckets(), book.allReservations(), book.subscription);
}

/** Credits spent in allowance period k − 1 (k = 1 … 14): none, some, all, one. */
const SPENT = [0n, 150n, 999n, 1000n, 1n, 500n, 250n, 0n, 700n, 333n, 1000n, 42n, 10n, 800n];
/** How long after boundary k the account is next touched: exactly at it, hours or days later. */
const TOUCHED_AFTER = [0, 5 * HOUR, 2 * DAY, 1, 0, MINUTE, 0, 36 * HOUR, 0, 0, 2 * DAY, 0, HOUR, 0];

group.each([
  { name: "monthly Basic from Jan 31 (clamped months)", plan: BASIC, anchor: utc("2030-01-31T00:00:00Z") },
  { name: "yearly Pro from Mar 15 09:30", plan: PRO_YEARLY, anchor: utc("2030-03-15T09:30:00Z") },
])("a 14-month timeline: $name", ({ plan, anchor }: { plan: Plan; anchor: Date }) => {
  it("each month grants exactly one new SUBSCRIPTION bucket with the allowance, and the previous month's unused allowance expires at the boundary", () => {
    const { book, sub } = subscribed(plan, anchor, `acct-${plan.planId}`);
    const allowance = plan.monthlyAllowance;
    let previous = allowanceBucket(book);
    for (let k = 1; k <= 14; k += 1) {
      const periodStart = addMonths(anchor, k - 1);
      const mid = plus(periodStart, 3 * DAY);
      // Mid-period, nothing is due.
      const quiet = reloaded(book);
      expect(applyDue(quiet, mid, newId), `period ${k - 1} mid`).toBe(false);
      expect(quiet.entries).toEqual([]);
      const spent = SPENT[k - 1] ?? 0n;
      if (spent > 0n) spend(book, `gen-${k}`, spent, mid);
      expect(previous.remaining).toBe(allowance - spent);

      const boundary = addMonths(anchor, k);
      const now = plus(boundary, TOUCHED_AFTER[k - 1] ?? 0);
      const n = book.entries.length;
      expect(applyDue(book, now, newId), `boundary ${k}`).toBe(true);
      const current = allowanceBucket(book);
      expect(current.id).not.toBe(previous.id);
      const unused = allowance - spent;
      expect(movements(book, n), `boundary ${k}`).toEqual([
        ...(unused > 0n ? [["EXPIRE", previous.id, unused]] : []),
        ["GRANT", current.id, allowance],
      ]);
      expect(previous).toMatchObject({ remaining: 0n, held: 0n });
      expect(current).toMatchObject({
        kind: "SUBSCRIPTION",
        granted: allowance,
        remaining: allowance,
        held: 0n,
        validFrom: boundary,
        expiresAt: addMonths(anchor, k + 1),
      });
      expect(subscriptionBuckets(book)).toHaveLength(k + 1);
      expect(sub.grantedPeriod).toBe(k);
      expect(book.available(now)).toBe(allowance);
      const view = describe(sub, now);
      expect(view.allowancePeriod).toEqual({ start: boundary, end: addMonths(anchor, k + 1) });
      if (plan.interval === "YEAR") {
        const year = k < 12 ? 0 : 1;
        expect(view.billingPeriod).toEqual({ start: addMonths(anchor, 12 * year), end: addMonths(anchor, 12 * (year + 1)) });
      } else {
        expect(view.billingPeriod).toEqual(view.allowancePeriod);
      }
      expect(ledgerProblems(book), `boundary ${k}`).toEqual([]);
      previous = current;
    }
    const totalSpent = SPENT.reduce((a, b) => a + b, 0n);
    expect(sumEntries(book, ["GRANT"])).toBe(15n * allowance);
    expect(sumEntries(book, ["CAPTURE"])).toBe(totalSpent);
    expect(sumEntries(book, ["EXPIRE"])).toBe(14n * allowance - totalSpent);
  });
});

group("missed months grant nothing retroactively", () => {
  it("an account untouched for 5 months: one applyDue grants only the current period (one GRANT, grantedPeriod jumps)", () => {
    const anchor = utc("2030-01-01T00:00:00Z");
    const { book, sub } = subscribed(BASIC, anchor);
    const first = allowanceBucket(book);
    spend(book, "gen-1", 100n, utc("2030-01-02T00:00:00Z"));
    const now = utc("2030-06-15T12:00:00Z"); // period 5: Jun 1 – Jul 1
    const n = book.entries.length;
    expect(applyDue(book, now, newId)).toBe(true);
    const current = allowanceBucket(book);
    expect(movements(book, n)).toEqual([
      ["EXPIRE", first.id, 900n],
      ["GRANT", current.id, 1000n],
    ]);
    expect(sub.grantedPeriod).toBe(5);
    expect(current).toMatchObject({ granted: 1000n, remaining: 1000n, validFrom: utc("2030-06-01T00:00:00Z"), expiresAt: utc("2030-07-01T00:00:00Z") });
    expect(subscriptionBuckets(book)).toHaveLength(2);
    expect(sumEntries(book, ["GRANT"])).toBe(2000n);
    expect(book.available(now)).toBe(1000n);
    // touching again in the same period does nothing
    const again = reloaded(book);
    expect(applyDue(again, utc("2030-06-30T23:59:59.999Z"), newId)).toBe(false);
    expect(again.entries).toEqual([]);
    expect(ledgerProblems(book)).toEqual([]);
  });

  it("a yearly subscriber untouched across the year end gets only the current month", () => {
    const anchor = utc("2030-01-01T00:00:00Z");
    const { book, sub } = subscribed(PRO_YEARLY, anchor);
    const now = utc("2031-02-10T00:00:00Z"); // period 13
    const n = book.entries.length;
    applyDue(book, now, newId);
    const current = allowanceBucket(book);
    expect(movements(book, n).filter(([kind]) => kind === "GRANT")).toEqual([["GRANT", current.id, 5000n]]);
    expect(sub.grantedPeriod).toBe(13);
    expect(current).toMatchObject({ validFrom: utc("2031-02-01T00:00:00Z"), expiresAt: utc("2031-03-01T00:00:00Z") });
    expect(describe(sub, now).billingPeriod).toEqual({ start: utc("2031-01-01T00:00:00Z"), end: utc("2032-01-01T00:00:00Z") });
    expect(book.available(now)).toBe(5000n);
    expect(ledgerProblems(book)).toEqual([]);
  });
});

group("a period boundary passing while a hold is open on the subscription bucket", () => {
  const ANCHOR = utc("2030-01-01T00:00:00Z");
  const FEB_1 = utc("2030-02-01T00:00:00Z");
  const AFTER = utc("2030-02-01T00:10:00Z");

  /** Basic from Jan 1; 200 spent; a 300-credit hold taken an hour before the boundary (24 h TTL); the account touched just after it. */
  function heldOverBoundary() {
    const { book, sub } = subscribed(BASIC, ANCHOR);
    const january = allowanceBucket(book);
    spend(book, "gen-0", 200n, utc("2030-01-10T00:00:00Z"));
    const r = hold(book, "gen-1", 300n, utc("2030-01-31T23:00:00Z"), 24 * HOUR);
    const n = book.entries.length;
    applyDue(book, utc("2030-02-01T00:05:00Z"), newId);
    const february = allowanceBucket(book);
    expect(movements(book, n)).toEqual([
      ["EXPIRE", january.id, 500n], // only the free credits expire
      ["GRANT", february.id, 1000n],
    ]);
    expect(january).toMatchObject({ remaining: 300n, held: 300n });
    expect(r.status).toBe("HELD");
    expect(book.available(AFTER)).toBe(1000n);
    expect(sub.grantedPeriod).toBe(1);
    return { book, r, january, february };
  }

  it("commit after the boundary captures the held credits", () => {
    const { book, r, january, february } = heldOverBoundary();
    const n = book.entries.length;
    unwrap(commit(book, r, 300n, AFTER));
    expect(movements(book, n)).toEqual([["CAPTURE", january.id, 300n]]);
    expect(january).toMatchObject({ remaining: 0n, held: 0n });
    expect(february).toMatchObject({ remaining: 1000n, held: 0n });
    expect(book.available(AFTER)).toBe(1000n);
    expect(ledgerProblems(book)).toEqual([]);
  });

  it("a partial commit after the boundary captures part; the rest returns and expires at once", () => {
    const { book, r, january } = heldOverBoundary();
    const n = book.entries.length;
    unwrap(commit(book, r, 250n, AFTER));
    expect(movements(book, n)).toEqual([
      ["CAPTURE", january.id, 250n],
      ["RELEASE", january.id, 50n],
      ["EXPIRE", january.id, 50n],
    ]);
    expect(january).toMatchObject({ remaining: 0n, held: 0n });
    expect(book.available(AFTER)).toBe(1000n);
    expect(ledgerProblems(book)).toEqual([]);
  });

  it("a commit above the hold after the boundary draws the extra from the new month's allowance", () => {
    const { book, r, january, february } = heldOverBoundary();
    const n = book.entries.length;
    unwrap(commit(book, r, 450n, AFTER));
    expect(movements(book, n)).toEqual([
      ["HOLD", february.id, 150n],
      ["CAPTURE", january.id, 300n],
      ["CAPTURE", february.id, 150n],
    ]);
    expect(allocationsOf(r)).toEqual([]);
    expect(february).toMatchObject({ remaining: 850n, held: 0n });
    expect(book.available(AFTER)).toBe(850n);
    expect(ledgerProblems(book)).toEqual([]);
  });

  it("release after the boundary returns the held credits and they expire at once", () => {
    const { book, r, january, february } = heldOverBoundary();
    const n = book.entries.length;
    unwrap(release(book, r, "GENERATION_FAILED", "", AFTER));
    expect(movements(book, n)).toEqual([
      ["RELEASE", january.id, 300n],
      ["EXPIRE", january.id, 300n],
    ]);
    expect(january).toMatchObject({ remaining: 0n, held: 0n });
    expect(february).toMatchObject({ remaining: 1000n, held: 0n });
    expect(book.available(AFTER)).toBe(1000n);
    expect(ledgerProblems(book)).toEqual([]);
  });

  it("a hold whose TTL runs out after the boundary is released by applyDue and its credits expire at once", () => {
    const { book, r, january } = heldOverBoundary();
    const n = book.entries.length;
    const later = utc("2030-02-01T23:00:00Z"); // the hold's expires_at
    expect(applyDue(book, later, newId)).toBe(true);
    expect(movements(book, n)).toEqual([
      ["RELEASE", january.id, 300n],
      ["EXPIRE", january.id, 300n],
    ]);
    expect(r.status).toBe("EXPIRED");
    expect(book.available(later)).toBe(1000n);
    expect(ledgerProblems(book)).toEqual([]);
  });

  it("the boundary applied exactly at the period end, with the hold still open", () => {
    const { book } = subscribed(BASIC, ANCHOR);
    const january = allowanceBucket(book);
    hold(book, "gen-1", 400n, utc("2030-01-31T23:59:00Z"), HOUR);
    applyDue(book, FEB_1, newId);
    expect(january).toMatchObject({ remaining: 400n, held: 400n });
    expect(book.available(FEB_1)).toBe(1000n);
    expect(book.held()).toBe(400n);
    expect(ledgerProblems(book)).toEqual([]);
  });
});

group("top-ups and the monthly reset", () => {
  it("a top-up bought mid-cycle is consumed before the allowance and survives the monthly reset", () => {
    const { book } = subscribed(BASIC, utc("2030-01-01T00:00:00Z"));
    const january = allowanceBucket(book);
    const top = topUp(book, "top-1", 500n, utc("2030-01-10T00:00:00Z")); // expires Mar 10
    expect(top.expiresAt).toEqual(utc("2030-03-10T00:00:00Z"));
    let n = book.entries.length;
    spend(book, "gen-1", 300n, utc("2030-01-12T00:00:00Z"));
    expect(movements(book, n).filter(([kind]) => kind === "CAPTURE")).toEqual([["CAPTURE", "top-1", 300n]]);
    expect([top.remaining, january.remaining]).toEqual([200n, 1000n]);

    n = book.entries.length;
    applyDue(book, utc("2030-02-01T00:00:00Z"), newId);
    const february = allowanceBucket(book);
    expect(movements(book, n)).toEqual([
      ["EXPIRE", january.id, 1000n],
      ["GRANT", february.id, 1000n],
    ]);
    expect(top.remaining).toBe(200n);
    expect(book.available(utc("2030-02-01T00:00:00Z"))).toBe(1200n);

    n = book.entries.length;
    spend(book, "gen-2", 100n, utc("2030-02-05T00:00:00Z"));
    expect(movements(book, n).filter(([kind]) => kind === "CAPTURE")).toEqual([["CAPTURE", "top-1", 100n]]);

    n = book.entries.length;
    applyDue(book, utc("2030-03-01T00:00:00Z"), newId);
    const march = allowanceBucket(book);
    expect(movements(book, n)).toEqual([
      ["EXPIRE", february.id, 1000n],
      ["GRANT", march.id, 1000n],
    ]);
    expect(top.remaining).toBe(100n);
    expect(book.available(utc("2030-03-01T00:00:00Z"))).toBe(1100n);

    // The top-up expires on its own date, not at a reset.
    n = book.entries.length;
    applyDue(book, utc("2030-03-10T00:00:00Z"), newId);
    expect(movements(book, n)).toEqual([["EXPIRE", "top-1", 100n]]);
    expect(book.available(utc("2030-03-10T00:00:00Z"))).toBe(1000n);
    expect(march.remaining).toBe(1000n);
    expect(ledgerProblems(book)).toEqual([]);
  });

  it("a spend larger than the top-up takes the rest from the allowance, top-up first", () => {
    const { book } = subscribed(BASIC, utc("2030-01-01T00:00:00Z"));
    const january = allowanceBucket(book);
    topUp(book, "top-2", 500n, utc("2030-01-10T00:00:00Z"));
    const n = book.entries.length;
    spend(book, "gen-1", 700n, utc("2030-01-12T00:00:00Z"));
    expect(movements(book, n).filter(([kind]) => kind === "CAPTURE")).toEqual([
      ["CAPTURE", "top-2", 500n],
      ["CAPTURE", january.id, 200n],
    ]);
    expect(ledgerProblems(book)).toEqual([]);
  });
});
