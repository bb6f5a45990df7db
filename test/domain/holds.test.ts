import { describe, expect, it } from "vitest";
import { commit, expireReservation, extend, release, reserve } from "../../src/domain/holds.js";
import { applyDue } from "../../src/domain/maintenance.js";
import { currentlyHeld } from "../../src/domain/reservation.js";
import { adjustment, allocationsOf, at, DAY, failureOf, hold, HOUR, MINUTE, movements, newBook, remainingHeld, stateOf, subscription, T0, topUp, unwrap, newId } from "./fixtures.js";

/** top-up 10 (expires in 2 months), adjustment 20 (expires in 5 days), subscription 100 (30 days). */
function threeBuckets() {
  const book = newBook();
  const top = topUp(book, "top", 10n);
  const adj = adjustment(book, "adj", 20n, at(5 * DAY));
  const sub = subscription(book, "sub", 100n, at(30 * DAY));
  return { book, top, adj, sub };
}

describe("reserve", () => {
  it("reserve is all or nothing: insufficient credits fails with INSUFFICIENT_CREDITS and changes nothing", () => {
    const book = newBook();
    const top = topUp(book, "top", 10n);
    const sub = subscription(book, "sub", 5n, null);
    const before = book.entries.length;
    const failure = failureOf(reserve(book, { reservationId: "r1", amount: 16n, ttlMs: MINUTE, metadata: {} }, T0));
    expect(failure.reason).toBe("INSUFFICIENT_CREDITS");
    expect(failure.metadata).toEqual({ requested: "16", available: "15" });
    expect(book.entries.length).toBe(before);
    expect(book.allReservations()).toEqual([]);
    expect(remainingHeld(top, sub)).toEqual(["10/0", "5/0"]);
  });

  it("reserve on an empty book fails with available 0 and records no entry", () => {
    const book = newBook();
    const failure = failureOf(reserve(book, { reservationId: "r1", amount: 1n, ttlMs: MINUTE, metadata: {} }, T0));
    expect(failure.metadata).toEqual({ requested: "1", available: "0" });
    expect(book.entries).toEqual([]);
  });

  it("reserve of exactly the available amount succeeds and leaves 0 available", () => {
    const { book } = threeBuckets();
    const r = hold(book, "r1", 130n, T0, 15 * MINUTE);
    expect(r.status).toBe("HELD");
    expect(r.heldAmount).toBe(130n);
    expect(r.expiresAt).toEqual(at(15 * MINUTE));
    expect(book.available(T0)).toBe(0n);
    expect(book.held()).toBe(130n);
  });
});

describe("commit", () => {
  it("partial commit captures the actual amount and returns the rest to the buckets it came from", () => {
    const { book, top, adj, sub } = threeBuckets();
    const r = hold(book, "r1", 40n);
    expect(allocationsOf(r)).toEqual([["top", 10n], ["adj", 20n], ["sub", 10n]]);
    const n = book.entries.length;
    const settled = unwrap(commit(book, r, 15n, at(MINUTE)));
    expect(settled.repeated).toBe(false);
    expect(r.status).toBe("COMMITTED");
    expect([r.capturedAmount, r.releasedAmount, currentlyHeld(r)]).toEqual([15n, 25n, 0n]);
    expect(r.settledAt).toEqual(at(MINUTE));
    expect(movements(book, n)).toEqual([["CAPTURE", "top", 10n], ["CAPTURE", "adj", 5n], ["RELEASE", "adj", 15n], ["RELEASE", "sub", 10n]]);
    expect(remainingHeld(top, adj, sub)).toEqual(["0/0", "15/0", "100/0"]);
    expect(book.available(at(MINUTE))).toBe(115n);
  });

  it("commit above the hold draws the extra from available credits in consumption order", () => {
    const { book, top, adj, sub } = threeBuckets();
    const r = hold(book, "r1", 5n);
    hold(book, "other", 3n); // top now has 2 free
    const n = book.entries.length;
    unwrap(commit(book, r, 30n, at(MINUTE)));
    expect(movements(book, n).filter(([k]) => k === "HOLD")).toEqual([["HOLD", "top", 2n], ["HOLD", "adj", 20n], ["HOLD", "sub", 3n]]);
    expect(r.capturedAmount).toBe(30n);
    expect(r.releasedAmount).toBe(0n);
    expect(remainingHeld(top, adj, sub)).toEqual(["3/3", "0/0", "97/0"]);
  });

  it("commit above the hold with the extra unavailable fails with INSUFFICIENT_CREDITS and leaves the hold HELD and unchanged", () => {
    const { book, top, adj, sub } = threeBuckets();
    const r = hold(book, "r1", 100n);
    const n = book.entries.length;
    const allocations = allocationsOf(r);
    const buckets = [stateOf(top), stateOf(adj), stateOf(sub)];
    const failure = failureOf(commit(book, r, 131n, at(MINUTE)));
    expect(failure.reason).toBe("INSUFFICIENT_CREDITS");
    expect(failure.metadata).toEqual({ requested: "31", available: "30" });
    expect(book.entries.length).toBe(n);
    expect(r.status).toBe("HELD");
    expect(allocationsOf(r)).toEqual(allocations);
    expect([r.capturedAmount, r.releasedAmount, r.settledAt]).toEqual([0n, 0n, null]);
    expect([stateOf(top), stateOf(adj), stateOf(sub)]).toEqual(buckets);
    // the hold is still open: it can be committed for what is there
    expect(unwrap(commit(book, r, 130n, at(MINUTE))).reservation.capturedAmount).toBe(130n);
  });

  it("commit of 0 captures nothing and returns every credit", () => {
    const { book, top, sub } = threeBuckets();
    const r = hold(book, "r1", 50n);
    const n = book.entries.length;
    unwrap(commit(book, r, 0n, at(MINUTE)));
    expect(r.status).toBe("COMMITTED");
    expect([r.capturedAmount, r.releasedAmount]).toEqual([0n, 50n]);
    expect(movements(book, n).every(([k]) => k === "RELEASE")).toBe(true);
    expect(book.available(at(MINUTE))).toBe(130n);
    expect([top.held, sub.held]).toEqual([0n, 0n]);
  });
});

