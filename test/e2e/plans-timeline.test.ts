import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { type Balance, BillingInterval, BucketKind, LedgerEntryKind, PlanChangeKind, ReleaseReason, ReservationState } from "../../src/client/index.js";
import { newAccountId, newKey, type TestService } from "../support/harness.js";
import { iso, serviceAt } from "../support/e2e.js";

/**
 * Billing cycles through the real server (credit-rules §4): allowance periods monthly from the
 * anchor, no rollover, top-ups untouched by the reset, roll-over applied when an account is touched
 * (no cron), month-end clamping, and holds open across a period boundary. Time moves both ways an
 * integrator can move it: the server clock (every account) and an account's own test clock.
 */

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** A UTC instant; month is 1-12. */
function utc(year: number, month: number, day: number, hour = 0, minute = 0): Date {
  return new Date(Date.UTC(year, month - 1, day, hour, minute));
}

async function entriesOf(t: TestService, accountId: string, kinds: LedgerEntryKind[] = []) {
  const res = await t.admin.listLedgerEntries({ accountId, kinds, pageSize: 1000 });
  expect(res.nextPageToken).toBe("");
  return res.entries;
}

async function subscribe(t: TestService, accountId: string, planId: string) {
  const res = await t.credit.changePlan({ accountId, planId, idempotencyKey: newKey("plan") });
  expect(res.change).toBe(PlanChangeKind.SUBSCRIBED);
  return res;
}

/** Reserve then commit the same amount: credits spent in consumption order. */
async function spend(t: TestService, accountId: string, amount: bigint) {
  const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount } });
  const c = await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: amount } });
  expect(c.reservation?.state).toBe(ReservationState.COMMITTED);
  return c;
}

function advanceTestClock(t: TestService, accountId: string, ms: number) {
  return t.admin.advanceTestClock({ accountId, by: durationFromMs(ms), idempotencyKey: newKey("clock") });
}

async function balanceOf(t: TestService, accountId: string): Promise<Balance> {
  const { balance } = await t.credit.getBalance({ accountId });
  expect(balance).toBeDefined();
  return balance!;
}

function subscriptionBuckets(balance: Balance) {
  return balance.buckets.filter((b) => b.kind === BucketKind.SUBSCRIPTION);
}

function onlySubscriptionBucket(balance: Balance) {
  const subs = subscriptionBuckets(balance);
  expect(subs).toHaveLength(1);
  return subs[0]!;
}

async function expectConsistent(t: TestService, ...accountIds: string[]): Promise<void> {
  for (const accountId of accountIds) expect(await t.service.store.reconcile(accountId)).toEqual([]);
}

/**
 * Several accounts that share one test-clock offset, so each can be moved by the server clock
 * (all accounts) or by its own test clock (AdvanceTestClock) and they stay in step.
 */
class Timeline {
  private offsetMs = 0;
  constructor(
    private readonly t: TestService,
    private readonly accountIds: readonly string[],
  ) {}

  now(): Date {
    return new Date(this.t.clock.now().getTime() + this.offsetMs);
  }

  /** Moves the server clock so the accounts' time is `target`. */
  async serverTo(target: Date): Promise<void> {
    this.t.clock.set(new Date(target.getTime() - this.offsetMs));
    expect(this.now().toISOString()).toBe(target.toISOString());
  }

  /** Moves each account's own clock to `target` through AdvanceTestClock; returns the balances it answered. */
  async testClockTo(target: Date): Promise<Balance[]> {
    const by = target.getTime() - this.now().getTime();
    expect(by).toBeGreaterThan(0);
    const balances: Balance[] = [];
    for (const accountId of this.accountIds) {
      const res = await advanceTestClock(this.t, accountId, by);
      expect(iso(res.now)).toBe(target.toISOString());
      balances.push(res.balance!);
    }
    this.offsetMs += by;
    return balances;
  }

  async moveTo(target: Date, how: "server" | "test-clock"): Promise<void> {
    if (how === "server") await this.serverTo(target);
    else await this.testClockTo(target);
  }
}

