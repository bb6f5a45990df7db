import { Code } from "@connectrpc/connect";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventKind, LimitMode, ReleaseReason, ReservationState, SpendPeriod } from "../../src/client/index.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { failureOf } from "../support/e2e.js";
import { accountEvents } from "../support/events.js";

/**
 * Spend limits through the generated client against a real server: SetSpendLimit,
 * RemoveSpendLimit, GetSpendLimits, and Reserve / Commit refused (or, SOFT, noted) under the
 * account's lock. The server's clock starts at 2030-01-15T12:00Z (a Tuesday); period boundaries
 * are reached with each account's own test clock.
 */

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

let t: TestService;
let db: pg.Pool;
beforeAll(async () => {
  t = await startTestService();
  db = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 1 });
});
afterAll(async () => {
  await db.end();
  await t.stop();
});

async function funded(amount = 100_000n): Promise<string> {
  const accountId = newAccountId("spend");
  await t.admin.adjustCredits({ accountId, amount, reason: "spend test", idempotencyKey: newKey("fund") });
  return accountId;
}

function limit(accountId: string, memberId: string, period: SpendPeriod, maxCredits: bigint, extra: { mode?: LimitMode; timeZone?: string; key?: string } = {}) {
  return t.admin.setSpendLimit({ accountId, memberId, period, maxCredits, mode: extra.mode ?? LimitMode.HARD, timeZone: extra.timeZone ?? "", idempotencyKey: extra.key ?? newKey("limit") });
}

function reserve(accountId: string, amount: bigint, memberId = "", ttlMs = 10 * MINUTE) {
  return t.credit.reserve({ accountId, idempotencyKey: newKey("res"), memberId, cost: { case: "amount", value: amount }, ttl: durationFromMs(ttlMs) });
}

function commit(reservationId: string, amount: bigint) {
  return t.credit.commit({ reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: amount } });
}

async function spend(accountId: string, amount: bigint, memberId = "") {
  const r = await reserve(accountId, amount, memberId);
  await commit(r.reservation!.reservationId, amount);
}

function advance(accountId: string, ms: number) {
  return t.admin.advanceTestClock({ accountId, by: durationFromMs(ms), idempotencyKey: newKey("clock") });
}

async function limits(accountId: string, memberId = "") {
  return (await t.credit.getSpendLimits({ accountId, memberId })).limits;
}

async function outcomes(calls: Promise<unknown>[]): Promise<string[]> {
  return Promise.all(calls.map((c) => c.then(() => "held", async () => (await failureOf(c)).reason ?? "?")));
}

async function consistent(accountId: string) {
  const r = await t.admin.reconcile({ accountId });
  expect(r.differences).toEqual([]);
  expect(r.consistent).toBe(true);
}

