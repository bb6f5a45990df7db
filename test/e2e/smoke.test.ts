import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t.stop();
});

describe("a hold through the real server", () => {
  it("reserve then commit less than held returns the rest", async () => {
    const accountId = newAccountId();
    await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    const reserved = await t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 120n } });
    expect(reserved.balance?.available).toBe(380n);
    const committed = await t.credit.commit({
      reservationId: reserved.reservation!.reservationId,
      idempotencyKey: newKey(),
      actual: { case: "amount", value: 100n },
    });
    expect(committed.reservation?.capturedAmount).toBe(100n);
    expect(committed.balance?.available).toBe(400n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});
