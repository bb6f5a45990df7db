import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AccountBook } from "../../src/domain/account-book.js";
import { counted, creditCount } from "../../src/domain/balance-limit.js";
import { boundedSourceRef } from "../../src/domain/bucket.js";
import { changePlan } from "../../src/domain/change-plan.js";
import { grantAdjustment, purchaseTopUp } from "../../src/domain/grants.js";
import { commit, extend, release, reserve } from "../../src/domain/holds.js";
import { MAX_ACCOUNT_CREDITS, MAX_BALANCE_BUCKETS, MAX_SOURCE_REF_BYTES } from "../../src/domain/limits.js";
import { applyDue } from "../../src/domain/maintenance.js";
import type { Plan } from "../../src/domain/plan.js";
import {
  adjustment,
  allowanceBucket,
  at,
  BASIC,
  BASIC_YEARLY,
  DAY,
  failureOf,
  hold,
  HOUR,
  makePlan,
  MINUTE,
  newBook,
  newId,
  pack,
  PRO,
  subscribed,
  T0,
  topUp,
  unwrap,
  utc,
} from "./fixtures.js";

/**
 * The account credit cap (src/domain/balance-limit.ts): what counts, which grants are refused
 * with BALANCE_LIMIT (and change nothing), and that nothing automatic — a period roll-over, a
 * hold falling due, an expiry — ever raises the count.
 */

const CAP = MAX_ACCOUNT_CREDITS;

/** Book state a refused call must leave as it was. */
function state(book: AccountBook): string {
  const buckets = book.allBuckets().map((b) => `${b.id}:${b.granted}/${b.remaining}/${b.held}/${b.expiresAt?.getTime()}`);
  const sub = book.subscription;
  const plan = sub ? `${sub.plan.planId}>${sub.scheduled?.plan.planId ?? "-"}@${sub.anchor.getTime()}` : "none";
  return [plan, book.entries.length, book.subscriptionChanged, ...buckets].join(";");
}

/** Adjustments of 10^15 until the account holds `total`. */
function fill(book: AccountBook, total: bigint, now: Date = T0): void {
  let i = 0;
  for (let left = total; left > 0n; left -= 10n ** 15n) adjustment(book, `fill-${i++}`, left < 10n ** 15n ? left : 10n ** 15n, null, now);
}

describe("what counts against the cap", () => {
  it("held credits (also on expired buckets), free credits of unexpired buckets, and the next allowance ahead of the subscription's free credits", () => {
    const { book } = subscribed(BASIC, T0); // 1,000 a month
    topUp(book, "t1", 300n);
    adjustment(book, "a1", 200n, at(HOUR));
    hold(book, "h1", 250n, T0, 2 * DAY); // from t1 (top-ups first)
    hold(book, "h2", 100n, T0, 2 * DAY); // 50 from t1, 50 from a1
    const later = at(2 * HOUR); // a1 has expired: its 50 held still count, its free 150 no longer
    applyDue(book, later, newId);
    expect(creditCount(book, later)).toEqual({ held: 350n, grants: 0n, subscription: 1_000n, allowances: [1_000n] });
    expect(counted(creditCount(book, later))).toBe(1_350n);

    // The subscription counts its next allowance when that is more than what is left of this one.
    hold(book, "h3", 600n, later);
    expect(counted(creditCount(book, later))).toBe(350n + 600n + 1_000n);
    unwrap(changePlan(book, makePlan("lower", 10n, 0n), later, newId)); // scheduled: the current allowance still counts
    expect(creditCount(book, later).allowances).toEqual([1_000n, 10n]);
    expect(counted(creditCount(book, later))).toBe(350n + 600n + 1_000n);
  });

  it("everything GetBalance shows is inside the count", () => {
    const { book } = subscribed(BASIC, T0);
    topUp(book, "t1", 300n);
    hold(book, "h1", 700n, T0);
    const view = book.balance(T0);
    expect(view.available + view.held).toBeLessThanOrEqual(counted(creditCount(book, T0)));
  });
});

