import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { BillingInterval } from "../../src/client/index.js";
import { newAccountId, newKey } from "../support/harness.js";
import { failureOf, serviceAt } from "../support/e2e.js";

/**
 * SetCustomPlan is a declarative upsert: concurrent calls for a plan id nobody has stored yet
 * must behave as if they had run one after the other — never INTERNAL.
 */

const N = 8;

function terms(accountId: string, planId: string, monthlyAllowance = 250_000n) {
  return {
    accountId,
    planId,
    name: "Acme Business",
    monthlyAllowance,
    price: { currencyCode: "USD", amountMinor: 1_200_000n },
    interval: BillingInterval.MONTH,
    topUpPacks: [],
  };
}

describe("concurrent SetCustomPlan for a new plan id", () => {
  const svc = serviceAt(new Date("2030-04-01T00:00:00.000Z"));

  it("with equal terms on one account: every call succeeds with version 1", async () => {
    const t = svc();
    const accountId = newAccountId("acme");
    const planId = `${accountId}-business`;
    const results = await Promise.all(Array.from({ length: N }, () => t.admin.setCustomPlan(terms(accountId, planId))));
    expect(results.map((r) => r.plan?.version)).toEqual(Array.from({ length: N }, () => 1));
  });

  it("with different terms on one account: every call succeeds, each with its own version 1 … N", async () => {
    const t = svc();
    const accountId = newAccountId("acme");
    const planId = `${accountId}-business`;
    const results = await Promise.all(Array.from({ length: N }, (_, i) => t.admin.setCustomPlan(terms(accountId, planId, 1000n + BigInt(i)))));
    expect(results.map((r) => r.plan!.version).sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
  });

  it("from different accounts: one account owns the plan id, the others get INVALID_FIELD (plan_id)", async () => {
    const t = svc();
    const planId = `${newAccountId("shared")}-business`;
    const accounts = Array.from({ length: N }, () => newAccountId("acme"));
    const settled = await Promise.allSettled(accounts.map((a) => t.admin.setCustomPlan(terms(a, planId))));
    const winners = accounts.filter((_, i) => settled[i]!.status === "fulfilled");
    expect(winners).toHaveLength(1);
    const owner = winners[0]!;
    const won = settled[accounts.indexOf(owner)] as PromiseFulfilledResult<{ plan?: { version: number; accountId: string } }>;
    expect(won.value.plan).toMatchObject({ version: 1, accountId: owner });
    for (const [i, s] of settled.entries()) {
      if (s.status === "fulfilled") continue;
      const f = await failureOf(Promise.reject(s.reason as Error));
      expect(f).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_FIELD", metadata: { field: "plan_id" } });
      // The plan is the owner's alone: a loser cannot subscribe to it.
      const other = await failureOf(t.credit.changePlan({ accountId: accounts[i]!, planId, idempotencyKey: newKey("plan") }));
      expect(other.reason).toBe("PLAN_NOT_FOUND");
    }
    expect((await t.credit.changePlan({ accountId: owner, planId, idempotencyKey: newKey("plan") })).subscription).toMatchObject({ planId, planVersion: 1 });
  });
});