describe("release", () => {
  it("release returns every credit to the bucket it came from", () => {
    const { book, top, adj, sub } = threeBuckets();
    const r = hold(book, "r1", 35n);
    const n = book.entries.length;
    unwrap(release(book, r, "GENERATION_FAILED", "runner crashed", at(MINUTE)));
    expect(r.status).toBe("RELEASED");
    expect([r.releaseReason, r.releaseDetail, r.releasedAmount, r.capturedAmount]).toEqual(["GENERATION_FAILED", "runner crashed", 35n, 0n]);
    expect(movements(book, n)).toEqual([["RELEASE", "top", 10n], ["RELEASE", "adj", 20n], ["RELEASE", "sub", 5n]]);
    expect(remainingHeld(top, adj, sub)).toEqual(["10/0", "20/0", "100/0"]);
    expect(book.available(at(MINUTE))).toBe(130n);
  });

  it("credits returning to a bucket that expired meanwhile expire at once with an EXPIRE entry", () => {
    const { book, adj } = threeBuckets();
    const r = hold(book, "r1", 25n, T0, 10 * DAY);
    const afterExpiry = at(6 * DAY); // adj expired at day 5
    const n = book.entries.length;
    unwrap(release(book, r, "INTERRUPTED", "", afterExpiry));
    expect(movements(book, n)).toEqual([["RELEASE", "top", 10n], ["RELEASE", "adj", 15n], ["EXPIRE", "adj", 15n]]);
    const expire = book.entries.at(-1);
    expect([expire?.reservationId, expire?.automatic]).toEqual(["r1", true]);
    expect(stateOf(adj)).toEqual({ remaining: 5n, held: 0n });
    expect(book.available(afterExpiry)).toBe(110n);
  });

  it("the rest of a partial commit returning to an expired bucket expires too", () => {
    const { book, adj, sub } = threeBuckets();
    const r = hold(book, "r1", 40n, T0, 10 * DAY);
    const n = book.entries.length;
    unwrap(commit(book, r, 12n, at(6 * DAY)));
    expect(movements(book, n)).toEqual([
      ["CAPTURE", "top", 10n],
      ["CAPTURE", "adj", 2n],
      ["RELEASE", "adj", 18n],
      ["EXPIRE", "adj", 18n],
      ["RELEASE", "sub", 10n],
    ]);
    expect(remainingHeld(adj, sub)).toEqual(["0/0", "100/0"]);
  });
});

