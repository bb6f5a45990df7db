import { describe, expect, it } from "vitest";
import { AccountBook } from "../../src/domain/account-book.js";
import { commit, release } from "../../src/domain/holds.js";
import { applyDue } from "../../src/domain/maintenance.js";
import { at, DAY, hold, MINUTE, movements, newBook, remainingHeld, stateOf, subscription, T0, topUp, unwrap, newId } from "./fixtures.js";

describe("applyDue: overdue holds", () => {
  it("releases an overdue hold: status EXPIRED, every credit back, entries automatic=true", () => {
    const book = newBook();
    const top = topUp(book, "top", 10n);
    const sub = subscription(book, "sub", 100n, at(30 * DAY));
    const r = hold(book, "r1", 25n, T0, 15 * MINUTE);
    const n = book.entries.length;
    expect(applyDue(book, at(15 * MINUTE), newId)).toBe(true); // due exactly at expiresAt
    expect(r.status).toBe("EXPIRED");
    expect([r.releasedAmount, r.capturedAmount, r.allocations]).toEqual([25n, 0n, []]);
    expect(r.settledAt).toEqual(at(15 * MINUTE));
    expect(movements(book, n)).toEqual([
      ["RELEASE", "top", 10n],
      ["RELEASE", "sub", 15n],
    ]);
    expect(book.entries.slice(n).every((e) => e.automatic && e.reservationId === "r1")).toBe(true);
    expect(remainingHeld(top, sub)).toEqual(["10/0", "100/0"]);
    expect(book.available(at(15 * MINUTE))).toBe(110n);
  });

  it("leaves holds that are not yet due alone", () => {
    const book = newBook();
    subscription(book, "sub", 100n, null);
    const r = hold(book, "r1", 25n, T0, 15 * MINUTE);
    const fresh = new AccountBook(book.accountId, book.allBuckets(), book.allReservations());
    expect(applyDue(fresh, at(15 * MINUTE - 1), newId)).toBe(false);
    expect(r.status).toBe("HELD");
    expect(fresh.entries).toEqual([]);
  });

  it("only expires HELD reservations: settled ones are left as they are", () => {
    const book = newBook();
    subscription(book, "sub", 100n, null);
    const committed = hold(book, "c", 5n, T0, MINUTE);
    const released = hold(book, "r", 5n, T0, MINUTE);
    unwrap(commit(book, committed, 5n, at(1)));
    unwrap(release(book, released, "CANCELLED", "", at(1)));
    const n = book.entries.length;
    applyDue(book, at(DAY), newId);
    expect([committed.status, released.status]).toEqual(["COMMITTED", "RELEASED"]);
    expect(book.entries.length).toBe(n);
  });
});

describe("applyDue: expired buckets", () => {
  it("expires the free credits of an expired bucket with an automatic EXPIRE entry", () => {
    const book = newBook();
    const top = topUp(book, "top", 10n);
    const sub = subscription(book, "sub", 100n, at(30 * DAY));
    const n = book.entries.length;
    expect(applyDue(book, at(30 * DAY), newId)).toBe(true);
    expect(movements(book, n)).toEqual([["EXPIRE", "sub", 100n]]);
    expect([book.entries[n]?.automatic, book.entries[n]?.reservationId]).toEqual([true, null]);
    expect(remainingHeld(sub, top)).toEqual(["0/0", "10/0"]);
    // nothing left to do: a second pass on a fresh book is a no-op
    const fresh = new AccountBook(book.accountId, book.allBuckets(), []);
    expect(applyDue(fresh, at(31 * DAY), newId)).toBe(false);
  });

  it("does not expire the held part of an expired bucket while its hold is open", () => {
    const book = newBook();
    const top = topUp(book, "top", 10n); // expires 2030-03-15T12:00Z
    subscription(book, "sub", 100n, null);
    const r = hold(book, "r1", 4n, at(-1, top.expiresAt ?? T0), DAY);
    const n = book.entries.length;
    applyDue(book, top.expiresAt ?? T0, newId);
    expect(movements(book, n)).toEqual([["EXPIRE", "top", 6n]]);
    expect(stateOf(top)).toEqual({ remaining: 4n, held: 4n });
    expect(r.status).toBe("HELD");
    expect(book.available(top.expiresAt ?? T0)).toBe(100n);
  });
});

describe("a top-up expiring while held", () => {
  const purchase = new Date("2030-01-31T09:30:00Z");
  const expiry = new Date("2030-03-31T09:30:00Z");

  function heldAcrossExpiry() {
    const book = newBook();
    const top = topUp(book, "top", 50n, purchase);
    subscription(book, "sub", 100n, null, purchase);
    const r = hold(book, "r1", 60n, at(-10 * MINUTE, expiry), 6 * 60 * MINUTE);
    applyDue(book, at(MINUTE, expiry), newId); // the sweeper runs after the bucket's expiry
    return { book, top, r };
  }

  it("the held part can still be committed (captured) after the bucket's expiry", () => {
    const { book, top, r } = heldAcrossExpiry();
    expect(top.expiresAt).toEqual(expiry);
    expect(stateOf(top)).toEqual({ remaining: 50n, held: 50n });
    const n = book.entries.length;
    unwrap(commit(book, r, 60n, at(2 * MINUTE, expiry)));
    expect(movements(book, n)).toEqual([
      ["CAPTURE", "top", 50n],
      ["CAPTURE", "sub", 10n],
    ]);
    expect(stateOf(top)).toEqual({ remaining: 0n, held: 0n });
  });

  it("if released, the held part of the expired top-up expires immediately", () => {
    const { book, top, r } = heldAcrossExpiry();
    const n = book.entries.length;
    unwrap(release(book, r, "GENERATION_FAILED", "", at(2 * MINUTE, expiry)));
    expect(movements(book, n)).toEqual([
      ["RELEASE", "top", 50n],
      ["EXPIRE", "top", 50n],
      ["RELEASE", "sub", 10n],
    ]);
    expect(stateOf(top)).toEqual({ remaining: 0n, held: 0n });
    expect(book.available(at(2 * MINUTE, expiry))).toBe(100n);
  });

  it("if the hold itself runs out after the top-up expired, applyDue releases and expires it", () => {
    const { book, top, r } = heldAcrossExpiry();
    const n = book.entries.length;
    applyDue(book, r.expiresAt, newId);
    expect(r.status).toBe("EXPIRED");
    expect(movements(book, n)).toEqual([
      ["RELEASE", "top", 50n],
      ["EXPIRE", "top", 50n],
      ["RELEASE", "sub", 10n],
    ]);
    expect(book.entries.slice(n).every((e) => e.automatic)).toBe(true);
    expect(stateOf(top)).toEqual({ remaining: 0n, held: 0n });
  });
});
