import { Code } from "@connectrpc/connect";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AutoTopUpDisabledReason, AutoTopUpOutcome, AutoTopUpState, BucketKind, type Event, EventKind } from "../../src/client/index.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { failureOf, iso } from "../support/e2e.js";
import { accountEvents } from "../support/events.js";

/**
 * Auto top-up through the generated client against a real server: SetAutoTopUp and GetAutoTopUp,
 * the request a change below the threshold makes (once), CompleteAutoTopUp and FailAutoTopUp,
 * expiry of an unanswered request, the monthly cap, and the events of each transition. The
 * server's clock starts at 2030-01-15T12:00Z; time moves with each account's own test clock.
 */

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

let t: TestService;
beforeAll(async () => {
  // Short request timeout (10 minutes) so expiry is reached with small clock steps; 3 failures disable.
  t = await startTestService({ AUTO_TOP_UP_REQUEST_TIMEOUT_SECONDS: "600", AUTO_TOP_UP_MAX_FAILURES: "3" });
});
afterAll(async () => {
  await t.stop();
});

async function funded(amount: bigint): Promise<string> {
  const accountId = newAccountId("atu");
  await t.admin.adjustCredits({ accountId, amount, reason: "auto top-up test", idempotencyKey: newKey("fund") });
  return accountId;
}

type Size = { case: "packId"; value: string } | { case: "targetCredits"; value: bigint };

function setRule(accountId: string, thresholdCredits: bigint, size: Size, extra: { maxPerMonth?: number; enabled?: boolean; key?: string } = {}) {
  return t.admin.setAutoTopUp({ accountId, thresholdCredits, size, maxPerMonth: extra.maxPerMonth ?? 10, enabled: extra.enabled ?? true, idempotencyKey: extra.key ?? newKey("atu") });
}

/** Spends `amount` (Reserve and Commit): a change that moves available credits down. */
async function spend(accountId: string, amount: bigint): Promise<void> {
  const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount }, ttl: durationFromMs(10 * MINUTE) });
  await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: amount } });
}

async function rule(accountId: string) {
  return (await t.admin.getAutoTopUp({ accountId })).rule;
}

function advance(accountId: string, ms: number) {
  return t.admin.advanceTestClock({ accountId, by: durationFromMs(ms), idempotencyKey: newKey("clock") });
}

async function kinds(accountId: string, only: (k: EventKind) => boolean = (k) => k >= EventKind.AUTO_TOP_UP_SET): Promise<Event[]> {
  return (await accountEvents(t, accountId)).filter((e) => only(e.kind));
}

