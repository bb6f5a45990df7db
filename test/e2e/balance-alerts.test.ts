import { durationFromMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BalanceAlertState, type Event, EventKind } from "../../src/client/index.js";
import { failureOf } from "../support/e2e.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { accountEvents } from "../support/events.js";

/**
 * Balance alerts and expiry notices through the real server and the generated client, read back
 * from the event feed: a storm of Reserves crossing the threshold states BALANCE_LOW once,
 * EXHAUSTED at 0, RECOVERED past the hysteresis, the configured default for plan accounts,
 * SetBalanceAlert's refusals, and CREDITS_EXPIRING once per bucket on a test clock and by the sweeper.
 */

const DAY = 24 * 60 * 60 * 1000;
let t: TestService;
beforeAll(async () => {
  t = await startTestService({ EVENT_SEQUENCER_INTERVAL_MS: "50", DB_MAX_BATCH: "16" });
});
afterAll(async () => {
  await t.stop();
});

/** Every event of the account once the feed holds its latest change (test/support/events.ts). */
function eventsOf(accountId: string): Promise<Event[]> {
  return accountEvents(t, accountId);
}

function kindsOf(events: readonly Event[], ...kinds: EventKind[]): string[] {
  return events.filter((e) => kinds.includes(e.kind)).map((e) => EventKind[e.kind]);
}

const ALERTS = [EventKind.BALANCE_LOW, EventKind.BALANCE_EXHAUSTED, EventKind.BALANCE_RECOVERED];

function fund(accountId: string, amount: bigint, expiresAt?: Date) {
  return t.admin.adjustCredits({ accountId, amount, reason: "alerts test", idempotencyKey: newKey("fund"), ...(expiresAt ? { expiresAt: timestampFromDate(expiresAt) } : {}) });
}

function reserve(accountId: string, amount: bigint) {
  return t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount }, ttl: { seconds: 600n } });
}

function alertCredits(accountId: string, credits: bigint, idempotencyKey = newKey("alert")) {
  return t.admin.setBalanceAlert({ accountId, threshold: { case: "credits", value: credits }, idempotencyKey });
}