describe("a 14-month timeline of a monthly and a yearly subscriber", () => {
  const svc = serviceAt(utc(2030, 1, 15, 12));

  it("each month's allowance appears at the boundary and the unused rest expires; the yearly plan is granted month by month and its billing period ends at the year end", async () => {
    const t = svc();
    const anchor = t.clock.now();
    const monthly = newAccountId("monthly");
    const yearly = newAccountId("yearly");
    const subM = await subscribe(t, monthly, "basic-monthly");
    const subY = await subscribe(t, yearly, "basic-yearly");
    expect(subM.proratedCharge).toMatchObject({ currencyCode: "USD", amountMinor: 1000n });
    expect(subY.proratedCharge).toMatchObject({ currencyCode: "USD", amountMinor: 10000n });
    expect(iso(subY.subscription?.billingAnchor)).toBe(anchor.toISOString());

    const timeline = new Timeline(t, [monthly, yearly]);
    // Period k runs [Jan 15 + k months, Jan 15 + (k+1) months) at 12:00 UTC; day 15 never clamps.
    const periodStart = (k: number) => utc(2030, 1 + k, 15, 12);
    const grantedM = [(await balanceOf(t, monthly)).buckets[0]!.bucketId];
    const grantedY = [(await balanceOf(t, yearly)).buckets[0]!.bucketId];

    for (let k = 1; k <= 14; k++) {
      // Spend part of the current period's allowance; the rest must vanish at the boundary.
      const spentM = BigInt(100 + 7 * k);
      const spentY = BigInt(50 + 3 * k);
      await spend(t, monthly, spentM);
      await spend(t, yearly, spentY);
      const how = k % 2 === 1 ? "server" : "test-clock";

      // One millisecond before the boundary nothing has reset yet.
      await timeline.moveTo(new Date(periodStart(k).getTime() - 1), how);
      const beforeM = await balanceOf(t, monthly);
      expect(iso(beforeM.subscription?.periodStart)).toBe(periodStart(k - 1).toISOString());
      expect(iso(beforeM.subscription?.periodEnd)).toBe(periodStart(k).toISOString());
      expect(beforeM.available).toBe(1000n - spentM);
      expect((await entriesOf(t, monthly, [LedgerEntryKind.EXPIRE])).length).toBe(k - 1);
      const beforeY = await balanceOf(t, yearly);
      expect(beforeY.available).toBe(1000n - spentY);

      // At the boundary itself the new period has begun.
      await timeline.moveTo(periodStart(k), how === "server" ? "test-clock" : "server");

      for (const [accountId, spent, granted, interval, planId] of [
        [monthly, spentM, grantedM, BillingInterval.MONTH, "basic-monthly"],
        [yearly, spentY, grantedY, BillingInterval.YEAR, "basic-yearly"],
      ] as const) {
        const balance = await balanceOf(t, accountId);
        const sub = balance.subscription!;
        expect(sub.planId).toBe(planId);
        expect(sub.interval).toBe(interval);
        expect(sub.monthlyAllowance).toBe(1000n);
        expect(iso(sub.billingAnchor)).toBe(anchor.toISOString());
        expect(iso(sub.periodStart)).toBe(periodStart(k).toISOString());
        expect(iso(sub.periodEnd)).toBe(periodStart(k + 1).toISOString());
        const billingEnd = interval === BillingInterval.MONTH ? periodStart(k + 1) : k < 12 ? utc(2031, 1, 15, 12) : utc(2032, 1, 15, 12);
        expect(iso(sub.billingPeriodEnd)).toBe(billingEnd.toISOString());

        const bucket = onlySubscriptionBucket(balance);
        expect(bucket.granted).toBe(1000n);
        expect(bucket.remaining).toBe(1000n);
        expect(iso(bucket.validFrom)).toBe(periodStart(k).toISOString());
        expect(iso(bucket.expiresAt)).toBe(periodStart(k + 1).toISOString());
        expect(granted).not.toContain(bucket.bucketId);
        expect(balance.available).toBe(1000n);

        // The previous period's unused allowance expired: one EXPIRE of exactly what was left.
        const expires = await entriesOf(t, accountId, [LedgerEntryKind.EXPIRE]);
        expect(expires).toHaveLength(k);
        const last = expires[expires.length - 1]!;
        expect(last.bucketId).toBe(granted[granted.length - 1]);
        expect(last.amount).toBe(1000n - spent);
        expect(last.caller).toBe("system");
        expect(iso(last.createdAt)).toBe(periodStart(k).toISOString());

        const grants = await entriesOf(t, accountId, [LedgerEntryKind.GRANT]);
        expect(grants).toHaveLength(k + 1);
        expect(grants[grants.length - 1]!.bucketId).toBe(bucket.bucketId);
        expect(grants[grants.length - 1]!.amount).toBe(1000n);
        granted.push(bucket.bucketId);
      }
      await expectConsistent(t, monthly, yearly);
    }
  });
});

