import { createHash, randomUUID } from "node:crypto";
import { toBinary } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { BucketKind, createCreditClients, GetBalanceResponseSchema, LedgerEntryKind, PlanChangeKind, ReservationState } from "../../src/client/index.js";
import { newAccountId, newKey, TEST_EPOCH, type TestService } from "../support/harness.js";
import { failureOf, iso, serviceAt } from "../support/e2e.js";

/**
 * AdvanceTestClock through the real server: one account's own clock moves ahead of server time,
 * and whatever falls due by that account's time is applied (period resets, scheduled changes,
 * hold expiry). Refused in production.
 */

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
const MAX_STEP_SECONDS = 400n * 24n * 3600n;

async function balanceBytes(t: TestService, accountId: string): Promise<Uint8Array> {
  return toBinary(GetBalanceResponseSchema, await t.credit.getBalance({ accountId }));
}

async function entriesOf(t: TestService, accountId: string, kinds: LedgerEntryKind[] = []) {
  const res = await t.admin.listLedgerEntries({ accountId, kinds, pageSize: 1000 });
  expect(res.nextPageToken).toBe("");
  return res.entries;
}

async function spend(t: TestService, accountId: string, amount: bigint) {
  const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount } });
  await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: amount } });
}

describe("AdvanceTestClock on a subscriber", () => {
  const svc = serviceAt(TEST_EPOCH);

  it("moving an account's clock past a period boundary resets its allowance in GetBalance; server time and other accounts stay put", async () => {
    const t = svc();
    const accountId = newAccountId();
    const bystander = newAccountId();
    await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") });
    await t.credit.changePlan({ accountId: bystander, planId: "basic-monthly", idempotencyKey: newKey("plan") });
    await spend(t, accountId, 300n);
    const serverNow = t.clock.now();
    const firstBucket = (await t.credit.getBalance({ accountId })).balance!.buckets[0]!.bucketId;
    const bystanderBefore = await balanceBytes(t, bystander);

    // Jan 15 12:00 → Feb 15 13:00: 31 days and an hour.
    const res = await t.admin.advanceTestClock({ accountId, by: { seconds: BigInt((31 * DAY + 60 * MINUTE) / 1000), nanos: 0 }, idempotencyKey: newKey("clock") });
    expect(iso(res.now)).toBe("2030-02-15T13:00:00.000Z");
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance).toEqual(res.balance);
    expect(iso(balance?.asOf)).toBe("2030-02-15T13:00:00.000Z");
    expect(iso(balance?.subscription?.periodStart)).toBe("2030-02-15T12:00:00.000Z");
    expect(iso(balance?.subscription?.periodEnd)).toBe("2030-03-15T12:00:00.000Z");
    expect(balance?.available).toBe(1000n);
    expect(balance?.buckets.map((b) => [b.kind, b.granted, b.remaining])).toEqual([[BucketKind.SUBSCRIPTION, 1000n, 1000n]]);
    const expires = await entriesOf(t, accountId, [LedgerEntryKind.EXPIRE]);
    expect(expires.map((e) => [e.bucketId, e.amount])).toEqual([[firstBucket, 700n]]);
    expect(iso(expires[0]!.createdAt)).toBe("2030-02-15T13:00:00.000Z");

    expect(t.clock.now()).toEqual(serverNow);
    expect(await balanceBytes(t, bystander)).toEqual(bystanderBefore);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a scheduled downgrade takes effect when the account's clock passes the billing period end", async () => {
    const t = svc();
    const accountId = newAccountId();
    const subscribed = await t.credit.changePlan({ accountId, planId: "max-monthly", idempotencyKey: newKey("plan") });
    const periodEnd = timestampDate(subscribed.subscription!.billingPeriodEnd!);
    const scheduled = await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") });
    expect(scheduled.change).toBe(PlanChangeKind.DOWNGRADE_SCHEDULED);
    expect(timestampDate(scheduled.effectiveAt!)).toEqual(periodEnd);

    const untilJustBefore = periodEnd.getTime() - t.clock.now().getTime() - 1;
    const before = await t.admin.advanceTestClock({ accountId, by: durationFromMs(untilJustBefore), idempotencyKey: newKey("clock") });
    expect(before.balance?.subscription?.planId).toBe("max-monthly");
    expect(before.balance?.subscription?.scheduledChange?.planId).toBe("basic-monthly");
    expect(before.balance?.available).toBe(20000n);

    await t.admin.advanceTestClock({ accountId, by: durationFromMs(1), idempotencyKey: newKey("clock") });
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.subscription).toMatchObject({ planId: "basic-monthly", monthlyAllowance: 1000n });
    expect(balance?.subscription?.scheduledChange).toBeUndefined();
    expect(timestampDate(balance!.subscription!.periodStart!)).toEqual(periodEnd);
    expect(balance?.available).toBe(1000n);
    expect(balance?.buckets.map((b) => [b.kind, b.granted])).toEqual([[BucketKind.SUBSCRIPTION, 1000n]]);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("retrying AdvanceTestClock with the same key moves the clock once and returns the original response", async () => {
    const t = svc();
    const accountId = newAccountId();
    await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") });
    const key = newKey("clock");
    const first = await t.admin.advanceTestClock({ accountId, by: durationFromMs(3 * DAY), idempotencyKey: key });
    const again = await t.admin.advanceTestClock({ accountId, by: durationFromMs(3 * DAY), idempotencyKey: key });
    expect(again).toEqual(first);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(iso(balance?.asOf)).toBe(iso(first.now));
    expect(timestampDate(first.now!).getTime() - t.clock.now().getTime()).toBe(3 * DAY);

    const reused = await failureOf(t.admin.advanceTestClock({ accountId, by: durationFromMs(4 * DAY), idempotencyKey: key }));
    expect(reused.code).toBe(Code.InvalidArgument);
    expect(reused.reason).toBe("IDEMPOTENCY_KEY_REUSED");
  });
});

