import { toBinary } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { BillingInterval, GetBalanceResponseSchema, PlanChangeKind } from "../../src/client/index.js";
import { MAX_ACCOUNT_CREDITS, MAX_CREDITS } from "../../src/domain/limits.js";
import { newAccountId, newKey } from "../support/harness.js";
import { type CallFailure, failureOf, serviceAt } from "../support/e2e.js";

/**
 * An account holds at most MAX_ACCOUNT_CREDITS (10^17). Before the cap, 9,224 adjustments of
 * 10^15 made GetBalance answer a negative `available` (int64 wrapped) while Reconcile said all was
 * consistent. Every path that grants credits now refuses a grant past the cap with
 * FAILED_PRECONDITION / BALANCE_LIMIT and changes nothing, and a period roll-over never takes an
 * account past it.
 */

const DAY = 86_400_000;
const t = serviceAt(new Date("2030-04-01T00:00:00.000Z"));

async function adjust(accountId: string, amount: bigint, key = newKey("adj")) {
  return t().admin.adjustCredits({ accountId, amount, reason: "fill to the cap", idempotencyKey: key });
}

/** Grants `total` credits in adjustments of at most MAX_CREDITS. */
async function fill(accountId: string, total: bigint): Promise<void> {
  for (let left = total; left > 0n; left -= MAX_CREDITS) await adjust(accountId, left < MAX_CREDITS ? left : MAX_CREDITS);
}

/** Everything a caller can see of the account, as bytes: equal means nothing changed. */
async function snapshot(accountId: string) {
  const balance = toBinary(GetBalanceResponseSchema, await t().credit.getBalance({ accountId }));
  const { entries } = await t().admin.listLedgerEntries({ accountId, pageSize: 1000 });
  return { balance: Buffer.from(balance).toString("hex"), entries: entries.length };
}

function expectLimit(failure: CallFailure, accountCredits: bigint, requested: bigint): void {
  expect(failure).toEqual({
    code: Code.FailedPrecondition,
    reason: "BALANCE_LIMIT",
    metadata: { limit: String(MAX_ACCOUNT_CREDITS), account_credits: String(accountCredits), requested: String(requested) },
  });
}

describe("the account credit cap", () => {
  it("refuses every grant past the cap with BALANCE_LIMIT, changing nothing; spending makes room again", async () => {
    const accountId = newAccountId("cap");
    await fill(accountId, MAX_ACCOUNT_CREDITS);
    const { balance } = await t().credit.getBalance({ accountId });
    expect(balance!.available).toBe(MAX_ACCOUNT_CREDITS);
    expect(balance!.held).toBe(0n);
    const before = await snapshot(accountId);

    const adjustKey = newKey("adj");
    expectLimit(await failureOf(adjust(accountId, 1n, adjustKey)), MAX_ACCOUNT_CREDITS, 1n);
    expectLimit(
      await failureOf(t().credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") })),
      MAX_ACCOUNT_CREDITS,
      500n,
    );
    const custom = { credits: 7n, price: { currencyCode: "USD", amountMinor: 100n }, validityMonths: 3 };
    expectLimit(
      await failureOf(t().credit.purchaseTopUp({ accountId, pack: { case: "customPack", value: custom }, paymentReference: newKey("pay") })),
      MAX_ACCOUNT_CREDITS,
      7n,
    );
    expectLimit(await failureOf(t().credit.changePlan({ accountId, planId: "free", idempotencyKey: newKey("plan") })), MAX_ACCOUNT_CREDITS, 50n);

    // A business plan and its own pack are grants like any other.
    const planId = `biz-${accountId}`;
    await t().admin.setCustomPlan({
      accountId,
      planId,
      name: "Capped Business",
      monthlyAllowance: MAX_CREDITS,
      price: { currencyCode: "USD", amountMinor: 1_000_000n },
      interval: BillingInterval.MONTH,
      topUpPacks: [{ packId: `${planId}-pack`, credits: 1_000n, price: { currencyCode: "USD", amountMinor: 500n }, validityMonths: 12 }],
    });
    expectLimit(await failureOf(t().credit.changePlan({ accountId, planId, idempotencyKey: newKey("plan") })), MAX_ACCOUNT_CREDITS, MAX_CREDITS);
    expectLimit(
      await failureOf(t().credit.purchaseTopUp({ accountId, pack: { case: "packId", value: `${planId}-pack` }, paymentReference: newKey("pay") })),
      MAX_ACCOUNT_CREDITS,
      1_000n,
    );

    expect(await snapshot(accountId)).toEqual(before);
    expect(await t().service.store.reconcile(accountId)).toEqual([]);

    // The cap is on the credits an account holds, not on what it was ever granted: spend, and the
    // refused key (a failed call leaves no record) now goes through.
    const hold = await t().credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: MAX_CREDITS } });
    expect(hold.balance!.available + hold.balance!.held).toBe(MAX_ACCOUNT_CREDITS);
    await t().credit.commit({ reservationId: hold.reservation!.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: MAX_CREDITS } });
    const granted = await adjust(accountId, 1n, adjustKey);
    expect(granted.balance!.available).toBe(MAX_ACCOUNT_CREDITS - MAX_CREDITS + 1n);
  });

  it("keeps room for the next allowance, so a period roll-over never passes the cap", async () => {
    const accountId = newAccountId("cap-sub");
    await t().credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") });
    // The allowance (1,000) counts against the cap as long as the subscription will grant it.
    await fill(accountId, MAX_ACCOUNT_CREDITS - 1_000n);
    expectLimit(await failureOf(adjust(accountId, 1n)), MAX_ACCOUNT_CREDITS, 1n);
    // Upgrading would add 4,000 to the allowance; a downgrade adds nothing and is scheduled.
    expectLimit(await failureOf(t().credit.changePlan({ accountId, planId: "pro-monthly", idempotencyKey: newKey("plan") })), MAX_ACCOUNT_CREDITS, 4_000n);
    const down = await t().credit.changePlan({ accountId, planId: "free", idempotencyKey: newKey("plan") });
    expect(down.change).toBe(PlanChangeKind.DOWNGRADE_SCHEDULED);
    const back = await t().credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") });
    expect(back.change).toBe(PlanChangeKind.SCHEDULED_CHANGE_CANCELLED);

    // Two roll-overs at the cap: each period's allowance replaces the last, never on top of it.
    for (let month = 1; month <= 2; month += 1) {
      const moved = await t().admin.advanceTestClock({ accountId, by: durationFromMs(31 * DAY), idempotencyKey: newKey("clock") });
      expect(moved.balance!.available).toBe(MAX_ACCOUNT_CREDITS);
      expect(moved.balance!.held).toBe(0n);
    }
    expectLimit(await failureOf(adjust(accountId, 1n)), MAX_ACCOUNT_CREDITS, 1n);
    expect(await t().service.store.reconcile(accountId)).toEqual([]);
  });
});