describe("grants past the cap", () => {
  it("AdjustCredits and PurchaseTopUp up to the cap go through; one credit more is BALANCE_LIMIT and changes nothing", () => {
    const book = newBook();
    fill(book, CAP - 500n);
    unwrap(purchaseTopUp(book, { bucketId: "t-fits", pack: pack(500n), paymentReference: "pay-fits" }, T0));
    expect(book.available(T0)).toBe(CAP);
    const before = state(book);

    const adjust = failureOf(grantAdjustment(book, { bucketId: "a-over", amount: 1n, expiresAt: null, reason: "r", actor: "s" }, T0));
    expect(adjust).toEqual({
      reason: "BALANCE_LIMIT",
      message: `account acct-1 would hold more than ${CAP} credits: it holds ${CAP}, the grant adds 1`,
      metadata: { limit: `${CAP}`, account_credits: `${CAP}`, requested: "1" },
    });
    const buy = failureOf(purchaseTopUp(book, { bucketId: "t-over", pack: pack(7n), paymentReference: "pay-over" }, T0));
    expect([buy.reason, buy.metadata["requested"]]).toEqual(["BALANCE_LIMIT", "7"]);
    expect(state(book)).toBe(before);
  });

  it("spent and expired credits make room again; held ones do not", () => {
    const book = newBook();
    adjustment(book, "soon", 10n ** 15n, at(DAY));
    fill(book, CAP - 10n ** 15n);
    const r = hold(book, "h", 10n, T0);
    expect(grantAdjustment(book, { bucketId: "x1", amount: 1n, expiresAt: null, reason: "r", actor: "s" }, T0).ok).toBe(false);
    unwrap(commit(book, r, 10n, T0));
    unwrap(grantAdjustment(book, { bucketId: "x2", amount: 10n, expiresAt: null, reason: "r", actor: "s" }, T0));
    const nextDay = at(DAY + MINUTE);
    applyDue(book, nextDay, newId);
    // "soon" expired with 10^15 − 10 free credits: exactly that much fits again.
    expect(grantAdjustment(book, { bucketId: "x3", amount: 10n ** 15n - 9n, expiresAt: null, reason: "r", actor: "s" }, nextDay).ok).toBe(false);
    unwrap(grantAdjustment(book, { bucketId: "x4", amount: 10n ** 15n - 10n, expiresAt: null, reason: "r", actor: "s" }, nextDay));
    expect(counted(creditCount(book, nextDay))).toBe(CAP);
  });
});

describe("plan changes past the cap", () => {
  /** An account on `plan` whose count is exactly the cap. */
  function atCap(plan: Plan, anchor = utc("2030-04-01T00:00:00Z")) {
    const { book } = subscribed(plan, anchor);
    fill(book, CAP - plan.monthlyAllowance, anchor);
    expect(counted(creditCount(book, anchor))).toBe(CAP);
    return { book, now: at(10 * DAY, anchor) };
  }

  it("subscribing is refused by the first allowance", () => {
    const book = newBook();
    fill(book, CAP - 999n);
    const before = state(book);
    expect(failureOf(changePlan(book, BASIC, T0, newId)).metadata).toEqual({ limit: `${CAP}`, account_credits: `${CAP - 999n}`, requested: "1000" });
    expect(state(book)).toBe(before);
  });

  it("an upgrade is refused by the allowance it adds; a downgrade and a cancellation go through", () => {
    const { book, now } = atCap(BASIC);
    const before = state(book);
    expect(failureOf(changePlan(book, PRO, now, newId)).metadata["requested"]).toBe("4000");
    expect(state(book)).toBe(before);
    expect(unwrap(changePlan(book, makePlan("free", 50n, 0n), now, newId)).kind).toBe("DOWNGRADE_SCHEDULED");
    expect(unwrap(changePlan(book, BASIC, now, newId)).kind).toBe("SCHEDULED_CHANGE_CANCELLED");
  });

  it("scheduling a larger allowance (yearly to monthly) is refused: the roll-over would grant it", () => {
    const { book, now } = atCap(BASIC_YEARLY);
    const before = state(book);
    expect(failureOf(changePlan(book, PRO, now, newId)).metadata["requested"]).toBe("4000");
    expect(state(book)).toBe(before);
  });

  it("monthly to yearly replaces the allowance: the same allowance goes through at the cap, a larger one does not", () => {
    const { book, now } = atCap(BASIC);
    expect(failureOf(changePlan(book, makePlan("pro-yearly", 5_000n, 30_000n, "YEAR"), now, newId)).metadata["requested"]).toBe("4000");
    expect(unwrap(changePlan(book, BASIC_YEARLY, now, newId)).kind).toBe("INTERVAL_CHANGED");
    expect(counted(creditCount(book, now))).toBe(CAP);
  });

  it("a business plan's allowance counts like any other", () => {
    const book = newBook();
    fill(book, CAP - 10n ** 15n + 1n);
    expect(failureOf(changePlan(book, makePlan("acme", 10n ** 15n, 1n), T0, newId)).reason).toBe("BALANCE_LIMIT");
  });

  it("a period roll-over at the cap grants the allowance and stays at the cap", () => {
    const anchor = utc("2030-04-01T00:00:00Z");
    const { book } = atCap(BASIC, anchor);
    for (let month = 1; month <= 3; month += 1) {
      const later = at(month * 31 * DAY, anchor);
      applyDue(book, later, newId);
      expect(allowanceBucket(book).validFrom.getTime()).toBeGreaterThan(at((month - 1) * 31 * DAY, anchor).getTime());
      expect(book.available(later)).toBe(CAP);
      expect(counted(creditCount(book, later))).toBe(CAP);
    }
  });

  it("allowance credits held across a period end are the one way past the cap: one allowance per period, never by the roll-over itself", () => {
    const anchor = utc("2030-04-01T00:00:00Z");
    const { book, now } = atCap(BASIC, anchor);
    // Holding the allowance moves it out of the subscription's free credits, which the next allowance then stands for.
    hold(book, "all", CAP, now, 40 * DAY);
    expect(counted(creditCount(book, now))).toBe(CAP + 1_000n);
    const later = at(31 * DAY, anchor);
    const before = counted(creditCount(book, later));
    applyDue(book, later, newId); // the held allowance stays with its hold; the new one is granted
    expect(counted(creditCount(book, later))).toBe(before);
    const view = book.balance(later);
    expect([view.available, view.held]).toEqual([1_000n, CAP]);
    // Nothing is granted while over the cap; once the hold ends the old allowance's credits expire.
    expect(grantAdjustment(book, { bucketId: "x", amount: 1n, expiresAt: null, reason: "r", actor: "s" }, later).ok).toBe(false);
    const afterHold = at(51 * DAY, anchor);
    applyDue(book, afterHold, newId);
    expect(counted(creditCount(book, afterHold))).toBe(CAP);
  });
});