describe("a top-up bought mid-cycle", () => {
  const svc = serviceAt(utc(2030, 1, 15, 12));

  it("is consumed before the allowance, survives the monthly reset and expires exactly 2 calendar months after purchase", async () => {
    const t = svc();
    const accountId = newAccountId();
    await subscribe(t, accountId, "basic-monthly");
    const timeline = new Timeline(t, [accountId]);

    await timeline.testClockTo(utc(2030, 1, 25, 12));
    const bought = await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    const topUp = bought.bucket!;
    expect(topUp.kind).toBe(BucketKind.TOP_UP);
    expect(iso(topUp.validFrom)).toBe("2030-01-25T12:00:00.000Z");
    expect(iso(topUp.expiresAt)).toBe("2030-03-25T12:00:00.000Z");
    expect(bought.balance?.available).toBe(1500n);

    // Consumption order: the top-up first, the allowance untouched.
    await spend(t, accountId, 300n);
    let balance = await balanceOf(t, accountId);
    expect(balance.buckets.map((b) => [b.kind, b.remaining])).toEqual([
      [BucketKind.TOP_UP, 200n],
      [BucketKind.SUBSCRIPTION, 1000n],
    ]);
    const captures = await entriesOf(t, accountId, [LedgerEntryKind.CAPTURE]);
    expect(captures.map((e) => [e.bucketId, e.amount])).toEqual([[topUp.bucketId, 300n]]);
    const firstAllowance = onlySubscriptionBucket(balance).bucketId;

    // The monthly reset (server clock): the allowance expires and is granted anew; the top-up stays.
    await timeline.serverTo(utc(2030, 2, 15, 12));
    balance = await balanceOf(t, accountId);
    expect(iso(balance.subscription?.periodStart)).toBe("2030-02-15T12:00:00.000Z");
    expect(balance.buckets.map((b) => [b.kind, b.remaining])).toEqual([
      [BucketKind.TOP_UP, 200n],
      [BucketKind.SUBSCRIPTION, 1000n],
    ]);
    expect(balance.available).toBe(1200n);
    let expires = await entriesOf(t, accountId, [LedgerEntryKind.EXPIRE]);
    expect(expires.map((e) => [e.bucketId, e.amount])).toEqual([[firstAllowance, 1000n]]);

    await spend(t, accountId, 150n);
    // The second reset (test clock): the top-up still survives, 10 days before its expiry.
    await timeline.testClockTo(utc(2030, 3, 15, 12));
    balance = await balanceOf(t, accountId);
    expect(iso(balance.subscription?.periodStart)).toBe("2030-03-15T12:00:00.000Z");
    expect(balance.buckets.map((b) => [b.kind, b.bucketId === topUp.bucketId, b.remaining])).toEqual([
      [BucketKind.TOP_UP, true, 50n],
      [BucketKind.SUBSCRIPTION, false, 1000n],
    ]);

    // One millisecond before 2 calendar months after purchase the pack is still usable.
    await timeline.serverTo(new Date(utc(2030, 3, 25, 12).getTime() - 1));
    balance = await balanceOf(t, accountId);
    expect(balance.available).toBe(1050n);
    expect(balance.buckets.some((b) => b.bucketId === topUp.bucketId)).toBe(true);

    // At that instant its rest expires and the allowance is untouched.
    await timeline.testClockTo(utc(2030, 3, 25, 12));
    balance = await balanceOf(t, accountId);
    expect(balance.available).toBe(1000n);
    expect(balance.buckets.map((b) => [b.kind, b.remaining])).toEqual([[BucketKind.SUBSCRIPTION, 1000n]]);
    expires = await entriesOf(t, accountId, [LedgerEntryKind.EXPIRE]);
    const topUpExpiry = expires.filter((e) => e.bucketId === topUp.bucketId);
    expect(topUpExpiry.map((e) => e.amount)).toEqual([50n]);
    expect(iso(topUpExpiry[0]!.createdAt)).toBe("2030-03-25T12:00:00.000Z");
    await expectConsistent(t, accountId);
  });
});

