import { readFileSync } from "node:fs";
import { toBinary } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { type Balance, BillingInterval, BucketKind, GetBalanceResponseSchema, LedgerEntryKind, PlanChangeKind, ReservationState } from "../../src/client/index.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { newAccountId, newKey, type TestService } from "../support/harness.js";
import { failureOf, iso, serviceAt } from "../support/e2e.js";

/**
 * ChangePlan through the real server (credit-rules §5 and the decisions in
 * src/domain/change-plan.ts): subscribe, upgrade now and prorated, downgrade at the billing
 * period end, interval changes, refusals that change nothing, business plans and ListPlans.
 */

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** 2030-04-01T00:00:00Z: the first day of a 30-day month, so "day 10" leaves exactly 20/30 of it. */
const APRIL_1 = new Date("2030-04-01T00:00:00.000Z");

function changePlan(t: TestService, accountId: string, planId: string, key = newKey("plan")) {
  return t.credit.changePlan({ accountId, planId, idempotencyKey: key });
}

function advanceTestClock(t: TestService, accountId: string, ms: number) {
  return t.admin.advanceTestClock({ accountId, by: durationFromMs(ms), idempotencyKey: newKey("clock") });
}

async function spend(t: TestService, accountId: string, amount: bigint) {
  const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount } });
  await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: amount } });
}

async function balanceOf(t: TestService, accountId: string): Promise<Balance> {
  const { balance } = await t.credit.getBalance({ accountId });
  expect(balance).toBeDefined();
  return balance!;
}

/** The exact bytes GetBalance answers: equal bytes mean nothing about the account changed. */
async function balanceBytes(t: TestService, accountId: string): Promise<Uint8Array> {
  return toBinary(GetBalanceResponseSchema, await t.credit.getBalance({ accountId }));
}

async function entriesOf(t: TestService, accountId: string, kinds: LedgerEntryKind[] = []) {
  const res = await t.admin.listLedgerEntries({ accountId, kinds, pageSize: 1000 });
  expect(res.nextPageToken).toBe("");
  return res.entries;
}

function subscriptionBucket(balance: Balance) {
  const subs = balance.buckets.filter((b) => b.kind === BucketKind.SUBSCRIPTION);
  expect(subs).toHaveLength(1);
  return subs[0]!;
}

async function expectConsistent(t: TestService, accountId: string): Promise<void> {
  expect(await t.service.store.reconcile(accountId)).toEqual([]);
}

describe("subscribing", () => {
  const svc = serviceAt(APRIL_1);

  it("an account without a plan subscribes at once: SUBSCRIBED, anchor now, first allowance granted, charged the first price", async () => {
    const t = svc();
    const accountId = newAccountId();
    const key = newKey("plan");
    const res = await changePlan(t, accountId, "basic-monthly", key);
    const now = t.clock.now().toISOString();
    expect(res.change).toBe(PlanChangeKind.SUBSCRIBED);
    expect(iso(res.effectiveAt)).toBe(now);
    expect(res.proratedCharge).toMatchObject({ currencyCode: "USD", amountMinor: 1000n });
    expect(res.creditsGranted).toBe(1000n);
    const sub = res.subscription!;
    expect(sub).toMatchObject({ planId: "basic-monthly", planVersion: 1, interval: BillingInterval.MONTH, monthlyAllowance: 1000n });
    expect(sub.scheduledChange).toBeUndefined();
    expect(iso(sub.billingAnchor)).toBe(now);
    expect(iso(sub.periodStart)).toBe(now);
    expect(iso(sub.periodEnd)).toBe("2030-05-01T00:00:00.000Z");
    expect(iso(sub.billingPeriodEnd)).toBe("2030-05-01T00:00:00.000Z");
    expect(res.balance?.available).toBe(1000n);

    const balance = await balanceOf(t, accountId);
    expect(balance.subscription).toEqual(sub);
    const bucket = subscriptionBucket(balance);
    expect(bucket).toMatchObject({ granted: 1000n, remaining: 1000n, held: 0n });
    expect(iso(bucket.expiresAt)).toBe("2030-05-01T00:00:00.000Z");
    const entries = await entriesOf(t, accountId);
    expect(entries.map((e) => [e.kind, e.bucketId, e.amount, e.idempotencyKey, e.caller])).toEqual([
      [LedgerEntryKind.GRANT, bucket.bucketId, 1000n, key, "test-suite"],
    ]);
    await expectConsistent(t, accountId);
  });

  it("subscribing to Free grants its 50 credits and charges nothing", async () => {
    const t = svc();
    const accountId = newAccountId();
    const res = await changePlan(t, accountId, "free");
    expect(res.change).toBe(PlanChangeKind.SUBSCRIBED);
    expect(res.proratedCharge).toMatchObject({ currencyCode: "USD", amountMinor: 0n });
    expect(res.creditsGranted).toBe(50n);
    expect((await balanceOf(t, accountId)).available).toBe(50n);
    await expectConsistent(t, accountId);
  });
});

