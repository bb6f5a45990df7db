import { describe, expect, it } from "vitest";
import { AccountBook } from "../../src/domain/account-book.js";
import { expiryNoticeAt } from "../../src/domain/expiry-notice.js";
import { applyDue, nextChangeAt } from "../../src/domain/maintenance.js";
import { adjustment, at, DAY, hold, newBook, newId, subscription, T0, topUp } from "./fixtures.js";

const NOTICE = 7 * DAY;

function expiring(book: AccountBook, from = 0): [string, bigint][] {
  return book.events.slice(from).flatMap((e) => (e.kind === "CREDITS_EXPIRING" ? [[e.bucket.id, e.amount] as [string, bigint]] : []));
}

describe("CREDITS_EXPIRING", () => {
  it("falls due `notice` before the expiry, once per bucket, with the free credits", () => {
    const book = newBook();
    const adj = adjustment(book, "adj", 100n, at(10 * DAY));
    hold(book, "r", 30n, T0, DAY);
    expect(expiryNoticeAt(adj, NOTICE)).toEqual(at(3 * DAY));
    // Just before: the hold expires (its credits come back), but no notice yet.
    let n = book.events.length;
    applyDue(book, at(3 * DAY - 1), newId, NOTICE);
    expect(book.events.slice(n).map((e) => e.kind)).toEqual(["HOLD_EXPIRED"]);
    n = book.events.length;
    expect(applyDue(book, at(3 * DAY), newId, NOTICE)).toBe(true);
    expect(expiring(book, n)).toEqual([["adj", 100n]]);
    expect(adj.expiryNoticed).toBe(true);
    expect(book.changedBuckets.has("adj")).toBe(true);
    const m = book.events.length;
    expect(applyDue(book, at(5 * DAY), newId, NOTICE)).toBe(false);
    expect(expiring(book, m)).toEqual([]);
  });

  it("tells only the free credits of the buckets that have some; none for subscriptions, never-expiring buckets, or notice 0", () => {
    const book = newBook();
    topUp(book, "top", 50n, T0, 1); // expires in a month
    subscription(book, "sub", 1000n, at(5 * DAY));
    adjustment(book, "forever", 10n, null);
    const spent = adjustment(book, "spent", 20n, at(6 * DAY));
    hold(book, "all", 70n, T0, 40 * DAY); // takes the top-up's 50 and the spent bucket's 20
    expect(spent.remaining - spent.held).toBe(0n);
    const fresh = new AccountBook(book.accountId, book.allBuckets(), book.allReservations());
    expect(applyDue(fresh, at(DAY), newId, 0)).toBe(false);
    const n = fresh.events.length;
    applyDue(fresh, at(2 * DAY), newId, 40 * DAY);
    expect(expiring(fresh, n)).toEqual([]); // top-up all held, spent all held, subscription and never-expiring excluded
  });

  it("counts the notice instant as due in nextChangeAt", () => {
    const book = newBook();
    adjustment(book, "adj", 100n, at(10 * DAY));
    expect(nextChangeAt(book, T0, null, NOTICE)).toEqual(at(3 * DAY));
    expect(nextChangeAt(book, T0, null)).toEqual(at(10 * DAY)); // without notices: the expiry itself
    applyDue(book, at(3 * DAY), newId, NOTICE);
    expect(nextChangeAt(book, at(3 * DAY), null, NOTICE)).toEqual(at(10 * DAY)); // noticed: only the expiry is left
  });
});