describe("an account untouched for months", () => {
  const svc = serviceAt(utc(2030, 1, 15, 12));

  it("gets only the current period on its next call: one new GRANT since the last, nothing retroactive", async () => {
    const t = svc();
    const idle = newAccountId("idle");
    const clocked = newAccountId("clocked");
    await subscribe(t, idle, "basic-monthly");
    await subscribe(t, clocked, "basic-monthly");
    await spend(t, idle, 200n);
    const firstBucket = (await balanceOf(t, idle)).buckets[0]!.bucketId;
    const later = utc(2030, 6, 18, 12); // 5 months and 3 days on: period 5 began Jun 15

    // Through the test-clock API: one call jumps the account 5 months ahead.
    const jumped = await advanceTestClock(t, clocked, later.getTime() - t.clock.now().getTime());
    for (const balance of [jumped.balance!, await balanceOf(t, clocked)]) {
      expect(iso(balance.subscription?.periodStart)).toBe("2030-06-15T12:00:00.000Z");
      expect(iso(balance.subscription?.periodEnd)).toBe("2030-07-15T12:00:00.000Z");
      expect(balance.available).toBe(1000n);
      expect(onlySubscriptionBucket(balance).remaining).toBe(1000n);
    }
    const clockedGrants = await entriesOf(t, clocked, [LedgerEntryKind.GRANT]);
    expect(clockedGrants.map((e) => e.amount)).toEqual([1000n, 1000n]);
    expect(clockedGrants[1]!.metadata["period_start"]).toBe("2030-06-15T12:00:00.000Z");

    // Through the server clock: nobody touches the idle account until GetBalance.
    t.clock.set(later);
    expect(await entriesOf(t, idle, [LedgerEntryKind.GRANT])).toHaveLength(1);
    const balance = await balanceOf(t, idle);
    expect(iso(balance.subscription?.periodStart)).toBe("2030-06-15T12:00:00.000Z");
    expect(iso(balance.subscription?.periodEnd)).toBe("2030-07-15T12:00:00.000Z");
    expect(balance.available).toBe(1000n);
    const bucket = onlySubscriptionBucket(balance);
    expect(iso(bucket.validFrom)).toBe("2030-06-15T12:00:00.000Z");

    const grants = await entriesOf(t, idle, [LedgerEntryKind.GRANT]);
    expect(grants.map((e) => e.amount)).toEqual([1000n, 1000n]);
    expect(grants[1]!.bucketId).toBe(bucket.bucketId);
    expect(grants[1]!.metadata["period_start"]).toBe("2030-06-15T12:00:00.000Z");
    const expires = await entriesOf(t, idle, [LedgerEntryKind.EXPIRE]);
    expect(expires.map((e) => [e.bucketId, e.amount])).toEqual([[firstBucket, 800n]]);
    await expectConsistent(t, idle, clocked);
  });
});