describe("upgrade", () => {
  const svc = serviceAt(APRIL_1);

  it("an upgrade on day 10 of a 30-day month adds 4000 credits usable at once, keeps the anchor and charges (3000−1000)×20/30 = 1333 cents", async () => {
    const t = svc();
    const accountId = newAccountId();
    await changePlan(t, accountId, "basic-monthly");
    await spend(t, accountId, 300n);
    const bucketBefore = subscriptionBucket(await balanceOf(t, accountId));

    const moved = await advanceTestClock(t, accountId, 10 * DAY);
    expect(iso(moved.now)).toBe("2030-04-11T00:00:00.000Z");
    const key = newKey("plan");
    const res = await changePlan(t, accountId, "pro-monthly", key);
    expect(res.change).toBe(PlanChangeKind.UPGRADED);
    expect(iso(res.effectiveAt)).toBe("2030-04-11T00:00:00.000Z");
    expect(res.creditsGranted).toBe(4000n);
    expect(res.proratedCharge).toMatchObject({ currencyCode: "USD", amountMinor: 1333n });
    const sub = res.subscription!;
    expect(sub).toMatchObject({ planId: "pro-monthly", interval: BillingInterval.MONTH, monthlyAllowance: 5000n });
    expect(sub.scheduledChange).toBeUndefined();
    expect(iso(sub.billingAnchor)).toBe(APRIL_1.toISOString());
    expect(iso(sub.periodStart)).toBe(APRIL_1.toISOString());
    expect(iso(sub.periodEnd)).toBe("2030-05-01T00:00:00.000Z");

    // The current period's bucket grew by the difference; the credits are usable at once.
    const balance = res.balance!;
    expect(balance.available).toBe(4700n);
    const bucket = subscriptionBucket(balance);
    expect(bucket).toMatchObject({ bucketId: bucketBefore.bucketId, granted: 5000n, remaining: 4700n });
    const grants = await entriesOf(t, accountId, [LedgerEntryKind.GRANT]);
    expect(grants.map((e) => [e.bucketId, e.amount, e.idempotencyKey])).toEqual([
      [bucket.bucketId, 1000n, expect.any(String)],
      [bucket.bucketId, 4000n, key],
    ]);
    const held = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 4700n } });
    expect(held.reservation?.state).toBe(ReservationState.HELD);
    expect(held.balance?.available).toBe(0n);
    await t.credit.commit({ reservationId: held.reservation!.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 4700n } });

    // The next period grants the new plan's allowance.
    const next = await advanceTestClock(t, accountId, 20 * DAY);
    expect(iso(next.now)).toBe("2030-05-01T00:00:00.000Z");
    expect(next.balance?.available).toBe(5000n);
    expect(iso(next.balance?.subscription?.periodStart)).toBe("2030-05-01T00:00:00.000Z");
    expect(subscriptionBucket(next.balance!).granted).toBe(5000n);
    await expectConsistent(t, accountId);
  });
});