describe("balance alerts", () => {
  it("200 concurrent Reserves crossing the threshold state exactly one BALANCE_LOW; EXHAUSTED at 0; RECOVERED after a top-up", async () => {
    const accountId = newAccountId("alert-storm");
    await fund(accountId, 1000n);
    const set = await alertCredits(accountId, 500n);
    expect(set.alert).toMatchObject({ thresholdCredits: 500n, recoverAt: 550n, state: BalanceAlertState.ARMED, active: true, isDefault: false });
    expect(set.alert?.threshold).toEqual({ case: "credits", value: 500n });

    // 200 × 4 = 800 held: available falls from 1000 to 200, crossing 500 somewhere in the storm.
    const held = await Promise.all(Array.from({ length: 200 }, () => reserve(accountId, 4n)));
    expect(held.at(-1)).toBeDefined();
    expect((await t.credit.getBalance({ accountId })).balance?.available).toBe(200n);
    let events = await eventsOf(accountId);
    expect(kindsOf(events, ...ALERTS)).toEqual(["BALANCE_LOW"]);
    const low = events.find((e) => e.kind === EventKind.BALANCE_LOW)!;
    expect(low.payload.case).toBe("balanceAlert");
    const payload = low.payload.value as { available: bigint; threshold: bigint; recoverAt: bigint };
    expect(payload.threshold).toBe(500n);
    expect(payload.recoverAt).toBe(550n);
    expect(payload.available).toBeLessThan(500n);
    expect(payload.available).toBeGreaterThanOrEqual(496n); // the Reserve that crossed, not a later one
    // It is part of the change record that crossed: that Reserve's HOLD_CREATED shares its sequence.
    const crossing = events.filter((e) => e.accountSequence === low.accountSequence).map((e) => EventKind[e.kind]);
    expect(crossing).toEqual(["HOLD_CREATED", "BALANCE_LOW"]);

    // Down to 0: EXHAUSTED; a credit back and spent again (still short of the hysteresis) tells nothing more.
    await reserve(accountId, 200n);
    await fund(accountId, 1n);
    await reserve(accountId, 1n);
    events = await eventsOf(accountId);
    expect(kindsOf(events, ...ALERTS)).toEqual(["BALANCE_LOW", "BALANCE_EXHAUSTED"]);

    // A top-up short of threshold + hysteresis re-arms nothing; past it, RECOVERED.
    await fund(accountId, 549n);
    events = await eventsOf(accountId);
    expect(kindsOf(events, ...ALERTS)).toEqual(["BALANCE_LOW", "BALANCE_EXHAUSTED"]);
    await fund(accountId, 1n);
    events = await eventsOf(accountId);
    expect(kindsOf(events, ...ALERTS)).toEqual(["BALANCE_LOW", "BALANCE_EXHAUSTED", "BALANCE_RECOVERED"]);
    const recovered = events.at(-1)!;
    expect(EventKind[recovered.kind]).toBe("BALANCE_RECOVERED");
    expect((recovered.payload.value as { available: bigint }).available).toBe(550n);
  });

  it("SetBalanceAlert is a change record (BALANCE_ALERT_SET) and replays with its key", async () => {
    const accountId = newAccountId("alert-set");
    await fund(accountId, 100n);
    const before = (await t.credit.getBalance({ accountId })).sequence;
    const key = newKey("alert");
    const first = await alertCredits(accountId, 150n, key);
    const again = await alertCredits(accountId, 150n, key);
    expect(again).toEqual(first);
    expect(first.alert?.state).toBe(BalanceAlertState.LOW); // judged at once: 100 < 150
    expect((await t.credit.getBalance({ accountId })).sequence).toBe(before + 1n);
    const events = await eventsOf(accountId);
    expect(events.filter((e) => e.accountSequence === before + 1n).map((e) => EventKind[e.kind])).toEqual(["BALANCE_ALERT_SET", "BALANCE_LOW"]);
    const reused = await failureOf(alertCredits(accountId, 10n, key));
    expect([reused.code, reused.reason]).toEqual([Code.InvalidArgument, "IDEMPOTENCY_KEY_REUSED"]);
  });

  it("applies the default percent of the plan's allowance to a plan account with no alert of its own", async () => {
    const accountId = newAccountId("alert-default");
    await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") }); // 1000 a month: default 10 % = 100
    await reserve(accountId, 850n);
    expect(kindsOf(await eventsOf(accountId), ...ALERTS)).toEqual([]);
    await reserve(accountId, 51n); // available 99
    const events = await eventsOf(accountId);
    expect(kindsOf(events, ...ALERTS)).toEqual(["BALANCE_LOW"]);
    const low = events.at(-1)!.payload.value as { available: bigint; threshold: bigint; recoverAt: bigint; setting?: { isDefault: boolean } };
    expect([low.available, low.threshold, low.recoverAt, low.setting?.isDefault]).toEqual([99n, 100n, 110n, true]);
    // An account without a plan has no default alert.
    const noPlan = newAccountId("alert-noplan");
    await fund(noPlan, 10n);
    await reserve(noPlan, 10n);
    expect(kindsOf(await eventsOf(noPlan), ...ALERTS)).toEqual([]);
  });

  it("due work crosses the line too: an expiry found by the sweeper states BALANCE_LOW, a period reset on a test clock BALANCE_RECOVERED", async () => {
    const expiring = newAccountId("alert-expiry");
    await fund(expiring, 100n, new Date(t.clock.now().getTime() + DAY));
    await fund(expiring, 20n);
    await alertCredits(expiring, 50n);
    t.clock.advance(DAY + 1000);
    await t.service.sweep();
    const events = await eventsOf(expiring);
    const last = events.at(-1)!;
    // The sweeper's change record: the expiry and the crossing it caused, under one sequence.
    expect(events.filter((e) => e.accountSequence === last.accountSequence).map((e) => EventKind[e.kind])).toEqual(["CREDITS_EXPIRED", "BALANCE_LOW"]);
    expect((last.payload.value as { available: bigint }).available).toBe(20n);

    const resetting = newAccountId("alert-reset");
    await t.credit.changePlan({ accountId: resetting, planId: "basic-monthly", idempotencyKey: newKey("plan") });
    const spent = await reserve(resetting, 950n);
    await t.credit.commit({ reservationId: spent.reservation!.reservationId, idempotencyKey: newKey("c"), actual: { case: "amount", value: 950n } });
    await t.admin.advanceTestClock({ accountId: resetting, by: durationFromMs(32 * DAY), idempotencyKey: newKey("clock") });
    const reset = await eventsOf(resetting);
    expect(kindsOf(reset, ...ALERTS)).toEqual(["BALANCE_LOW", "BALANCE_RECOVERED"]);
    const recovered = reset.at(-1)!;
    expect(EventKind[recovered.kind]).toBe("BALANCE_RECOVERED");
    expect(reset.filter((e) => e.accountSequence === recovered.accountSequence).map((e) => EventKind[e.kind])).toContain("PERIOD_RENEWED");
  });

  it("refuses bad thresholds and unknown accounts, changing nothing", async () => {
    const accountId = newAccountId("alert-bad");
    await fund(accountId, 100n);
    const sequence = (await t.credit.getBalance({ accountId })).sequence;
    const bad = [
      { threshold: { case: undefined }, field: "threshold" },
      { threshold: { case: "percentOfAllowance" as const, value: 0 }, field: "percent_of_allowance" },
      { threshold: { case: "percentOfAllowance" as const, value: 101 }, field: "percent_of_allowance" },
      { threshold: { case: "credits" as const, value: -1n }, field: "credits" },
    ];
    for (const { threshold, field } of bad) {
      const failure = await failureOf(t.admin.setBalanceAlert({ accountId, threshold, idempotencyKey: newKey("alert") }));
      expect([failure.code, failure.reason, failure.metadata["field"]]).toEqual([Code.InvalidArgument, "INVALID_FIELD", field]);
    }
    const missing = await failureOf(alertCredits(newAccountId("alert-missing"), 10n));
    expect([missing.code, missing.reason]).toEqual([Code.NotFound, "ACCOUNT_NOT_FOUND"]);
    expect((await t.credit.getBalance({ accountId })).sequence).toBe(sequence);
  });
});