describe("an anchor on January 31", () => {
  const svc = serviceAt(utc(2030, 1, 31, 10));

  it("clamps each period to the month's end, counted from the anchor: Feb 28, Mar 31, Apr 30, May 31, Jun 30", async () => {
    const t = svc();
    const monthly = newAccountId("jan31m");
    const yearly = newAccountId("jan31y");
    await subscribe(t, monthly, "basic-monthly");
    await subscribe(t, yearly, "basic-yearly");
    const timeline = new Timeline(t, [monthly, yearly]);
    const boundaries = [utc(2030, 1, 31, 10), utc(2030, 2, 28, 10), utc(2030, 3, 31, 10), utc(2030, 4, 30, 10), utc(2030, 5, 31, 10), utc(2030, 6, 30, 10)];

    for (const accountId of [monthly, yearly]) {
      const sub = (await balanceOf(t, accountId)).subscription!;
      expect(iso(sub.periodStart)).toBe(boundaries[0]!.toISOString());
      expect(iso(sub.periodEnd)).toBe(boundaries[1]!.toISOString());
    }
    for (let k = 1; k + 1 < boundaries.length; k++) {
      const how = k % 2 === 1 ? "test-clock" : "server";
      await timeline.moveTo(new Date(boundaries[k]!.getTime() - 1), how);
      expect(iso((await balanceOf(t, monthly)).subscription?.periodEnd)).toBe(boundaries[k]!.toISOString());
      await timeline.moveTo(boundaries[k]!, how === "server" ? "test-clock" : "server");
      for (const accountId of [monthly, yearly]) {
        const balance = await balanceOf(t, accountId);
        expect(iso(balance.subscription?.periodStart)).toBe(boundaries[k]!.toISOString());
        expect(iso(balance.subscription?.periodEnd)).toBe(boundaries[k + 1]!.toISOString());
        expect(iso(onlySubscriptionBucket(balance).expiresAt)).toBe(boundaries[k + 1]!.toISOString());
        expect(balance.available).toBe(1000n);
      }
      expect(iso((await balanceOf(t, yearly)).subscription?.billingPeriodEnd)).toBe("2031-01-31T10:00:00.000Z");
    }
    expect(await entriesOf(t, monthly, [LedgerEntryKind.GRANT])).toHaveLength(boundaries.length - 1);
    await expectConsistent(t, monthly, yearly);
  });
});