describe("downgrade", () => {
  const svc = serviceAt(APRIL_1);

  it("a downgrade is scheduled for the billing period end, shown by GetBalance, and nothing changes until the boundary; then the new allowance", async () => {
    const t = svc();
    const accountId = newAccountId();
    await changePlan(t, accountId, "pro-monthly");
    t.clock.advance(5 * DAY);
    await spend(t, accountId, 1000n);
    const oldBucket = subscriptionBucket(await balanceOf(t, accountId)).bucketId;
    const entriesBefore = await entriesOf(t, accountId);

    const res = await changePlan(t, accountId, "basic-monthly");
    expect(res.change).toBe(PlanChangeKind.DOWNGRADE_SCHEDULED);
    expect(iso(res.effectiveAt)).toBe("2030-05-01T00:00:00.000Z");
    expect(res.proratedCharge).toMatchObject({ currencyCode: "USD", amountMinor: 0n });
    expect(res.creditsGranted).toBe(0n);
    expect(res.subscription?.planId).toBe("pro-monthly");
    expect(res.subscription?.scheduledChange?.planId).toBe("basic-monthly");
    expect(res.subscription?.scheduledChange?.planVersion).toBe(1);
    expect(iso(res.subscription?.scheduledChange?.effectiveAt)).toBe("2030-05-01T00:00:00.000Z");
    expect(await entriesOf(t, accountId)).toEqual(entriesBefore);

    // Until the boundary: still Pro, same bucket, same credits, the change shown as scheduled.
    t.clock.set(new Date(new Date("2030-05-01T00:00:00.000Z").getTime() - 1));
    let balance = await balanceOf(t, accountId);
    expect(balance.subscription).toMatchObject({ planId: "pro-monthly", monthlyAllowance: 5000n });
    expect(balance.subscription?.scheduledChange?.planId).toBe("basic-monthly");
    expect(iso(balance.subscription?.scheduledChange?.effectiveAt)).toBe("2030-05-01T00:00:00.000Z");
    expect(balance.available).toBe(4000n);
    expect(subscriptionBucket(balance).bucketId).toBe(oldBucket);
    expect(await entriesOf(t, accountId)).toEqual(entriesBefore);

    // At the boundary: Basic with Basic's allowance; Pro's unused rest expired.
    t.clock.advance(1);
    balance = await balanceOf(t, accountId);
    expect(balance.subscription).toMatchObject({ planId: "basic-monthly", monthlyAllowance: 1000n, interval: BillingInterval.MONTH });
    expect(balance.subscription?.scheduledChange).toBeUndefined();
    expect(iso(balance.subscription?.periodStart)).toBe("2030-05-01T00:00:00.000Z");
    expect(iso(balance.subscription?.billingAnchor)).toBe(APRIL_1.toISOString());
    expect(balance.available).toBe(1000n);
    const bucket = subscriptionBucket(balance);
    expect(bucket.bucketId).not.toBe(oldBucket);
    expect(bucket.granted).toBe(1000n);
    const expires = await entriesOf(t, accountId, [LedgerEntryKind.EXPIRE]);
    expect(expires.map((e) => [e.bucketId, e.amount])).toEqual([[oldBucket, 4000n]]);
    await expectConsistent(t, accountId);
  });

  it("a later ChangePlan replaces the scheduled change, and changing back to the current plan cancels it: SCHEDULED_CHANGE_CANCELLED", async () => {
    const t = svc();
    const accountId = newAccountId();
    const subscribed = await changePlan(t, accountId, "pro-monthly");
    const periodEnd = iso(subscribed.subscription?.billingPeriodEnd);
    const toBasic = await changePlan(t, accountId, "basic-monthly");
    expect(toBasic.change).toBe(PlanChangeKind.DOWNGRADE_SCHEDULED);
    const toFree = await changePlan(t, accountId, "free");
    expect(toFree.change).toBe(PlanChangeKind.DOWNGRADE_SCHEDULED);
    expect(iso(toFree.effectiveAt)).toBe(periodEnd);
    expect((await balanceOf(t, accountId)).subscription?.scheduledChange?.planId).toBe("free");

    const back = await changePlan(t, accountId, "pro-monthly");
    expect(back.change).toBe(PlanChangeKind.SCHEDULED_CHANGE_CANCELLED);
    expect(back.creditsGranted).toBe(0n);
    expect(back.proratedCharge?.amountMinor).toBe(0n);
    expect(back.subscription?.planId).toBe("pro-monthly");
    expect(back.subscription?.scheduledChange).toBeUndefined();
    expect((await balanceOf(t, accountId)).subscription?.scheduledChange).toBeUndefined();

    // Past the boundary the account is still on Pro and gets Pro's allowance.
    const now = t.clock.now().getTime();
    const next = await advanceTestClock(t, accountId, timestampDate(subscribed.subscription!.periodEnd!).getTime() - now + HOUR);
    expect(next.balance?.subscription?.planId).toBe("pro-monthly");
    expect(next.balance?.available).toBe(5000n);
    expect(subscriptionBucket(next.balance!).granted).toBe(5000n);
    await expectConsistent(t, accountId);
  });
});