describe("AdvanceTestClock refusals", () => {
  const svc = serviceAt(TEST_EPOCH);

  it("an unknown account is NOT_FOUND ACCOUNT_NOT_FOUND and is not created", async () => {
    const t = svc();
    const accountId = newAccountId("ghost");
    const failure = await failureOf(t.admin.advanceTestClock({ accountId, by: durationFromMs(DAY), idempotencyKey: newKey("clock") }));
    expect(failure.code).toBe(Code.NotFound);
    expect(failure.reason).toBe("ACCOUNT_NOT_FOUND");
    expect((await failureOf(t.credit.getBalance({ accountId }))).reason).toBe("ACCOUNT_NOT_FOUND");
  });

  it("a step of zero, a negative step, a missing step or more than 400 days is INVALID_ARGUMENT on field by and moves nothing", async () => {
    const t = svc();
    const accountId = newAccountId();
    await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") });
    const before = await balanceBytes(t, accountId);
    const steps = [
      { seconds: 0n, nanos: 0 },
      { seconds: -1n, nanos: 0 },
      { seconds: 0n, nanos: -1 },
      { seconds: BigInt(-DAY / 1000), nanos: 0 },
      { seconds: MAX_STEP_SECONDS + 1n, nanos: 0 },
      { seconds: MAX_STEP_SECONDS, nanos: 1_000_000 },
      { seconds: 10n * MAX_STEP_SECONDS, nanos: 0 },
    ];
    for (const by of steps) {
      const failure = await failureOf(t.admin.advanceTestClock({ accountId, by, idempotencyKey: newKey("clock") }));
      expect(failure.code, JSON.stringify({ seconds: String(by.seconds), nanos: by.nanos })).toBe(Code.InvalidArgument);
      expect(failure.reason).toBe("INVALID_FIELD");
      expect(failure.metadata["field"]).toBe("by");
    }
    const missing = await failureOf(t.admin.advanceTestClock({ accountId, idempotencyKey: newKey("clock") }));
    expect(missing.code).toBe(Code.InvalidArgument);
    expect(missing.metadata["field"]).toBe("by");
    expect(await balanceBytes(t, accountId)).toEqual(before);
  });

  it("a step of exactly 400 days is accepted", async () => {
    const t = svc();
    const accountId = newAccountId();
    await t.credit.changePlan({ accountId, planId: "basic-yearly", idempotencyKey: newKey("plan") });
    const res = await t.admin.advanceTestClock({ accountId, by: { seconds: MAX_STEP_SECONDS, nanos: 0 }, idempotencyKey: newKey("clock") });
    expect(timestampDate(res.now!).getTime() - t.clock.now().getTime()).toBe(400 * DAY);
    // 400 days after Jan 15, 2030 12:00 is Feb 19, 2031: allowance month 13, billing year 2.
    expect(iso(res.balance?.subscription?.periodStart)).toBe("2031-02-15T12:00:00.000Z");
    expect(iso(res.balance?.subscription?.billingPeriodEnd)).toBe("2032-01-15T12:00:00.000Z");
    expect(res.balance?.available).toBe(1000n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});

describe("holds on a test-clock account", () => {
  const svc = serviceAt(TEST_EPOCH);

  it("expire by the account's clock: a 60 s hold is EXPIRED after the test clock moves 2 minutes, while server time has not moved", async () => {
    const t = svc();
    const accountId = newAccountId();
    const bystander = newAccountId();
    for (const id of [accountId, bystander]) {
      await t.admin.adjustCredits({ accountId: id, amount: 500n, reason: "test clock funding", idempotencyKey: newKey("fund") });
    }
    const ttl = { seconds: 60n };
    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 120n }, ttl });
    const other = await t.credit.reserve({ accountId: bystander, idempotencyKey: newKey("res"), cost: { case: "amount", value: 120n }, ttl });
    const id = r.reservation!.reservationId;
    const serverNow = t.clock.now();

    await t.admin.advanceTestClock({ accountId, by: { seconds: 120n, nanos: 0 }, idempotencyKey: newKey("clock") });
    const read = await t.credit.getReservation({ reservationId: id });
    expect(read.reservation?.state).toBe(ReservationState.EXPIRED);
    expect(read.reservation?.releasedAmount).toBe(120n);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(500n);
    expect(balance?.held).toBe(0n);
    const releases = (await entriesOf(t, accountId, [LedgerEntryKind.RELEASE])).filter((e) => e.reservationId === id);
    expect(releases.reduce((s, e) => s + e.amount, 0n)).toBe(120n);
    expect(releases.every((e) => e.caller === "system")).toBe(true);
    const commit = await failureOf(t.credit.commit({ reservationId: id, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 120n } }));
    expect(commit.reason).toBe("RESERVATION_EXPIRED");

    // Server time did not move: the other account's 60 s hold is still open.
    expect(t.clock.now()).toEqual(serverNow);
    expect((await t.credit.getReservation({ reservationId: other.reservation!.reservationId })).reservation?.state).toBe(ReservationState.HELD);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a hold taken on a test-clock account gets its expiry from the account's clock and is judged by it when only server time moves", async () => {
    const t = svc();
    const accountId = newAccountId();
    await t.admin.adjustCredits({ accountId, amount: 100n, reason: "test clock funding", idempotencyKey: newKey("fund") });
    const moved = await t.admin.advanceTestClock({ accountId, by: durationFromMs(5 * DAY), idempotencyKey: newKey("clock") });
    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 10n }, ttl: { seconds: 60n } });
    expect(r.reservation?.createdAt).toEqual(moved.now);
    expect(timestampDate(r.reservation!.expiresAt!).getTime()).toBe(timestampDate(moved.now!).getTime() + 60_000);
    // Still open after 59 s of the account's time; expired at 60 s.
    await t.admin.advanceTestClock({ accountId, by: durationFromMs(59_000), idempotencyKey: newKey("clock") });
    expect((await t.credit.getReservation({ reservationId: r.reservation!.reservationId })).reservation?.state).toBe(ReservationState.HELD);
    // The last second passes on the server clock: GetReservation judges the hold by the account's
    // time (5 days ahead), not by server time, by which it has 5 days left.
    t.clock.advance(1_000);
    const read = await t.credit.getReservation({ reservationId: r.reservation!.reservationId });
    expect(read.reservation?.state).toBe(ReservationState.EXPIRED);
    expect(read.reservation?.settledAt).toEqual(r.reservation?.expiresAt);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(100n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});