describe("CREDITS_EXPIRING", () => {
  it("is told once per bucket, EXPIRY_NOTICE_DAYS before it expires, on the account's test clock", async () => {
    const accountId = newAccountId("expiring-clock");
    const now = t.clock.now();
    await fund(accountId, 40n, new Date(now.getTime() + 10 * DAY)); // noticed at day 3
    await fund(accountId, 25n, new Date(now.getTime() + 20 * DAY)); // noticed at day 13
    await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") }); // its allowance resets: no notices
    const step = (days: number) => t.admin.advanceTestClock({ accountId, by: durationFromMs(days * DAY), idempotencyKey: newKey("clock") });
    await step(2);
    expect(kindsOf(await eventsOf(accountId), EventKind.CREDITS_EXPIRING)).toEqual([]);
    await step(1);
    let events = await eventsOf(accountId);
    const notices = events.filter((e) => e.kind === EventKind.CREDITS_EXPIRING);
    expect(notices).toHaveLength(1);
    const notice = notices[0]!;
    // Told in the clock step's own change record, with the bucket's free credits and expiry.
    expect(events.filter((e) => e.accountSequence === notice.accountSequence).map((e) => EventKind[e.kind])).toEqual(["TEST_CLOCK_ADVANCED", "CREDITS_EXPIRING"]);
    const value = notice.payload.value as { amount: bigint; expiresAt: { seconds: bigint } };
    expect(value.amount).toBe(40n);
    expect(timestampDate(value.expiresAt as never).getTime()).toBe(now.getTime() + 10 * DAY);
    await step(5); // day 8: nothing new for the first bucket
    await step(5); // day 13: the second bucket's notice; the first bucket expired at day 10
    events = await eventsOf(accountId);
    expect(events.filter((e) => e.kind === EventKind.CREDITS_EXPIRING).map((e) => (e.payload.value as { amount: bigint }).amount)).toEqual([40n, 25n]);
    expect(kindsOf(events, EventKind.CREDITS_EXPIRED)).toEqual(["CREDITS_EXPIRED"]);
  });

  it("reaches an account nobody touches through the sweeper", async () => {
    const accountId = newAccountId("expiring-sweep");
    await fund(accountId, 30n, new Date(t.clock.now().getTime() + 8 * DAY));
    await t.service.sweep();
    expect(kindsOf(await eventsOf(accountId), EventKind.CREDITS_EXPIRING)).toEqual([]);
    t.clock.advance(DAY + 1000);
    await t.service.sweep();
    expect(kindsOf(await eventsOf(accountId), EventKind.CREDITS_EXPIRING)).toEqual(["CREDITS_EXPIRING"]);
    await t.service.sweep();
    expect(kindsOf(await eventsOf(accountId), EventKind.CREDITS_EXPIRING)).toEqual(["CREDITS_EXPIRING"]);
  });
});