describe("interval changes", () => {
  const svc = serviceAt(APRIL_1);

  it("monthly → yearly starts a new billing period now: INTERVAL_CHANGED, new anchor, fresh allowance, charge = yearly price − unused part of the month", async () => {
    const t = svc();
    const accountId = newAccountId();
    await changePlan(t, accountId, "basic-monthly");
    await spend(t, accountId, 200n);
    const oldBucket = subscriptionBucket(await balanceOf(t, accountId)).bucketId;
    await advanceTestClock(t, accountId, 10 * DAY);

    const res = await changePlan(t, accountId, "basic-yearly");
    expect(res.change).toBe(PlanChangeKind.INTERVAL_CHANGED);
    expect(iso(res.effectiveAt)).toBe("2030-04-11T00:00:00.000Z");
    // 10000 − round(1000 × 20/30) = 10000 − 667
    expect(res.proratedCharge).toMatchObject({ currencyCode: "USD", amountMinor: 9333n });
    expect(res.creditsGranted).toBe(1000n);
    const sub = res.subscription!;
    expect(sub).toMatchObject({ planId: "basic-yearly", interval: BillingInterval.YEAR, monthlyAllowance: 1000n });
    expect(iso(sub.billingAnchor)).toBe("2030-04-11T00:00:00.000Z");
    expect(iso(sub.periodStart)).toBe("2030-04-11T00:00:00.000Z");
    expect(iso(sub.periodEnd)).toBe("2030-05-11T00:00:00.000Z");
    expect(iso(sub.billingPeriodEnd)).toBe("2031-04-11T00:00:00.000Z");

    // The old month's unused allowance ended now; the new one is whole.
    const balance = res.balance!;
    expect(balance.available).toBe(1000n);
    const bucket = subscriptionBucket(balance);
    expect(bucket.bucketId).not.toBe(oldBucket);
    expect(iso(bucket.validFrom)).toBe("2030-04-11T00:00:00.000Z");
    expect(iso(bucket.expiresAt)).toBe("2030-05-11T00:00:00.000Z");
    const expires = await entriesOf(t, accountId, [LedgerEntryKind.EXPIRE]);
    expect(expires.map((e) => [e.bucketId, e.amount])).toEqual([[oldBucket, 800n]]);

    // Allowance months now run from the new anchor; the billing year stays.
    const next = await advanceTestClock(t, accountId, 30 * DAY);
    expect(iso(next.balance?.subscription?.periodStart)).toBe("2030-05-11T00:00:00.000Z");
    expect(iso(next.balance?.subscription?.billingPeriodEnd)).toBe("2031-04-11T00:00:00.000Z");
    expect(next.balance?.available).toBe(1000n);
    await expectConsistent(t, accountId);
  });

  it("yearly → monthly is scheduled at the end of the billing year and takes effect there", async () => {
    const t = svc();
    const accountId = newAccountId();
    const subscribed = await changePlan(t, accountId, "pro-yearly");
    expect(subscribed.proratedCharge?.amountMinor).toBe(30000n);
    expect(iso(subscribed.subscription?.billingPeriodEnd)).toBe("2031-04-01T00:00:00.000Z");
    await advanceTestClock(t, accountId, 40 * DAY);

    const res = await changePlan(t, accountId, "pro-monthly");
    expect(res.change).toBe(PlanChangeKind.DOWNGRADE_SCHEDULED);
    expect(iso(res.effectiveAt)).toBe("2031-04-01T00:00:00.000Z");
    expect(res.proratedCharge?.amountMinor).toBe(0n);
    expect(res.creditsGranted).toBe(0n);
    let balance = await balanceOf(t, accountId);
    expect(balance.subscription?.planId).toBe("pro-yearly");
    expect(balance.subscription?.scheduledChange?.planId).toBe("pro-monthly");

    // The last millisecond of the billing year: still yearly.
    const yearEnd = new Date("2031-04-01T00:00:00.000Z").getTime();
    const accountNow = timestampDate(balance.asOf!).getTime();
    let moved = await advanceTestClock(t, accountId, yearEnd - accountNow - 1);
    expect(moved.balance?.subscription?.planId).toBe("pro-yearly");
    expect(iso(moved.balance?.subscription?.periodStart)).toBe("2031-03-01T00:00:00.000Z");
    expect(iso(moved.balance?.subscription?.billingPeriodEnd)).toBe("2031-04-01T00:00:00.000Z");

    moved = await advanceTestClock(t, accountId, 1);
    balance = moved.balance!;
    expect(balance.subscription).toMatchObject({ planId: "pro-monthly", interval: BillingInterval.MONTH, monthlyAllowance: 5000n });
    expect(balance.subscription?.scheduledChange).toBeUndefined();
    expect(iso(balance.subscription?.billingAnchor)).toBe(APRIL_1.toISOString());
    expect(iso(balance.subscription?.periodStart)).toBe("2031-04-01T00:00:00.000Z");
    expect(iso(balance.subscription?.billingPeriodEnd)).toBe("2031-05-01T00:00:00.000Z");
    expect(balance.available).toBe(5000n);
    expect(await balanceOf(t, accountId)).toEqual(balance);
    await expectConsistent(t, accountId);
  });
});

