import { describe, expect, it } from "vitest";
import { AccountBook } from "../../src/domain/account-book.js";
import type { Bucket } from "../../src/domain/bucket.js";
import { assertConserved } from "../../src/domain/conservation.js";
import { InvariantViolation } from "../../src/domain/errors.js";
import { commit, release, reserve } from "../../src/domain/holds.js";
import { applyDue } from "../../src/domain/maintenance.js";
import { adjustment, at, DAY, HOUR, MINUTE, newId, T0, topUp, unwrap } from "./fixtures.js";

/** A book as the store loads it: a bucket with history (granted 100, 30 spent, 20 held). */
function loadedBook(): { book: AccountBook; bucket: Bucket } {
  const bucket: Bucket = {
    id: "b1",
    accountId: "acct-1",
    kind: "TOP_UP",
    granted: 100n,
    remaining: 70n,
    held: 20n,
    validFrom: at(-DAY),
    expiresAt: at(10 * DAY),
    sourceRef: "pack:p",
    createdAt: at(-DAY),
  };
  return { book: new AccountBook("acct-1", [bucket], []), bucket };
}

describe("conservation before the write", () => {
  it("holds through every movement the domain makes: grants, holds, captures, releases, expiries", () => {
    const { book } = loadedBook();
    topUp(book, "top", 50n);
    adjustment(book, "adj", 5n, at(HOUR));
    const r1 = unwrap(reserve(book, { reservationId: "r1", amount: 60n, ttlMs: MINUTE, metadata: {} }, T0));
    unwrap(commit(book, r1, 40n, T0));
    const r2 = unwrap(reserve(book, { reservationId: "r2", amount: 10n, ttlMs: MINUTE, metadata: {} }, T0));
    unwrap(release(book, r2, "CANCELLED", "", T0));
    unwrap(reserve(book, { reservationId: "r3", amount: 3n, ttlMs: MINUTE, metadata: {} }, T0));
    applyDue(book, at(2 * HOUR), newId); // r3 falls due, the adjustment expires
    expect(book.entries.map((e) => e.kind)).toContain("EXPIRE");
    expect(() => assertConserved(book)).not.toThrow();
  });

  it("fails when a loaded bucket's amount moved without an entry saying so", () => {
    const { book, bucket } = loadedBook();
    unwrap(reserve(book, { reservationId: "r1", amount: 5n, ttlMs: MINUTE, metadata: {} }, T0));
    expect(() => assertConserved(book)).not.toThrow();
    bucket.remaining -= 1n; // a write that lost a credit: no CAPTURE or EXPIRE says where it went
    expect(() => assertConserved(book)).toThrow(InvariantViolation);
    expect(() => assertConserved(book)).toThrow(/bucket b1 is not conserved: remaining moved -1, entries say 0/);
  });

  it("fails when an entry claims a movement the bucket did not make", () => {
    const { book } = loadedBook();
    book.entries.push({ kind: "GRANT", bucketId: "b1", reservationId: null, amount: 7n, metadata: {}, automatic: false, memberId: "" });
    book.changedBuckets.add("b1");
    expect(() => assertConserved(book)).toThrow(/bucket b1 is not conserved/);
  });

  it("fails when a bucket holds more than it has, even if the entries agree", () => {
    const { book, bucket } = loadedBook();
    const r = unwrap(reserve(book, { reservationId: "r1", amount: 50n, ttlMs: MINUTE, metadata: {} }, T0));
    expect(r.heldAmount).toBe(50n);
    bucket.held += 1n;
    bucket.remaining += 0n;
    book.entries.push({ kind: "HOLD", bucketId: "b1", reservationId: "r1", amount: 1n, metadata: {}, automatic: false, memberId: "" });
    expect(() => assertConserved(book)).toThrow(/bucket b1 is out of bounds/);
  });
});