describe("nothing automatic raises the count", () => {
  type Op =
    | { readonly op: "grant"; readonly kind: "TOP_UP" | "ADJUSTMENT"; readonly amount: bigint; readonly expiresInMs: number | null }
    | { readonly op: "plan"; readonly plan: number }
    | { readonly op: "reserve"; readonly amount: bigint; readonly ttlMs: number }
    | { readonly op: "commit"; readonly pick: number; readonly delta: bigint }
    | { readonly op: "release"; readonly pick: number }
    | { readonly op: "extend"; readonly pick: number; readonly ttlMs: number }
    | { readonly op: "advance"; readonly ms: number };

  const PLANS: readonly Plan[] = [
    makePlan("p-free", 50n, 0n),
    makePlan("p-basic", 1_000n, 1_000n),
    makePlan("p-pro", 5_000n, 3_000n),
    makePlan("p-zero", 0n, 500n),
    makePlan("p-basic-y", 1_000n, 10_000n, "YEAR"),
    makePlan("p-pro-y", 5_000n, 30_000n, "YEAR"),
  ];
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    fc.record({
      op: fc.constant("grant" as const),
      kind: fc.constantFrom("TOP_UP" as const, "ADJUSTMENT" as const),
      amount: fc.bigInt({ min: 1n, max: 1_500n }),
      expiresInMs: fc.option(fc.integer({ min: 1, max: 60 * DAY }), { nil: null }),
    }),
    fc.record({ op: fc.constant("plan" as const), plan: fc.nat({ max: PLANS.length - 1 }) }),
    fc.record({ op: fc.constant("reserve" as const), amount: fc.bigInt({ min: 1n, max: 4_000n }), ttlMs: fc.integer({ min: MINUTE, max: 40 * DAY }) }),
    fc.record({ op: fc.constant("commit" as const), pick: fc.nat(), delta: fc.bigInt({ min: -200n, max: 200n }) }),
    fc.record({ op: fc.constant("release" as const), pick: fc.nat() }),
    fc.record({ op: fc.constant("extend" as const), pick: fc.nat(), ttlMs: fc.integer({ min: MINUTE, max: 40 * DAY }) }),
    { arbitrary: fc.record({ op: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 70 * DAY }) }), weight: 3 },
  );

  it("applying due work (holds falling due, expiries, roll-overs, scheduled changes) never raises it, and GetBalance stays inside it", () => {
    fc.assert(
      fc.property(fc.option(fc.nat({ max: PLANS.length - 1 }), { nil: null }), fc.array(opArb, { maxLength: 60 }), (first, ops) => {
        const book = newBook();
        let now = T0;
        if (first !== null) unwrap(changePlan(book, PLANS[first]!, now, newId));
        let next = 0;
        const pick = (i: number) => {
          const all = book.allReservations();
          return all.length === 0 ? undefined : all[i % all.length]!;
        };
        for (const op of ops) {
          const id = `x${next++}`;
          switch (op.op) {
            case "grant":
              if (op.kind === "TOP_UP") purchaseTopUp(book, { bucketId: id, pack: pack(op.amount), paymentReference: id }, now);
              else grantAdjustment(book, { bucketId: id, amount: op.amount, expiresAt: op.expiresInMs === null ? null : at(op.expiresInMs, now), reason: "p", actor: "p" }, now);
              break;
            case "plan":
              changePlan(book, PLANS[op.plan]!, now, newId);
              break;
            case "reserve":
              reserve(book, { reservationId: id, amount: op.amount, ttlMs: op.ttlMs, metadata: {} }, now);
              break;
            case "commit": {
              const r = pick(op.pick);
              if (r?.status === "HELD") {
                const actual = r.heldAmount + op.delta;
                commit(book, r, actual < 0n ? 0n : actual, now);
              }
              break;
            }
            case "release": {
              const r = pick(op.pick);
              if (r) release(book, r, "OTHER", "p", now);
              break;
            }
            case "extend": {
              const r = pick(op.pick);
              if (r) extend(book, r, op.ttlMs, now);
              break;
            }
            case "advance": {
              const before = counted(creditCount(book, now));
              now = at(op.ms, now);
              applyDue(book, now, newId);
              expect(counted(creditCount(book, now))).toBeLessThanOrEqual(before);
              break;
            }
          }
          const view = book.balance(now);
          expect(view.available + view.held).toBeLessThanOrEqual(counted(creditCount(book, now)));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("bounded source references", () => {
  it("keeps a reference that fits and cuts a longer one at a character boundary, ending with …", () => {
    expect(boundedSourceRef("pack:topup-500;payment:pay_1")).toBe("pack:topup-500;payment:pay_1");
    const fits = "a".repeat(MAX_SOURCE_REF_BYTES);
    expect(boundedSourceRef(fits)).toBe(fits);
    for (const char of ["a", "é", "€", "😀"]) {
      const long = `adjustment:${char.repeat(MAX_SOURCE_REF_BYTES)}`;
      const cut = boundedSourceRef(long);
      expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(MAX_SOURCE_REF_BYTES);
      expect(Buffer.byteLength(cut)).toBeGreaterThan(MAX_SOURCE_REF_BYTES - 4 - 3);
      expect(cut.endsWith("…")).toBe(true);
      expect(long.startsWith(cut.slice(0, -1))).toBe(true);
      expect(cut).not.toContain("\uFFFD");
    }
  });

  it("an adjustment keeps its whole reason on its entry and a bounded one in its bucket", () => {
    const book = newBook();
    const reason = "€".repeat(1024);
    const bucket = unwrap(grantAdjustment(book, { bucketId: "a", amount: 5n, expiresAt: null, reason, actor: "s" }, T0));
    expect(Buffer.byteLength(bucket.sourceRef)).toBeLessThanOrEqual(MAX_SOURCE_REF_BYTES);
    expect(bucket.sourceRef.startsWith("adjustment:€€€")).toBe(true);
    expect(book.entries.at(-1)!.metadata).toEqual({ reason, actor: "s" });
  });
});

describe("the balance answers carry", () => {
  it("lists the first MAX_BALANCE_BUCKETS buckets in consumption order, counts them all, and keeps the totals exact", () => {
    const book = newBook();
    for (let i = 0; i < MAX_BALANCE_BUCKETS + 50; i += 1) adjustment(book, `a${String(i).padStart(3, "0")}`, 10n, at((i + 1) * DAY));
    topUp(book, "t", 7n);
    hold(book, "h", 15n, T0);
    const view = book.balance(T0);
    expect(view.bucketCount).toBe(MAX_BALANCE_BUCKETS + 51);
    expect(view.buckets).toHaveLength(MAX_BALANCE_BUCKETS);
    expect(view.buckets.map((b) => b.id)).toEqual(book.usableBuckets(T0).slice(0, MAX_BALANCE_BUCKETS).map((b) => b.id));
    expect(view.buckets[0]!.id).toBe("t");
    expect([view.available, view.held]).toEqual([10n * BigInt(MAX_BALANCE_BUCKETS + 50) + 7n - 15n, 15n]);
    expect(newBook().balance(T0)).toMatchObject({ buckets: [], bucketCount: 0 });
  });
});