describe("refusals change nothing", () => {
  const svc = serviceAt(APRIL_1);

  it("ChangePlan to an unknown plan is NOT_FOUND PLAN_NOT_FOUND and changes nothing (a new account is not created)", async () => {
    const t = svc();
    const accountId = newAccountId();
    await changePlan(t, accountId, "basic-monthly");
    const before = await balanceBytes(t, accountId);
    const entries = await entriesOf(t, accountId);

    const failure = await failureOf(changePlan(t, accountId, "platinum-monthly"));
    expect(failure.code).toBe(Code.NotFound);
    expect(failure.reason).toBe("PLAN_NOT_FOUND");
    expect(failure.metadata["plan_id"]).toBe("platinum-monthly");
    expect(await balanceBytes(t, accountId)).toEqual(before);
    expect(await entriesOf(t, accountId)).toEqual(entries);

    const stranger = newAccountId();
    expect((await failureOf(changePlan(t, stranger, "platinum-monthly"))).reason).toBe("PLAN_NOT_FOUND");
    const missing = await failureOf(t.credit.getBalance({ accountId: stranger }));
    expect(missing.code).toBe(Code.NotFound);
    expect(missing.reason).toBe("ACCOUNT_NOT_FOUND");
  });

  it("ChangePlan to the current plan with nothing scheduled is FAILED_PRECONDITION ALREADY_ON_PLAN and changes nothing", async () => {
    const t = svc();
    const accountId = newAccountId();
    await changePlan(t, accountId, "pro-monthly");
    await spend(t, accountId, 100n);
    const before = await balanceBytes(t, accountId);
    const entries = await entriesOf(t, accountId);

    const failure = await failureOf(changePlan(t, accountId, "pro-monthly"));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("ALREADY_ON_PLAN");
    expect(await balanceBytes(t, accountId)).toEqual(before);
    expect(await entriesOf(t, accountId)).toEqual(entries);
  });

  it("reusing an idempotency key for another plan is INVALID_ARGUMENT IDEMPOTENCY_KEY_REUSED and changes nothing", async () => {
    const t = svc();
    const accountId = newAccountId();
    const key = newKey("plan");
    await changePlan(t, accountId, "basic-monthly", key);
    const before = await balanceBytes(t, accountId);
    const entries = await entriesOf(t, accountId);

    const failure = await failureOf(changePlan(t, accountId, "pro-monthly", key));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe("IDEMPOTENCY_KEY_REUSED");
    expect(await balanceBytes(t, accountId)).toEqual(before);
    expect(await entriesOf(t, accountId)).toEqual(entries);
    expect((await balanceOf(t, accountId)).subscription?.planId).toBe("basic-monthly");
  });

  it("repeating a ChangePlan with the same key returns the original response and applies it once", async () => {
    const t = svc();
    const accountId = newAccountId();
    await changePlan(t, accountId, "basic-monthly");
    const key = newKey("plan");
    const first = await changePlan(t, accountId, "max-monthly", key);
    expect(first.change).toBe(PlanChangeKind.UPGRADED);
    const before = await balanceBytes(t, accountId);
    const entries = await entriesOf(t, accountId);

    const again = await changePlan(t, accountId, "max-monthly", key);
    expect(again).toEqual(first);
    expect(await balanceBytes(t, accountId)).toEqual(before);
    expect(await entriesOf(t, accountId)).toEqual(entries);

    // Even after the balance moved on, the replay is the original response.
    await spend(t, accountId, 500n);
    const later = await changePlan(t, accountId, "max-monthly", key);
    expect(later).toEqual(first);
    const grants = await entriesOf(t, accountId, [LedgerEntryKind.GRANT]);
    expect(grants.filter((e) => e.idempotencyKey === key).map((e) => e.amount)).toEqual([19000n]);
    await expectConsistent(t, accountId);
  });
});