describe("an anchor on February 29, 2028", () => {
  const svc = serviceAt(utc(2028, 2, 29, 10));

  it("runs Feb 29 → Mar 29 → … → Feb 28, 2029 → Mar 29, 2029, and a yearly plan's billing year ends Feb 28, 2029", async () => {
    const t = svc();
    const monthly = newAccountId("leapm");
    const yearly = newAccountId("leapy");
    await subscribe(t, monthly, "basic-monthly");
    await subscribe(t, yearly, "basic-yearly");
    const timeline = new Timeline(t, [monthly, yearly]);

    let sub = (await balanceOf(t, yearly)).subscription!;
    expect(iso(sub.periodStart)).toBe("2028-02-29T10:00:00.000Z");
    expect(iso(sub.periodEnd)).toBe("2028-03-29T10:00:00.000Z");
    expect(iso(sub.billingPeriodEnd)).toBe("2029-02-28T10:00:00.000Z");

    await timeline.serverTo(utc(2028, 3, 29, 10));
    for (const accountId of [monthly, yearly]) {
      sub = (await balanceOf(t, accountId)).subscription!;
      expect(iso(sub.periodStart)).toBe("2028-03-29T10:00:00.000Z");
      expect(iso(sub.periodEnd)).toBe("2028-04-29T10:00:00.000Z");
    }

    // Eleven months on, one millisecond before the year ends: period 11 is Jan 29 → Feb 28, 2029.
    await timeline.testClockTo(new Date(utc(2029, 2, 28, 10).getTime() - 1));
    for (const accountId of [monthly, yearly]) {
      sub = (await balanceOf(t, accountId)).subscription!;
      expect(iso(sub.periodStart)).toBe("2029-01-29T10:00:00.000Z");
      expect(iso(sub.periodEnd)).toBe("2029-02-28T10:00:00.000Z");
    }
    expect(iso((await balanceOf(t, yearly)).subscription?.billingPeriodEnd)).toBe("2029-02-28T10:00:00.000Z");

    await timeline.serverTo(utc(2029, 2, 28, 10));
    for (const accountId of [monthly, yearly]) {
      const balance = await balanceOf(t, accountId);
      expect(iso(balance.subscription?.periodStart)).toBe("2029-02-28T10:00:00.000Z");
      expect(iso(balance.subscription?.periodEnd)).toBe("2029-03-29T10:00:00.000Z");
      expect(onlySubscriptionBucket(balance).remaining).toBe(1000n);
    }
    const yearlySub = (await balanceOf(t, yearly)).subscription!;
    expect(iso(yearlySub.billingPeriodEnd)).toBe("2030-02-28T10:00:00.000Z");
    expect(iso(yearlySub.billingAnchor)).toBe("2028-02-29T10:00:00.000Z");
    // Period 0, period 1 and the current period 12: nothing for the months nobody looked at.
    expect((await entriesOf(t, monthly, [LedgerEntryKind.GRANT])).map((e) => e.metadata["period_start"])).toEqual([
      "2028-02-29T10:00:00.000Z",
      "2028-03-29T10:00:00.000Z",
      "2029-01-29T10:00:00.000Z",
      "2029-02-28T10:00:00.000Z",
    ]);
    await expectConsistent(t, monthly, yearly);
  });
});