describe("SetAutoTopUp, the request and its answers", () => {
  it("a change below the threshold makes one request; more changes below make none; completing it grants a TOP_UP bucket and re-arms", async () => {
    const accountId = await funded(1_000n);
    const set = await setRule(accountId, 300n, { case: "packId", value: "topup-500" });
    expect(set.rule).toMatchObject({ accountId, thresholdCredits: 300n, maxPerMonth: 10, enabled: true, state: AutoTopUpState.ARMED, monthCount: 0 });
    expect(set.rule?.size).toEqual({ case: "packId", value: "topup-500" });

    await spend(accountId, 600n); // 400 left: above
    expect((await rule(accountId))?.state).toBe(AutoTopUpState.ARMED);
    await spend(accountId, 150n); // 250 left: below
    const requested = await rule(accountId);
    expect(requested?.state).toBe(AutoTopUpState.REQUESTED);
    const out = requested!.outstanding!;
    expect(out).toMatchObject({ requestId: `atu:1:${accountId}`, accountId, credits: 500n, packId: "topup-500", outcome: AutoTopUpOutcome.REQUESTED });
    expect(out.price).toMatchObject({ currencyCode: "USD", amountMinor: 500n });
    expect(iso(out.expiresAt)).toBe(new Date(t.clock.now().getTime() + 10 * MINUTE).toISOString());
    expect(requested?.monthCount).toBe(1);

    // Further changes below the line: no second request while one is out.
    await spend(accountId, 100n);
    await spend(accountId, 100n);
    expect((await rule(accountId))?.outstanding?.requestId).toBe(`atu:1:${accountId}`);

    const done = await t.credit.completeAutoTopUp({ requestId: out.requestId, paymentReference: "pay-1" });
    expect(done.late).toBe(false);
    expect(done.request).toMatchObject({ requestId: out.requestId, outcome: AutoTopUpOutcome.COMPLETED, paymentReference: "pay-1", bucketId: done.bucket!.bucketId });
    expect(done.bucket).toMatchObject({ kind: BucketKind.TOP_UP, granted: 500n, remaining: 500n });
    expect(done.balance?.available).toBe(550n);
    const after = await rule(accountId);
    expect(after).toMatchObject({ state: AutoTopUpState.ARMED, failuresInRow: 0 });
    expect(after?.outstanding).toBeUndefined();

    // Completing again (another payment reference too) answers as the first time and grants nothing.
    const again = await t.credit.completeAutoTopUp({ requestId: out.requestId, paymentReference: "pay-2" });
    expect(again).toEqual(done);
    expect((await t.credit.getBalance({ accountId })).balance?.available).toBe(550n);
    // Failing a completed request is stale: nothing changes.
    const stale = await failureOf(t.credit.failAutoTopUp({ requestId: out.requestId, reason: "card declined" }));
    expect(stale).toMatchObject({ code: Code.FailedPrecondition, reason: "AUTO_TOP_UP_REQUEST_STALE" });

    const events = await kinds(accountId);
    expect(events.map((e) => EventKind[e.kind])).toEqual(["AUTO_TOP_UP_SET", "AUTO_TOP_UP_REQUESTED", "AUTO_TOP_UP_COMPLETED"]);
    const req = events[1]!.payload;
    expect(req.case).toBe("autoTopUpRequested");
    if (req.case === "autoTopUpRequested") {
      expect(req.value.available).toBe(250n);
      expect(req.value.request).toMatchObject({ requestId: out.requestId, credits: 500n, packId: "topup-500" });
    }
    const grants = await kinds(accountId, (k) => k === EventKind.CREDITS_GRANTED);
    expect(grants).toHaveLength(2); // the funding adjustment and the top-up
    const r = await t.admin.reconcile({ accountId });
    expect(r.consistent).toBe(true);
  });

  it("a rule set on an account already below its threshold requests at once, and the answer shows it", async () => {
    const accountId = await funded(100n);
    const set = await setRule(accountId, 300n, { case: "targetCredits", value: 2_000n });
    expect(set.rule?.state).toBe(AutoTopUpState.REQUESTED);
    // Sized by target: what takes available credits (100) to 2000.
    expect(set.rule?.outstanding).toMatchObject({ credits: 1_900n, packId: "" });
    expect(set.rule?.outstanding?.price).toBeUndefined();
    const done = await t.credit.completeAutoTopUp({ requestId: set.rule!.outstanding!.requestId, paymentReference: "pay-target" });
    expect(done.balance?.available).toBe(2_000n);
    expect(done.bucket?.kind).toBe(BucketKind.TOP_UP);
    // A bucket sized by target lasts as the catalog packs do: two calendar months.
    expect(iso(done.bucket?.expiresAt)).toBe(new Date(Date.UTC(2030, 2, 15, 12)).toISOString());
  });

  it("three failed payments in a row disable the rule; setting it again re-arms it and an account still low asks at once", async () => {
    const accountId = await funded(1_000n);
    await spend(accountId, 600n); // 400 left: below the threshold set next
    const set = await setRule(accountId, 500n, { case: "packId", value: "topup-1000" });
    // Set while below: the first request is out at once; fail it, then each change asks again.
    const ids: string[] = [set.rule!.outstanding!.requestId];
    await t.credit.failAutoTopUp({ requestId: ids[0]!, reason: "declined 1" });
    for (let i = 2; i <= 3; i++) {
      await spend(accountId, 10n); // a change below the threshold: the next request
      const r = await rule(accountId);
      expect(r?.state).toBe(AutoTopUpState.REQUESTED);
      ids.push(r!.outstanding!.requestId);
      const failed = await t.credit.failAutoTopUp({ requestId: r!.outstanding!.requestId, reason: `declined ${i}` });
      expect(failed.request).toMatchObject({ outcome: AutoTopUpOutcome.FAILED, failureReason: `declined ${i}` });
      expect(failed.rule?.failuresInRow).toBe(i);
      expect(failed.rule?.state).toBe(i < 3 ? AutoTopUpState.ARMED : AutoTopUpState.DISABLED);
      // The failure itself asks for nothing: the rule waits for the next change.
      expect(failed.rule?.outstanding).toBeUndefined();
    }
    expect(ids).toEqual([1, 2, 3].map((n) => `atu:${n}:${accountId}`));
    expect((await rule(accountId))?.lastFailure?.reason).toBe("declined 3");
    // Failing again answers as before; completing a failed request is stale and grants nothing.
    const again = await t.credit.failAutoTopUp({ requestId: ids[2]!, reason: "other" });
    expect(again.request?.failureReason).toBe("declined 3");
    expect(await failureOf(t.credit.completeAutoTopUp({ requestId: ids[0]!, paymentReference: "late-pay" }))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "AUTO_TOP_UP_REQUEST_STALE",
    });
    const disabled = await rule(accountId);
    expect(disabled).toMatchObject({ state: AutoTopUpState.DISABLED, enabled: false, failuresInRow: 3 });
    expect(disabled?.lastFailure).toMatchObject({ requestId: ids[2], reason: "declined 3" });
    await spend(accountId, 10n);
    expect((await rule(accountId))?.outstanding).toBeUndefined();

    const events = await kinds(accountId);
    const disabledEvent = events.find((e) => e.kind === EventKind.AUTO_TOP_UP_DISABLED);
    expect(disabledEvent?.payload).toMatchObject({ case: "autoTopUpDisabled", value: { reason: AutoTopUpDisabledReason.FAILURES, failuresInRow: 3 } });

    const enabled = await setRule(accountId, 500n, { case: "packId", value: "topup-1000" });
    expect(enabled.rule).toMatchObject({ state: AutoTopUpState.REQUESTED, failuresInRow: 0, enabled: true });
    expect(enabled.rule?.outstanding?.requestId).toBe(`atu:4:${accountId}`);
  });

  it("after a failed payment with no change to follow (refused Reserves change nothing), the rule asks again one request timeout later", async () => {
    const accountId = await funded(100n);
    const set = await setRule(accountId, 500n, { case: "packId", value: "topup-500" });
    const first = set.rule!.outstanding!;
    await spend(accountId, 100n); // exhausted
    const failed = await t.credit.failAutoTopUp({ requestId: first.requestId, reason: "insufficient_funds" });
    expect(iso(failed.rule?.retryAt)).toBe(new Date(t.clock.now().getTime() + 10 * MINUTE).toISOString());
    expect(await failureOf(t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 1n } }))).toMatchObject({ reason: "INSUFFICIENT_CREDITS" });
    t.clock.advance(10 * MINUTE - 1);
    await t.service.sweep();
    expect((await rule(accountId))?.outstanding).toBeUndefined();
    t.clock.advance(1);
    await t.service.sweep();
    const again = await rule(accountId);
    expect(again?.outstanding?.requestId).toBe(`atu:2:${accountId}`);
    expect(again?.retryAt).toBeUndefined();
  });

  it("a request left unanswered expires: the rule asks again with a new id, and the late completion still grants", async () => {
    const accountId = await funded(1_000n);
    await setRule(accountId, 500n, { case: "packId", value: "topup-500" });
    await spend(accountId, 600n);
    const first = (await rule(accountId))!.outstanding!;
    await advance(accountId, 9 * MINUTE);
    expect((await rule(accountId))?.outstanding?.requestId).toBe(first.requestId);
    // Past the expiry, with no other change: the clock step's due work re-arms and asks again.
    await advance(accountId, 2 * MINUTE);
    const second = (await rule(accountId))!.outstanding!;
    expect(second.requestId).toBe(`atu:2:${accountId}`);
    const late = await t.credit.completeAutoTopUp({ requestId: first.requestId, paymentReference: "pay-late" });
    expect(late.late).toBe(true);
    expect(late.request?.outcome).toBe(AutoTopUpOutcome.COMPLETED);
    expect(late.balance?.available).toBe(900n);
    // The late completion leaves the request in flight as it is.
    expect((await rule(accountId))?.outstanding?.requestId).toBe(second.requestId);
    const done = await t.credit.completeAutoTopUp({ requestId: second.requestId, paymentReference: "pay-2" });
    expect(done.late).toBe(false);
    expect(done.balance?.available).toBe(1_400n);
  });

  it("the sweeper expires an unanswered request of an untouched account and asks again", async () => {
    const accountId = await funded(1_000n);
    await setRule(accountId, 500n, { case: "packId", value: "topup-500" });
    await spend(accountId, 600n);
    const first = (await rule(accountId))!.outstanding!;
    t.clock.advance(11 * MINUTE);
    // GetAutoTopUp reads the rule as of now: the request expired (re-armed, not yet asked again).
    expect((await rule(accountId))?.state).toBe(AutoTopUpState.ARMED);
    await t.service.sweep();
    const second = (await rule(accountId))!.outstanding!;
    expect(second.requestId).toBe(`atu:2:${accountId}`);
    const requests = (await kinds(accountId, (k) => k === EventKind.AUTO_TOP_UP_REQUESTED)).map((e) =>
      e.payload.case === "autoTopUpRequested" ? e.payload.value.request?.requestId : "",
    );
    expect(requests).toEqual([first.requestId, second.requestId]);
  });

  it("past max_per_month the rule waits for the next month, says so, and asks when it begins", async () => {
    const accountId = await funded(1_000n);
    await setRule(accountId, 500n, { case: "packId", value: "topup-500" }, { maxPerMonth: 1 });
    await spend(accountId, 600n);
    const first = (await rule(accountId))!.outstanding!;
    await t.credit.completeAutoTopUp({ requestId: first.requestId, paymentReference: "pay-m1" });
    await spend(accountId, 600n); // 300 left: below, but this month's one request is used
    const waiting = await rule(accountId);
    expect(waiting).toMatchObject({ state: AutoTopUpState.ARMED, monthCount: 1 });
    expect(waiting?.outstanding).toBeUndefined();
    expect(iso(waiting?.waitingUntil)).toBe("2030-02-01T00:00:00.000Z");
    // The account's clock reaches February 1st (UTC): the month's count starts again and the rule asks.
    await advance(accountId, 17 * DAY);
    const next = await rule(accountId);
    expect(next?.state).toBe(AutoTopUpState.REQUESTED);
    expect(next?.outstanding?.requestId).toBe(`atu:2:${accountId}`);
    expect(next?.monthCount).toBe(1);
    expect(next?.waitingUntil).toBeUndefined();
  });

  it("a request failed after it expired is recorded and counts no failure; disabling keeps the one out answerable", async () => {
    const accountId = await funded(1_000n);
    await setRule(accountId, 500n, { case: "packId", value: "topup-500" });
    await spend(accountId, 600n);
    const first = (await rule(accountId))!.outstanding!;
    await advance(accountId, 11 * MINUTE);
    const failed = await t.credit.failAutoTopUp({ requestId: first.requestId, reason: "expired and declined" });
    expect(failed.rule).toMatchObject({ failuresInRow: 0, state: AutoTopUpState.REQUESTED });
    const second = failed.rule!.outstanding!;
    const off = await setRule(accountId, 500n, { case: "packId", value: "topup-500" }, { enabled: false });
    expect(off.rule).toMatchObject({ state: AutoTopUpState.DISABLED, enabled: false });
    expect(off.rule?.outstanding?.requestId).toBe(second.requestId);
    const done = await t.credit.completeAutoTopUp({ requestId: second.requestId, paymentReference: "pay-after-off" });
    expect(done.balance?.available).toBe(900n);
    await spend(accountId, 600n);
    expect((await rule(accountId))?.outstanding).toBeUndefined();
    const disabled = (await kinds(accountId, (k) => k === EventKind.AUTO_TOP_UP_DISABLED)).map((e) => e.payload);
    expect(disabled).toEqual([expect.objectContaining({ case: "autoTopUpDisabled", value: expect.objectContaining({ reason: AutoTopUpDisabledReason.SET }) })]);
  });
});