describe("ChangePlan racing Reserves", () => {
  const svc = serviceAt(APRIL_1);

  it("an upgrade racing 50 concurrent Reserves: every credit is accounted for, available never negative, balances reconcile", async () => {
    const t = svc();
    const accountId = newAccountId();
    await changePlan(t, accountId, "basic-monthly");
    const reserve = () => t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 40n } });
    // The upgrade is sent between the 25th and the 26th Reserve; all 51 calls are in flight together.
    const first = Array.from({ length: 25 }, reserve);
    const upgrade = changePlan(t, accountId, "pro-monthly");
    const second = Array.from({ length: 25 }, reserve);
    const results = await Promise.allSettled([...first, ...second]);
    const changed = await upgrade;

    expect(changed.change).toBe(PlanChangeKind.UPGRADED);
    expect(changed.creditsGranted).toBe(4000n);
    expect(changed.balance!.available).toBeGreaterThanOrEqual(0n);
    const ok = results.filter((r) => r.status === "fulfilled");
    for (const r of ok) expect(r.value.balance!.available).toBeGreaterThanOrEqual(0n);
    for (const r of results) {
      if (r.status === "rejected") {
        const err = ConnectError.from(r.reason);
        expect(err.code).toBe(Code.FailedPrecondition);
        expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("INSUFFICIENT_CREDITS");
      }
    }
    // 1000 credits cover 25 holds of 40 before the upgrade lands.
    expect(ok.length).toBeGreaterThanOrEqual(25);

    const balance = await balanceOf(t, accountId);
    const held = 40n * BigInt(ok.length);
    expect(balance.held).toBe(held);
    expect(balance.available).toBe(5000n - held);
    expect(subscriptionBucket(balance)).toMatchObject({ granted: 5000n, remaining: 5000n, held });
    expect((await entriesOf(t, accountId, [LedgerEntryKind.HOLD])).reduce((s, e) => s + e.amount, 0n)).toBe(held);
    await expectConsistent(t, accountId);
  });
});