describe("SetSpendLimit and Reserve", () => {
  it("200 concurrent Reserves of 7 by one member against a hard limit of 1000: exactly 142 are held, the rest SPEND_LIMIT_EXCEEDED", async () => {
    const accountId = await funded();
    await limit(accountId, "alice", SpendPeriod.DAY, 1000n);
    const results = await outcomes(Array.from({ length: 200 }, () => reserve(accountId, 7n, "alice")));
    expect(results.filter((r) => r === "held")).toHaveLength(142);
    expect(results.filter((r) => r === "SPEND_LIMIT_EXCEEDED")).toHaveLength(58);
    expect((await t.credit.getBalance({ accountId })).balance?.held).toBe(994n);

    const refused = await failureOf(reserve(accountId, 7n, "alice"));
    expect(refused.code).toBe(Code.FailedPrecondition);
    expect(refused.metadata).toMatchObject({
      scope: "member",
      member_id: "alice",
      period: "DAY",
      limit: "1000",
      used: "0",
      held: "994",
      requested: "7",
      resets_at: "2030-01-16T00:00:00.000Z",
    });
    // Another member, and the account's holds of no member, are not limited by alice's limit.
    await reserve(accountId, 500n, "bob");
    await reserve(accountId, 500n);
    await consistent(accountId);
  });

  it("counts what Commits capture from holds started in the period and what runs; released and expired holds count nothing", async () => {
    const accountId = await funded();
    await limit(accountId, "", SpendPeriod.WEEK, 100n);
    const committed = await reserve(accountId, 40n, "m1");
    await commit(committed.reservation!.reservationId, 30n); // a partial commit counts what it captured
    const released = await reserve(accountId, 50n, "m2");
    await t.credit.release({ reservationId: released.reservation!.reservationId, idempotencyKey: newKey(), reason: ReleaseReason.GENERATION_FAILED });
    await reserve(accountId, 20n, "m1", 60_000); // expires below
    const running = await reserve(accountId, 10n, "m3");

    let [week] = await limits(accountId);
    expect(week).toMatchObject({ memberId: "", period: SpendPeriod.WEEK, maxCredits: 100n, used: 30n, held: 30n, remaining: 40n, timeZone: "UTC" });
    expect(timestampDate(week!.periodStart!).toISOString()).toBe("2030-01-14T00:00:00.000Z"); // Monday
    expect(timestampDate(week!.resetsAt!).toISOString()).toBe("2030-01-21T00:00:00.000Z");

    await advance(accountId, 2 * MINUTE); // the 20-credit hold expires: it counts nothing
    [week] = await limits(accountId);
    expect(week).toMatchObject({ used: 30n, held: 10n, remaining: 60n });
    expect((await failureOf(reserve(accountId, 61n, "m4"))).reason).toBe("SPEND_LIMIT_EXCEEDED");
    await reserve(accountId, 60n, "m4"); // exactly up to the limit
    await commit(running.reservation!.reservationId, 10n);
    [week] = await limits(accountId);
    expect(week).toMatchObject({ used: 40n, held: 60n, remaining: 0n });
    await consistent(accountId);
  });

  it("a Commit above its hold counts the extra, and one a hard limit would not allow fails like insufficient credits with the hold left open", async () => {
    const accountId = await funded();
    await limit(accountId, "carol", SpendPeriod.LIFETIME, 100n);
    const r = await reserve(accountId, 50n, "carol");
    const over = await failureOf(commit(r.reservation!.reservationId, 120n));
    expect(over.code).toBe(Code.FailedPrecondition);
    expect(over.reason).toBe("SPEND_LIMIT_EXCEEDED");
    expect(over.metadata).toMatchObject({ period: "LIFETIME", used: "0", held: "50", requested: "70", resets_at: "" });
    expect((await t.credit.getReservation({ reservationId: r.reservation!.reservationId })).reservation?.state).toBe(ReservationState.HELD);
    await commit(r.reservation!.reservationId, 90n);
    const [lifetime] = await limits(accountId, "carol");
    expect(lifetime).toMatchObject({ used: 90n, held: 0n, remaining: 10n });
    expect(lifetime?.resetsAt).toBeUndefined();
    await consistent(accountId);
  });

  it("the account-wide limit applies to every member and a member's own limit on top; GetSpendLimits lists both for the member", async () => {
    const accountId = await funded();
    await limit(accountId, "", SpendPeriod.DAY, 300n);
    await limit(accountId, "dave", SpendPeriod.DAY, 100n);
    await spend(accountId, 80n, "dave");
    const own = await failureOf(reserve(accountId, 30n, "dave"));
    expect(own.metadata).toMatchObject({ scope: "member", member_id: "dave", used: "80" });
    await spend(accountId, 200n, "erin");
    const team = await failureOf(reserve(accountId, 30n, "erin"));
    expect(team.metadata).toMatchObject({ scope: "account", member_id: "", used: "280" });
    // Dave is within his own 100 but not within what the team has left.
    expect((await failureOf(reserve(accountId, 20n + 1n, "dave"))).metadata).toMatchObject({ scope: "account" });
    await reserve(accountId, 20n, "dave");

    const listed = await limits(accountId, "dave");
    expect(listed.map((l) => [l.memberId, l.used, l.held, l.remaining])).toEqual([
      ["", 280n, 20n, 0n],
      ["dave", 80n, 20n, 0n],
    ]);
    expect((await limits(accountId, "erin")).map((l) => l.memberId)).toEqual([""]);
    await consistent(accountId);
  });

  it("a daily limit resets at the account's midnight in its time zone", async () => {
    const accountId = await funded();
    const set = await limit(accountId, "frank", SpendPeriod.DAY, 100n, { timeZone: "Europe/Paris" });
    // 12:00Z is 13:00 in Paris; the Paris day ends at 23:00Z.
    expect(timestampDate(set.limit!.resetsAt!).toISOString()).toBe("2030-01-15T23:00:00.000Z");
    await spend(accountId, 100n, "frank");
    expect((await failureOf(reserve(accountId, 1n, "frank"))).reason).toBe("SPEND_LIMIT_EXCEEDED");
    await advance(accountId, 11 * HOUR - MINUTE); // 22:59Z: still the same Paris day
    expect((await failureOf(reserve(accountId, 1n, "frank"))).reason).toBe("SPEND_LIMIT_EXCEEDED");
    await advance(accountId, 2 * MINUTE); // 23:01Z: a new day in Paris (in UTC it is not)
    const [day] = await limits(accountId, "frank");
    expect(day).toMatchObject({ used: 0n, remaining: 100n });
    expect(timestampDate(day!.periodStart!).toISOString()).toBe("2030-01-15T23:00:00.000Z");
    await spend(accountId, 100n, "frank");
    await consistent(accountId);
  });

  it("a billing-period limit resets with the allowance", async () => {
    const accountId = newAccountId("spend-plan");
    await t.credit.changePlan({ accountId, planId: "max-monthly", idempotencyKey: newKey("plan") });
    await limit(accountId, "", SpendPeriod.BILLING_PERIOD, 1000n);
    await spend(accountId, 1000n, "gina");
    expect((await failureOf(reserve(accountId, 1n))).metadata).toMatchObject({ period: "BILLING_PERIOD", resets_at: "2030-02-15T12:00:00.000Z" });
    await advance(accountId, 31 * DAY);
    const [billing] = await limits(accountId);
    expect(billing).toMatchObject({ used: 0n });
    expect(timestampDate(billing!.periodStart!).toISOString()).toBe("2030-02-15T12:00:00.000Z");
    await spend(accountId, 1000n);
    await consistent(accountId);
  });

  it("a soft limit lets the Reserve through and states SPEND_LIMIT_REACHED once per limit per period", async () => {
    const accountId = await funded();
    await limit(accountId, "hal", SpendPeriod.DAY, 50n, { mode: LimitMode.SOFT });
    await spend(accountId, 40n, "hal");
    const past = await reserve(accountId, 20n, "hal"); // 40 + 20 > 50: allowed, noted
    await reserve(accountId, 20n, "hal"); // further past: not noted again
    await advance(accountId, DAY);
    await reserve(accountId, 60n, "hal"); // a new day: noted again
    const reached = (await accountEvents(t, accountId)).filter((e) => e.kind === EventKind.SPEND_LIMIT_REACHED);
    expect(reached).toHaveLength(2);
    const first = reached[0]!.payload;
    expect(first.case).toBe("spendLimitReached");
    if (first.case !== "spendLimitReached") return;
    expect(first.value).toMatchObject({ requested: 20n, reservationId: past.reservation!.reservationId, memberId: "hal" });
    expect(first.value.limit).toMatchObject({ memberId: "hal", maxCredits: 50n, mode: LimitMode.SOFT, used: 40n, held: 0n });
    await consistent(accountId);
  });

  it("a new limit counts what was already spent in the period; lowering one below it refuses new holds and cuts no running one", async () => {
    const accountId = await funded();
    await spend(accountId, 70n, "ivy");
    await spend(accountId, 5n, "jack");
    const running = await reserve(accountId, 20n, "ivy");
    const set = await limit(accountId, "ivy", SpendPeriod.DAY, 100n);
    expect(set.limit).toMatchObject({ used: 70n, held: 20n, remaining: 10n });
    const account = await limit(accountId, "", SpendPeriod.DAY, 1000n);
    expect(account.limit).toMatchObject({ used: 75n, held: 20n });

    await limit(accountId, "ivy", SpendPeriod.DAY, 50n);
    expect((await failureOf(reserve(accountId, 1n, "ivy"))).reason).toBe("SPEND_LIMIT_EXCEEDED");
    await commit(running.reservation!.reservationId, 20n); // the running hold settles as usual
    expect((await limits(accountId, "ivy"))[1]).toMatchObject({ used: 90n, remaining: 0n });
    await consistent(accountId);
  });

  it("RemoveSpendLimit lifts the limit; removing one that is not there is NOT_FOUND; every change is an event", async () => {
    const accountId = await funded();
    await limit(accountId, "kim", SpendPeriod.DAY, 10n);
    expect((await failureOf(reserve(accountId, 11n, "kim"))).reason).toBe("SPEND_LIMIT_EXCEEDED");
    const removed = await t.admin.removeSpendLimit({ accountId, memberId: "kim", period: SpendPeriod.DAY, idempotencyKey: newKey("rm") });
    expect(removed.removed).toMatchObject({ memberId: "kim", maxCredits: 10n });
    await reserve(accountId, 11n, "kim");
    const again = await failureOf(t.admin.removeSpendLimit({ accountId, memberId: "kim", period: SpendPeriod.DAY, idempotencyKey: newKey("rm") }));
    expect(again.code).toBe(Code.NotFound);
    expect(again.reason).toBe("SPEND_LIMIT_NOT_FOUND");
    const kinds = (await accountEvents(t, accountId)).map((e) => e.kind);
    expect(kinds).toContain(EventKind.SPEND_LIMIT_SET);
    expect(kinds).toContain(EventKind.SPEND_LIMIT_REMOVED);
    expect(await limits(accountId, "kim")).toEqual([]);
  });

  it("a retried SetSpendLimit replays its first answer", async () => {
    const accountId = await funded();
    const key = newKey("limit");
    const first = await limit(accountId, "", SpendPeriod.DAY, 100n, { key });
    await spend(accountId, 10n);
    const again = await limit(accountId, "", SpendPeriod.DAY, 100n, { key });
    expect(again.limit).toEqual(first.limit);
  });

  it("Reconcile finds a counter that disagrees with the ledger", async () => {
    const accountId = await funded();
    await limit(accountId, "", SpendPeriod.DAY, 100n);
    await spend(accountId, 10n);
    await consistent(accountId);
    await db.query(`update spend_limits set used = used + 1 where account_id = $1`, [accountId]);
    const r = await t.admin.reconcile({ accountId });
    expect(r.consistent).toBe(false);
    expect(r.differences.map((d) => [d.subject, d.field, d.stored, d.fromEntries])).toEqual([["spend limit (account) DAY", "used", 11n, 10n]]);
  });
});

