import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventKind, ReleaseReason } from "../../src/client/index.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { failureOf } from "../support/e2e.js";
import { accountEvents } from "../support/events.js";

/**
 * SetConcurrencyLimit: caps on running holds, for a member or the whole account, checked by
 * Reserve under the account's lock — through the generated client against a real server.
 */

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t.stop();
});

async function funded(amount = 100_000n): Promise<string> {
  const accountId = newAccountId("caps");
  await t.admin.adjustCredits({ accountId, amount, reason: "caps test", idempotencyKey: newKey("fund") });
  return accountId;
}

function cap(accountId: string, memberId: string, maxOpenHolds: number, maxHeldCredits = 0n, key = newKey("cap")) {
  return t.admin.setConcurrencyLimit({ accountId, memberId, maxOpenHolds, maxHeldCredits, idempotencyKey: key });
}

function reserve(accountId: string, amount: bigint, memberId = "") {
  return t.credit.reserve({ accountId, idempotencyKey: newKey("res"), memberId, cost: { case: "amount", value: amount } });
}

/** Each call's outcome: "held" or its failure reason. */
async function outcomes(calls: Promise<unknown>[]): Promise<string[]> {
  return Promise.all(calls.map((c) => c.then(() => "held", async () => (await failureOf(c)).reason ?? "?")));
}

describe("SetConcurrencyLimit", () => {
  it("50 concurrent Reserves against max_open_holds = 5: exactly 5 are held, the rest RESOURCE_EXHAUSTED CONCURRENCY_LIMIT_EXCEEDED", async () => {
    const accountId = await funded();
    await cap(accountId, "", 5);
    const results = await outcomes(Array.from({ length: 50 }, () => reserve(accountId, 10n, `m-${Math.floor(Math.random() * 3)}`)));
    expect(results.filter((r) => r === "held")).toHaveLength(5);
    expect(results.filter((r) => r === "CONCURRENCY_LIMIT_EXCEEDED")).toHaveLength(45);
    expect((await t.credit.getBalance({ accountId })).balance?.held).toBe(50n);

    const refused = await failureOf(reserve(accountId, 10n));
    expect(refused.code).toBe(Code.ResourceExhausted);
    expect(refused.metadata).toMatchObject({ scope: "account", member_id: "", cap: "max_open_holds", limit: "5", open_holds: "5", held_credits: "50" });
  });

  it("a settled hold makes room: Commit, Release and a hold's expiry each let one more in", async () => {
    const accountId = await funded();
    await cap(accountId, "", 1);
    const first = await reserve(accountId, 10n);
    expect((await failureOf(reserve(accountId, 10n))).reason).toBe("CONCURRENCY_LIMIT_EXCEEDED");
    await t.credit.commit({ reservationId: first.reservation!.reservationId, idempotencyKey: newKey(), actual: { case: "amount", value: 10n } });
    const second = await reserve(accountId, 10n);
    await t.credit.release({ reservationId: second.reservation!.reservationId, idempotencyKey: newKey(), reason: ReleaseReason.GENERATION_FAILED });
    const third = await t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 10n }, ttl: { seconds: 60n } });
    expect(third.reservation?.state).toBeDefined();
    expect((await failureOf(reserve(accountId, 10n))).reason).toBe("CONCURRENCY_LIMIT_EXCEEDED");
    t.clock.advance(61_000);
    await reserve(accountId, 10n); // the expired hold no longer runs
  });

  it("a member's own cap applies on top of the account's; other members are not held back by it", async () => {
    const accountId = await funded();
    await cap(accountId, "alice", 0, 100n);
    await reserve(accountId, 60n, "alice");
    const over = await failureOf(reserve(accountId, 50n, "alice"));
    expect(over.reason).toBe("CONCURRENCY_LIMIT_EXCEEDED");
    expect(over.metadata).toMatchObject({ scope: "member", member_id: "alice", cap: "max_held_credits", limit: "100", held_credits: "60" });
    await reserve(accountId, 50n, "bob");
    await reserve(accountId, 40n, "alice"); // exactly at the cap

    await cap(accountId, "", 3);
    expect((await failureOf(reserve(accountId, 1n, "carol"))).metadata).toMatchObject({ scope: "account", cap: "max_open_holds" });
  });

  it("answers with what runs in the scope, counted from the holds already running; a cap lowered below it cuts no hold", async () => {
    const accountId = await funded();
    const a = await reserve(accountId, 30n, "dana");
    await reserve(accountId, 20n, "dana");
    await reserve(accountId, 5n, "erin");
    const set = await cap(accountId, "dana", 1);
    expect(set.limit).toMatchObject({ memberId: "dana", maxOpenHolds: 1, maxHeldCredits: 0n, openHolds: 2, heldCredits: 50n });
    const account = await cap(accountId, "", 0, 1000n);
    expect(account.limit).toMatchObject({ memberId: "", openHolds: 3, heldCredits: 55n });
    expect((await failureOf(reserve(accountId, 1n, "dana"))).reason).toBe("CONCURRENCY_LIMIT_EXCEEDED");
    // Both of dana's holds still run and settle normally.
    await t.credit.commit({ reservationId: a.reservation!.reservationId, idempotencyKey: newKey(), actual: { case: "amount", value: 30n } });
    expect((await failureOf(reserve(accountId, 1n, "dana"))).reason).toBe("CONCURRENCY_LIMIT_EXCEEDED");
  });

  it("0 lifts a cap; a replay answers as the first call; the change is a CONCURRENCY_LIMIT_SET event", async () => {
    const accountId = await funded();
    const key = newKey("cap");
    const first = await cap(accountId, "frank", 1, 0n, key);
    const again = await cap(accountId, "frank", 1, 0n, key);
    expect(again).toEqual(first);
    await reserve(accountId, 1n, "frank");
    expect((await failureOf(reserve(accountId, 1n, "frank"))).reason).toBe("CONCURRENCY_LIMIT_EXCEEDED");
    await cap(accountId, "frank", 0);
    await reserve(accountId, 1n, "frank");

    const events = (await accountEvents(t, accountId)).filter((e) => e.kind === EventKind.CONCURRENCY_LIMIT_SET);
    expect(events.map((e) => (e.payload.case === "concurrencyLimitSet" ? [e.payload.value.memberId, e.payload.value.maxOpenHolds] : null))).toEqual([
      ["frank", 1],
      ["frank", 0],
    ]);
  });

  it("bad input is refused with the field and changes nothing; an unknown account is NOT_FOUND", async () => {
    const accountId = await funded();
    const before = (await t.credit.getBalance({ accountId })).sequence;
    const bad = [
      { memberId: "has space", field: "member_id" },
      { memberId: "", maxHeldCredits: -1n, field: "max_held_credits" },
      { memberId: "", maxOpenHolds: 2_000_000, field: "max_open_holds" },
    ];
    for (const b of bad) {
      const f = await failureOf(t.admin.setConcurrencyLimit({ accountId, memberId: b.memberId, maxOpenHolds: b.maxOpenHolds ?? 1, maxHeldCredits: b.maxHeldCredits ?? 0n, idempotencyKey: newKey() }));
      expect(f.code).toBe(Code.InvalidArgument);
      expect(f.metadata["field"]).toBe(b.field);
    }
    expect((await failureOf(cap(newAccountId("nobody"), "", 1))).code).toBe(Code.NotFound);
    expect((await t.credit.getBalance({ accountId })).sequence).toBe(before);
    await reserve(accountId, 1n);
    await reserve(accountId, 1n); // no cap was set
  });
});