describe("business plans", () => {
  const svc = serviceAt(APRIL_1);

  function businessTerms(accountId: string, planId: string, packId: string, monthlyAllowance = 250_000n) {
    return {
      accountId,
      planId,
      name: "Acme Business",
      monthlyAllowance,
      price: { currencyCode: "USD", amountMinor: 1_200_000n },
      interval: BillingInterval.YEAR,
      topUpPacks: [{ packId, credits: 100_000n, price: { currencyCode: "USD", amountMinor: 45_000n }, validityMonths: 12 }],
    };
  }

  it("SetCustomPlan defines a business plan with its own allowance, price, interval and pack; ChangePlan subscribes to it and PurchaseTopUp sells the pack", async () => {
    const t = svc();
    const accountId = newAccountId("acme");
    const planId = `${accountId}-business`;
    const packId = `${accountId}-100k`;
    const set = await t.admin.setCustomPlan(businessTerms(accountId, planId, packId));
    expect(set.plan).toMatchObject({
      planId,
      name: "Acme Business",
      interval: BillingInterval.YEAR,
      monthlyAllowance: 250_000n,
      price: { currencyCode: "USD", amountMinor: 1_200_000n },
      version: 1,
      accountId,
    });
    expect(set.topUpPacks).toHaveLength(1);
    expect(set.topUpPacks[0]).toMatchObject({ packId, credits: 100_000n, validityMonths: 12, price: { currencyCode: "USD", amountMinor: 45_000n } });

    const res = await changePlan(t, accountId, planId);
    expect(res.change).toBe(PlanChangeKind.SUBSCRIBED);
    expect(res.creditsGranted).toBe(250_000n);
    expect(res.proratedCharge).toMatchObject({ currencyCode: "USD", amountMinor: 1_200_000n });
    expect(res.subscription).toMatchObject({ planId, planVersion: 1, interval: BillingInterval.YEAR, monthlyAllowance: 250_000n });
    expect(iso(res.subscription?.periodEnd)).toBe("2030-05-01T00:00:00.000Z");
    expect(iso(res.subscription?.billingPeriodEnd)).toBe("2031-04-01T00:00:00.000Z");

    const bought = await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: packId }, paymentReference: newKey("pay") });
    expect(bought.price).toMatchObject({ currencyCode: "USD", amountMinor: 45_000n });
    expect(bought.bucket).toMatchObject({ kind: BucketKind.TOP_UP, granted: 100_000n, remaining: 100_000n });
    expect(iso(bought.bucket?.expiresAt)).toBe("2031-04-01T00:00:00.000Z");
    expect(bought.balance?.available).toBe(350_000n);

    // A business plan is not public.
    const { plans } = await t.credit.listPlans({});
    expect(plans.map((p) => p.planId)).not.toContain(planId);
    await expectConsistent(t, accountId);
  });

  it("another account cannot ChangePlan to a business plan (PLAN_NOT_FOUND) nor buy its pack (PACK_NOT_FOUND)", async () => {
    const t = svc();
    const owner = newAccountId("acme");
    const planId = `${owner}-business`;
    const packId = `${owner}-100k`;
    await t.admin.setCustomPlan(businessTerms(owner, planId, packId));

    const other = newAccountId("other");
    await changePlan(t, other, "basic-monthly");
    const before = await balanceBytes(t, other);
    const planFailure = await failureOf(changePlan(t, other, planId));
    expect(planFailure.code).toBe(Code.NotFound);
    expect(planFailure.reason).toBe("PLAN_NOT_FOUND");
    const packFailure = await failureOf(t.credit.purchaseTopUp({ accountId: other, pack: { case: "packId", value: packId }, paymentReference: newKey("pay") }));
    expect(packFailure.code).toBe(Code.NotFound);
    expect(packFailure.reason).toBe("PACK_NOT_FOUND");
    expect(await balanceBytes(t, other)).toEqual(before);
  });

  it("repeating SetCustomPlan with the same terms keeps the version; new terms make version 2 while the existing subscriber keeps version 1", async () => {
    const t = svc();
    const accountId = newAccountId("acme");
    const planId = `${accountId}-business`;
    const packId = `${accountId}-100k`;
    const v1 = await t.admin.setCustomPlan(businessTerms(accountId, planId, packId));
    expect(v1.plan?.version).toBe(1);
    expect((await t.admin.setCustomPlan(businessTerms(accountId, planId, packId))).plan?.version).toBe(1);
    await changePlan(t, accountId, planId);

    const v2 = await t.admin.setCustomPlan(businessTerms(accountId, planId, packId, 300_000n));
    expect(v2.plan).toMatchObject({ planId, version: 2, monthlyAllowance: 300_000n });
    expect((await t.admin.setCustomPlan(businessTerms(accountId, planId, packId, 300_000n))).plan?.version).toBe(2);

    let balance = await balanceOf(t, accountId);
    expect(balance.subscription).toMatchObject({ planId, planVersion: 1, monthlyAllowance: 250_000n });
    // The next allowance month still grants version 1's allowance.
    const next = await advanceTestClock(t, accountId, 30 * DAY + HOUR);
    balance = next.balance!;
    expect(iso(balance.subscription?.periodStart)).toBe("2030-05-01T00:00:00.000Z");
    expect(balance.subscription).toMatchObject({ planId, planVersion: 1, monthlyAllowance: 250_000n });
    expect(subscriptionBucket(balance).granted).toBe(250_000n);
    await expectConsistent(t, accountId);
  });
});