describe("bad input changes nothing", () => {
  it.each([
    ["negative max_credits", { maxCredits: -1n }, "max_credits"],
    ["absurd max_credits", { maxCredits: 10n ** 18n }, "max_credits"],
    ["no period", { period: SpendPeriod.UNSPECIFIED }, "period"],
    ["unknown period", { period: 99 as SpendPeriod }, "period"],
    ["unknown mode", { mode: 7 as LimitMode }, "mode"],
    ["unknown time zone", { timeZone: "Mars/Olympus" }, "time_zone"],
    ["bad member id", { memberId: "a b" }, "member_id"],
  ])("%s → INVALID_ARGUMENT naming %s", async (_name, change, field) => {
    const accountId = await funded();
    const req = { accountId, memberId: "", period: SpendPeriod.DAY, maxCredits: 10n, mode: LimitMode.HARD, timeZone: "", idempotencyKey: newKey(), ...change };
    const err = await failureOf(t.admin.setSpendLimit(req));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.metadata["field"]).toBe(field);
    expect(await limits(accountId)).toEqual([]);
    expect((await t.credit.getBalance({ accountId })).sequence).toBe(1n);
  });

  it("an unknown account is NOT_FOUND for all three calls", async () => {
    const accountId = newAccountId("nobody");
    const set = await failureOf(limit(accountId, "", SpendPeriod.DAY, 10n));
    expect(set.code).toBe(Code.NotFound);
    expect((await failureOf(t.admin.removeSpendLimit({ accountId, memberId: "", period: SpendPeriod.DAY, idempotencyKey: newKey() }))).code).toBe(Code.NotFound);
    expect((await failureOf(t.credit.getSpendLimits({ accountId, memberId: "" }))).code).toBe(Code.NotFound);
  });
});