describe("AdvanceTestClock in production", () => {
  // Production refuses to start without authentication (one admin token, so every method may be called) and an idempotency secret.
  const token = `admin-token-${randomUUID()}`;
  const svc = serviceAt(TEST_EPOCH, {
    ENVIRONMENT: "production",
    AUTH_TOKENS: `plans-admin:admin:${createHash("sha256").update(token).digest("hex")}`,
    IDEMPOTENCY_SECRET: randomUUID() + randomUUID(),
  });

  it("a service started with ENVIRONMENT=production refuses it with FAILED_PRECONDITION TEST_CLOCK_DISABLED and moves nothing", async () => {
    const t = svc();
    const { credit, admin } = createCreditClients({ baseUrl: `http://127.0.0.1:${t.service.port}`, token });
    const accountId = newAccountId();
    await credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") });
    const before = toBinary(GetBalanceResponseSchema, await credit.getBalance({ accountId }));
    const failure = await failureOf(admin.advanceTestClock({ accountId, by: durationFromMs(40 * DAY), idempotencyKey: newKey("clock") }));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("TEST_CLOCK_DISABLED");
    const after = await credit.getBalance({ accountId });
    expect(toBinary(GetBalanceResponseSchema, after)).toEqual(before);
    expect(iso(after.balance?.asOf)).toBe(t.clock.now().toISOString());
    expect(iso(after.balance?.subscription?.periodStart)).toBe(TEST_EPOCH.toISOString());
  });
});
