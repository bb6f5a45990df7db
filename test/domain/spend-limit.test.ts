import { describe, expect, it } from "vitest";
import { AccountBook } from "../../src/domain/account-book.js";
import { AccountConcurrency } from "../../src/domain/concurrency-limit.js";
import { commit, release, reserve } from "../../src/domain/holds.js";
import { AccountSpend, type SpendLimitSpec, type SpendLimitState } from "../../src/domain/spend-limit.js";
import { adjustment, at, DAY, failureOf, HOUR, T0, unwrap } from "./fixtures.js";

/** A book with team controls loaded (no running holds yet), funded with 10,000 credits. */
function book(limits: SpendLimitState[] = []): AccountBook {
  const b = new AccountBook("acct-1", [], [], null, 0, 1000, 0n, undefined, new AccountConcurrency([], new Map()), new AccountSpend(limits));
  adjustment(b, "fund", 10_000n, null, at(-2 * DAY));
  return b;
}

let n = 0;
function hold(b: AccountBook, amount: bigint, memberId = "", now = T0) {
  return reserve(b, { reservationId: `r-${++n}`, amount, ttlMs: DAY, metadata: {}, memberId }, now);
}

const dayLimit = (memberId: string, maxCredits: bigint, mode: "HARD" | "SOFT" = "HARD"): SpendLimitSpec => ({ memberId, period: "DAY", maxCredits, mode, timeZone: "UTC" });
const todayStart = new Date("2030-01-15T00:00:00Z");
const state = (spec: SpendLimitSpec, used = 0n, periodStart = todayStart): SpendLimitState => ({ ...spec, periodStart, used, reached: false });

describe("spend limits in the book", () => {
  it("a HARD limit admits up to max exactly (used + held + amount), then refuses and changes nothing", () => {
    const b = book([state(dayLimit("m", 100n), 30n)]);
    unwrap(hold(b, 70n, "m"));
    const entries = b.entries.length;
    const changes = b.changeCount;
    const f = failureOf(hold(b, 1n, "m"));
    expect(f.reason).toBe("SPEND_LIMIT_EXCEEDED");
    expect(f.metadata).toMatchObject({ scope: "member", used: "30", held: "70", requested: "1", limit: "100" });
    expect([b.entries.length, b.changeCount, b.spend!.changed.size]).toEqual([entries, changes, 0]);
    unwrap(hold(b, 1n, "other")); // another member is not limited
  });

  it("a counter of an ended period reads as 0 and is not rewritten by a check", () => {
    const b = book([state(dayLimit("", 100n), 100n, new Date("2030-01-14T00:00:00Z"))]);
    expect(b.spendView("", "DAY", T0)).toMatchObject({ used: 0n, remaining: 100n });
    unwrap(hold(b, 100n));
    expect(b.spend!.changed.size).toBe(0); // a Reserve holds; only a Commit counts
  });

  it("a Commit counts what it captured for holds started in the period; an earlier hold's capture goes to its own period", () => {
    const b = book([state(dayLimit("", 1000n))]);
    const early = unwrap(hold(b, 50n, "", at(-13 * HOUR))); // 2030-01-14T23:00Z: yesterday
    const today = unwrap(hold(b, 50n));
    unwrap(commit(b, early, 40n, T0));
    unwrap(commit(b, today, 30n, T0));
    expect(b.spendView("", "DAY", T0)).toMatchObject({ used: 30n, held: 0n });
    const released = unwrap(hold(b, 20n));
    unwrap(release(b, released, "GENERATION_FAILED", "", T0));
    expect(b.spendView("", "DAY", T0)).toMatchObject({ used: 30n, held: 0n, remaining: 970n });
  });

  it("the extra of a Commit above its hold is checked against HARD limits; refused, the hold stays open", () => {
    const b = book([state(dayLimit("m", 100n))]);
    const r = unwrap(hold(b, 60n, "m"));
    expect(failureOf(commit(b, r, 101n, T0))).toMatchObject({ reason: "SPEND_LIMIT_EXCEEDED", metadata: { requested: "41", held: "60" } });
    expect(r.status).toBe("HELD");
    unwrap(commit(b, r, 100n, T0));
    expect(b.spendView("m", "DAY", T0)).toMatchObject({ used: 100n, remaining: 0n });
  });

  it("a SOFT limit is passed once per period: the first Reserve past it is stated, later ones are not", () => {
    const b = book([state(dayLimit("", 50n, "SOFT"))]);
    unwrap(hold(b, 50n));
    expect(b.events.filter((e) => e.kind === "SPEND_LIMIT_REACHED")).toHaveLength(0);
    unwrap(hold(b, 1n));
    unwrap(hold(b, 1n));
    unwrap(hold(b, 60n, "", at(DAY)));
    const reached = b.events.filter((e) => e.kind === "SPEND_LIMIT_REACHED");
    expect(reached).toHaveLength(2);
    expect(reached[0]).toMatchObject({ requested: 1n, limit: { held: 50n, used: 0n } });
  });

  it("a new limit starts from the backfill read before the batch plus the batch's own Commits; without the backfill it asks for a retry", () => {
    const b = book();
    const r = unwrap(hold(b, 25n, "m"));
    unwrap(commit(b, r, 25n, T0));
    expect(failureOf(b.setSpendLimit(dayLimit("m", 100n), T0)).reason).toBe("STORE_UNAVAILABLE");
    b.spend!.learnCaptured("m", todayStart, 40n);
    expect(unwrap(b.setSpendLimit(dayLimit("m", 100n), T0))).toMatchObject({ used: 65n, remaining: 35n });
    // Replaced in the same zone: the counter stays.
    expect(unwrap(b.setSpendLimit(dayLimit("m", 70n), T0))).toMatchObject({ used: 65n, remaining: 5n });
  });

  it("RemoveSpendLimit of a limit that is not there is SPEND_LIMIT_NOT_FOUND", () => {
    const b = book([state(dayLimit("m", 100n))]);
    expect(failureOf(b.removeSpendLimit("m", "WEEK", T0)).reason).toBe("SPEND_LIMIT_NOT_FOUND");
    expect(unwrap(b.removeSpendLimit("m", "DAY", T0))).toMatchObject({ memberId: "m", period: "DAY" });
    expect([...b.spend!.removed.keys()]).toHaveLength(1);
  });
});