describe("a plan without allowance", () => {
  const svc = serviceAt(APRIL_1);

  it("upgrading from a business plan with no allowance grants the new plan's whole allowance at once", async () => {
    const t = svc();
    const accountId = newAccountId("seat");
    const planId = `${accountId}-seats-only`;
    await t.admin.setCustomPlan({
      accountId,
      planId,
      name: "Seats only",
      monthlyAllowance: 0n,
      price: { currencyCode: "USD", amountMinor: 500n },
      interval: BillingInterval.MONTH,
      topUpPacks: [],
    });
    const subscribed = await changePlan(t, accountId, planId);
    expect(subscribed.change).toBe(PlanChangeKind.SUBSCRIBED);
    expect(subscribed.creditsGranted).toBe(0n);
    expect(subscribed.balance?.available).toBe(0n);

    await advanceTestClock(t, accountId, 10 * DAY);
    const res = await changePlan(t, accountId, "basic-monthly");
    expect(res.change).toBe(PlanChangeKind.UPGRADED);
    expect(res.creditsGranted).toBe(1000n);
    // (1000 − 500) × 20/30 = 333.3 → 333
    expect(res.proratedCharge).toMatchObject({ currencyCode: "USD", amountMinor: 333n });
    expect(res.balance?.available).toBe(1000n);
    const bucket = subscriptionBucket(res.balance!);
    expect(iso(bucket.expiresAt)).toBe("2030-05-01T00:00:00.000Z");
    const held = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 1000n } });
    expect(held.reservation?.state).toBe(ReservationState.HELD);
    await expectConsistent(t, accountId);
  });
});

describe("ListPlans", () => {
  const svc = serviceAt(APRIL_1);

  it("returns the default catalog: every plan of src/catalog/plans.json at its latest version, and nothing else", async () => {
    const t = svc();
    const catalog = JSON.parse(readFileSync(new URL("../../src/catalog/plans.json", import.meta.url), "utf8")) as {
      plans: { planId: string; name: string; interval: "MONTH" | "YEAR"; monthlyAllowance: number; price: { currencyCode: string; amountMinor: number } }[];
    };
    const { plans } = await t.credit.listPlans({});
    expect(plans).toHaveLength(catalog.plans.length);
    for (const expected of catalog.plans) {
      const plan = plans.find((p) => p.planId === expected.planId);
      expect(plan, expected.planId).toBeDefined();
      expect(plan).toMatchObject({
        name: expected.name,
        interval: expected.interval === "MONTH" ? BillingInterval.MONTH : BillingInterval.YEAR,
        monthlyAllowance: BigInt(expected.monthlyAllowance),
        price: { currencyCode: expected.price.currencyCode, amountMinor: BigInt(expected.price.amountMinor) },
        accountId: "",
      });
      expect(plan!.version).toBeGreaterThanOrEqual(1);
    }
    // Subscribing with a listed plan's id uses the listed version.
    const accountId = newAccountId();
    const pro = plans.find((p) => p.planId === "pro-monthly")!;
    const res = await changePlan(t, accountId, "pro-monthly");
    expect(res.subscription).toMatchObject({ planId: "pro-monthly", planVersion: pro.version, monthlyAllowance: pro.monthlyAllowance });
  });
});