describe("bad input changes nothing", () => {
  it("refuses bad settings with INVALID_ARGUMENT naming the field, an unknown account with NOT_FOUND", async () => {
    const accountId = await funded(1_000n);
    const field = async (call: Promise<unknown>) => {
      const f = await failureOf(call);
      expect(f.code).toBe(Code.InvalidArgument);
      return f.metadata["field"];
    };
    expect(await field(setRule(accountId, 0n, { case: "packId", value: "topup-500" }))).toBe("threshold_credits");
    expect(await field(setRule(accountId, -5n, { case: "packId", value: "topup-500" }))).toBe("threshold_credits");
    expect(await field(setRule(accountId, 100n, { case: "packId", value: "topup-7" }))).toBe("pack_id");
    expect(await field(setRule(accountId, 100n, { case: "targetCredits", value: 100n }))).toBe("target_credits");
    expect(await field(setRule(accountId, 100n, { case: "targetCredits", value: -1n }))).toBe("target_credits");
    expect(await field(setRule(accountId, 100n, { case: "packId", value: "topup-500" }, { maxPerMonth: 0 }))).toBe("max_per_month");
    expect(await field(t.admin.setAutoTopUp({ accountId, thresholdCredits: 100n, maxPerMonth: 1, enabled: true, idempotencyKey: newKey("x") }))).toBe("size");
    expect(await field(t.credit.failAutoTopUp({ requestId: `atu:1:${accountId}`, reason: "" }))).toBe("reason");
    expect(await rule(accountId)).toBeUndefined();
    expect((await failureOf(setRule(newAccountId("nobody"), 100n, { case: "packId", value: "topup-500" }))).code).toBe(Code.NotFound);
    expect((await failureOf(t.admin.getAutoTopUp({ accountId: newAccountId("nobody") }))).code).toBe(Code.NotFound);
    for (const requestId of ["not-a-request", `atu:1:${accountId}`, `atu:0:${accountId}`, `atu:1:${newAccountId("nobody")}`]) {
      const f = await failureOf(t.credit.completeAutoTopUp({ requestId, paymentReference: "pay" }));
      expect(f.code, requestId).toBe(Code.NotFound);
    }
    expect((await t.credit.getBalance({ accountId })).balance?.available).toBe(1_000n);
    expect(await kinds(accountId)).toEqual([]);
  });
});