describe("terminal states", () => {
  it("commit twice with the same amount returns the original result with repeated=true and no new entries", () => {
    const { book } = threeBuckets();
    const r = hold(book, "r1", 20n);
    unwrap(commit(book, r, 12n, at(MINUTE)));
    const n = book.entries.length;
    const again = unwrap(commit(book, r, 12n, at(2 * MINUTE)));
    expect(again.repeated).toBe(true);
    expect([again.reservation.capturedAmount, again.reservation.settledAt]).toEqual([12n, at(MINUTE)]);
    expect(book.entries.length).toBe(n);
  });

  it("commit with a different amount after commit fails with RESERVATION_NOT_HELD naming state COMMITTED", () => {
    const { book } = threeBuckets();
    const r = hold(book, "r1", 20n);
    unwrap(commit(book, r, 12n, at(MINUTE)));
    const failure = failureOf(commit(book, r, 13n, at(2 * MINUTE)));
    expect(failure.reason).toBe("RESERVATION_NOT_HELD");
    expect(failure.metadata).toEqual({ reservation_id: "r1", state: "COMMITTED" });
    expect(r.capturedAmount).toBe(12n);
  });

  it("commit after release fails with RESERVATION_NOT_HELD naming state RELEASED, even for 0", () => {
    const { book } = threeBuckets();
    const r = hold(book, "r1", 20n);
    unwrap(release(book, r, "CANCELLED", "", at(MINUTE)));
    const n = book.entries.length;
    for (const amount of [0n, 20n]) {
      const failure = failureOf(commit(book, r, amount, at(2 * MINUTE)));
      expect(failure.reason).toBe("RESERVATION_NOT_HELD");
      expect(failure.metadata["state"]).toBe("RELEASED");
    }
    expect(book.entries.length).toBe(n);
  });

  it("commit after expiry fails with RESERVATION_EXPIRED", () => {
    const { book } = threeBuckets();
    const r = hold(book, "r1", 20n, T0, 15 * MINUTE);
    applyDue(book, at(16 * MINUTE), newId);
    expect(r.status).toBe("EXPIRED");
    const failure = failureOf(commit(book, r, 20n, at(16 * MINUTE)));
    expect(failure.reason).toBe("RESERVATION_EXPIRED");
    expect(failure.metadata).toEqual({ reservation_id: "r1", state: "EXPIRED" });
  });

  it("release after commit fails with RESERVATION_NOT_HELD naming state COMMITTED", () => {
    const { book } = threeBuckets();
    const r = hold(book, "r1", 20n);
    unwrap(commit(book, r, 20n, at(MINUTE)));
    const n = book.entries.length;
    const failure = failureOf(release(book, r, "OTHER", "", at(2 * MINUTE)));
    expect(failure.reason).toBe("RESERVATION_NOT_HELD");
    expect(failure.metadata["state"]).toBe("COMMITTED");
    expect([r.status, book.entries.length]).toEqual(["COMMITTED", n]);
  });

  it("release after release or after expiry is ok with repeated=true and changes nothing", () => {
    const { book } = threeBuckets();
    const released = hold(book, "r1", 20n);
    unwrap(release(book, released, "CANCELLED", "first", at(MINUTE)));
    const expired = hold(book, "r2", 20n, T0, 5 * MINUTE);
    expireReservation(book, expired, at(6 * MINUTE));
    const n = book.entries.length;
    const again = unwrap(release(book, released, "OTHER", "second", at(7 * MINUTE)));
    expect([again.repeated, released.releaseReason, released.releaseDetail]).toEqual([true, "CANCELLED", "first"]);
    const afterExpiry = unwrap(release(book, expired, "OTHER", "", at(7 * MINUTE)));
    expect([afterExpiry.repeated, expired.status]).toEqual([true, "EXPIRED"]);
    expect(book.entries.length).toBe(n);
  });
});

describe("extend", () => {
  it("extend pushes the expiry to now + ttl", () => {
    const { book } = threeBuckets();
    const r = hold(book, "r1", 5n, T0, 15 * MINUTE);
    unwrap(extend(book, r, 30 * MINUTE, at(10 * MINUTE)));
    expect(r.expiresAt).toEqual(at(40 * MINUTE));
    expect(book.entries.filter((e) => e.reservationId === "r1")).toHaveLength(1); // only the HOLD
  });

  it("extend never moves the expiry earlier", () => {
    const { book } = threeBuckets();
    const r = hold(book, "r1", 5n, T0, 2 * HOUR);
    unwrap(extend(book, r, 15 * MINUTE, at(MINUTE)));
    expect(r.expiresAt).toEqual(at(2 * HOUR));
  });

  it("extend of an expired hold fails with RESERVATION_EXPIRED; of a settled one with RESERVATION_NOT_HELD", () => {
    const { book } = threeBuckets();
    const r = hold(book, "r1", 5n, T0, 15 * MINUTE);
    applyDue(book, at(20 * MINUTE), newId);
    expect(failureOf(extend(book, r, HOUR, at(20 * MINUTE))).reason).toBe("RESERVATION_EXPIRED");
    expect(r.expiresAt).toEqual(at(15 * MINUTE));
    const c = hold(book, "r2", 5n, at(20 * MINUTE));
    unwrap(commit(book, c, 5n, at(21 * MINUTE)));
    expect(failureOf(extend(book, c, HOUR, at(21 * MINUTE))).metadata["state"]).toBe("COMMITTED");
  });
});