describe("a period boundary passing while holds are open", () => {
  const svc = serviceAt(utc(2030, 1, 15, 12));

  it("the free rest expires at the boundary; commit after it captures the held old credits and the returned part expires; release after it returns then expires; an extra is drawn from the new period", async () => {
    const t = svc();
    const accountId = newAccountId();
    await subscribe(t, accountId, "basic-monthly");
    const timeline = new Timeline(t, [accountId]);
    const boundary = utc(2030, 2, 15, 12);

    await timeline.testClockTo(new Date(boundary.getTime() - HOUR));
    const ttl = { seconds: 24n * 3600n };
    const hold = (amount: bigint) => t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount }, ttl });
    const toCommit = (await hold(300n)).reservation!;
    const toRelease = (await hold(200n)).reservation!;
    const toCommitAbove = (await hold(100n)).reservation!;
    const oldBucket = onlySubscriptionBucket(await balanceOf(t, accountId)).bucketId;
    expect((await balanceOf(t, accountId)).available).toBe(400n);

    // Past the boundary (server clock): only the free 400 expire; the 600 held stay with their holds.
    await timeline.serverTo(new Date(boundary.getTime() + MINUTE));
    let balance = await balanceOf(t, accountId);
    expect(balance.held).toBe(600n);
    expect(balance.available).toBe(1000n);
    const newBucket = onlySubscriptionBucket(balance);
    expect(newBucket.bucketId).not.toBe(oldBucket);
    expect(iso(newBucket.validFrom)).toBe(boundary.toISOString());
    let expires = await entriesOf(t, accountId, [LedgerEntryKind.EXPIRE]);
    expect(expires.map((e) => [e.bucketId, e.amount, e.reservationId])).toEqual([[oldBucket, 400n, ""]]);

    // Commit 250 of 300: 250 captured from the old bucket, the 50 returned expire at once.
    const committed = await t.credit.commit({ reservationId: toCommit.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 250n } });
    expect(committed.reservation?.state).toBe(ReservationState.COMMITTED);
    expect(committed.reservation?.capturedAmount).toBe(250n);
    expect(committed.reservation?.releasedAmount).toBe(50n);
    expect(committed.balance?.available).toBe(1000n);
    expect(committed.balance?.held).toBe(300n);
    let mine = (await entriesOf(t, accountId)).filter((e) => e.reservationId === toCommit.reservationId);
    expect(mine.map((e) => [e.kind, e.bucketId, e.amount])).toEqual([
      [LedgerEntryKind.HOLD, oldBucket, 300n],
      [LedgerEntryKind.CAPTURE, oldBucket, 250n],
      [LedgerEntryKind.RELEASE, oldBucket, 50n],
      [LedgerEntryKind.EXPIRE, oldBucket, 50n],
    ]);

    // Release: the 200 return to the expired bucket and expire; the new period is untouched.
    const released = await t.credit.release({ reservationId: toRelease.reservationId, idempotencyKey: newKey("release"), reason: ReleaseReason.CANCELLED, detail: "" });
    expect(released.reservation?.state).toBe(ReservationState.RELEASED);
    expect(released.reservation?.releasedAmount).toBe(200n);
    expect(released.balance?.available).toBe(1000n);
    expect(released.balance?.held).toBe(100n);
    mine = (await entriesOf(t, accountId)).filter((e) => e.reservationId === toRelease.reservationId);
    expect(mine.map((e) => [e.kind, e.bucketId, e.amount])).toEqual([
      [LedgerEntryKind.HOLD, oldBucket, 200n],
      [LedgerEntryKind.RELEASE, oldBucket, 200n],
      [LedgerEntryKind.EXPIRE, oldBucket, 200n],
    ]);

    // Commit 160 of 100: the held 100 are captured, the extra 60 come from the new period.
    const above = await t.credit.commit({ reservationId: toCommitAbove.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 160n } });
    expect(above.reservation?.capturedAmount).toBe(160n);
    expect(above.balance?.available).toBe(940n);
    expect(above.balance?.held).toBe(0n);
    const captures = (await entriesOf(t, accountId, [LedgerEntryKind.CAPTURE])).filter((e) => e.reservationId === toCommitAbove.reservationId);
    expect(captures.map((e) => [e.bucketId, e.amount])).toEqual([
      [oldBucket, 100n],
      [newBucket.bucketId, 60n],
    ]);

    balance = await balanceOf(t, accountId);
    expect(balance.buckets.map((b) => [b.bucketId, b.remaining, b.held])).toEqual([[newBucket.bucketId, 940n, 0n]]);
    expires = await entriesOf(t, accountId, [LedgerEntryKind.EXPIRE]);
    expect(expires.reduce((s, e) => s + e.amount, 0n)).toBe(650n); // 1000 − 250 − 100 captured from the old period
    await expectConsistent(t, accountId);
  });
});

describe("period roll-over entries", () => {
  const svc = serviceAt(utc(2030, 1, 15, 12));

  it("the new period's GRANT is an automatic movement: caller system and no idempotency key, even when a Reserve crossed the boundary", async () => {
    const t = svc();
    const accountId = newAccountId();
    const subscribeKey = newKey("plan");
    await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: subscribeKey });
    // The first allowance was caused by the ChangePlan call: it carries that call's key.
    const [first] = await entriesOf(t, accountId, [LedgerEntryKind.GRANT]);
    expect(first?.idempotencyKey).toBe(subscribeKey);
    expect(first?.caller).toBe("test-suite");

    t.clock.set(new Date(utc(2030, 2, 15, 12).getTime() + DAY));
    const reserveKey = newKey("res");
    await t.credit.reserve({ accountId, idempotencyKey: reserveKey, cost: { case: "amount", value: 10n } });
    const grants = await entriesOf(t, accountId, [LedgerEntryKind.GRANT]);
    expect(grants).toHaveLength(2);
    expect(grants[1]!.caller).toBe("system");
    expect(grants[1]!.idempotencyKey).toBe("");
    const expiry = await entriesOf(t, accountId, [LedgerEntryKind.EXPIRE]);
    expect(expiry.map((e) => [e.caller, e.idempotencyKey])).toEqual([["system", ""]]);
    await expectConsistent(t, accountId);
  });
});
