import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventKind, LedgerEntryKind, ReleaseReason } from "../../src/client/index.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { failureOf } from "../support/e2e.js";
import { accountEvents } from "../support/events.js";

/**
 * Reserve's member_id (the customer's team member or API key a hold is for): stored on the hold,
 * on its ledger entries and in its events, returned with the reservation; same rules as an id.
 */

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t.stop();
});

async function funded(amount = 1000n): Promise<string> {
  const accountId = newAccountId("members");
  await t.admin.adjustCredits({ accountId, amount, reason: "members test", idempotencyKey: newKey("fund") });
  return accountId;
}

describe("Reserve's member_id", () => {
  it("is returned with the reservation, by GetReservation and by Commit, and recorded on every entry of the hold", async () => {
    const accountId = await funded();
    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey(), memberId: "alice@team", cost: { case: "amount", value: 70n } });
    const id = r.reservation!.reservationId;
    expect(r.reservation?.memberId).toBe("alice@team");
    expect((await t.credit.getReservation({ reservationId: id })).reservation?.memberId).toBe("alice@team");
    const c = await t.credit.commit({ reservationId: id, idempotencyKey: newKey(), actual: { case: "amount", value: 50n } });
    expect(c.reservation?.memberId).toBe("alice@team");

    const { entries } = await t.admin.listLedgerEntries({ accountId, pageSize: 100 });
    const ofHold = entries.filter((e) => e.reservationId === id);
    expect(ofHold.map((e) => e.kind).sort()).toEqual([LedgerEntryKind.HOLD, LedgerEntryKind.CAPTURE, LedgerEntryKind.RELEASE].sort());
    expect(ofHold.every((e) => e.memberId === "alice@team")).toBe(true);
    // The grant that funded the account is no member's.
    expect(entries.find((e) => e.kind === LedgerEntryKind.ADJUST)?.memberId).toBe("");
  });

  it("travels in the hold's events", async () => {
    const accountId = await funded();
    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey(), memberId: "key-batch-7", cost: { case: "amount", value: 30n } });
    await t.credit.release({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey(), reason: ReleaseReason.GENERATION_FAILED });
    const events = await accountEvents(t, accountId);
    const holds = events.filter((e) => e.kind === EventKind.HOLD_CREATED || e.kind === EventKind.HOLD_RELEASED);
    expect(holds).toHaveLength(2);
    for (const e of holds) {
      expect(e.payload.case).toBe("hold");
      expect(e.payload.case === "hold" ? e.payload.value.reservation?.memberId : undefined).toBe("key-batch-7");
    }
  });

  it("is empty when not given, and a hold without one is no member's", async () => {
    const accountId = await funded();
    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 5n } });
    expect(r.reservation?.memberId).toBe("");
  });

  it("is part of the request an idempotency key stands for: the same key with another member is refused", async () => {
    const accountId = await funded();
    const key = newKey();
    await t.credit.reserve({ accountId, idempotencyKey: key, memberId: "bob", cost: { case: "amount", value: 5n } });
    const again = await t.credit.reserve({ accountId, idempotencyKey: key, memberId: "bob", cost: { case: "amount", value: 5n } });
    expect(again.reservation?.memberId).toBe("bob");
    const other = await failureOf(t.credit.reserve({ accountId, idempotencyKey: key, memberId: "carol", cost: { case: "amount", value: 5n } }));
    expect(other.reason).toBe("IDEMPOTENCY_KEY_REUSED");
  });

  it("a malformed member_id is INVALID_ARGUMENT naming the field, and nothing is held", async () => {
    const accountId = await funded(100n);
    for (const memberId of ["has space", "x".repeat(300), "tab\there"]) {
      const f = await failureOf(t.credit.reserve({ accountId, idempotencyKey: newKey(), memberId, cost: { case: "amount", value: 5n } }));
      expect(f.code).toBe(Code.InvalidArgument);
      expect(f.metadata["field"]).toBe("member_id");
    }
    expect((await t.credit.getBalance({ accountId })).balance?.available).toBe(100n);
  });
});
