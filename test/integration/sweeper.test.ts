import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LedgerEntryKind } from "../../src/gen/credit/v1/admin_service_pb.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

const HOUR = 3_600_000;
let a: TestService;
let b: TestService;

beforeAll(async () => {
  // Two servers on one database; b also runs the background sweeper on a short interval.
  a = await startTestService();
  b = await startTestService({ SWEEPER_ENABLED: "true", SWEEPER_INTERVAL_MS: "100" });
});
afterAll(async () => {
  await a.stop();
  await b.stop();
});

async function holdOn(t: TestService, amount: bigint) {
  const accountId = newAccountId("sweep");
  await t.admin.adjustCredits({ accountId, amount: 100n, reason: "sweeper test", idempotencyKey: newKey() });
  const { reservation } = await t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: amount } });
  return { accountId, reservationId: reservation!.reservationId };
}

describe("the sweeper", () => {
  it("releases every overdue hold exactly once when two servers sweep the same database at once", async () => {
    const holds = await Promise.all(Array.from({ length: 20 }, () => holdOn(a, 30n)));
    a.clock.advance(HOUR);
    b.clock.advance(HOUR);
    const reports = await Promise.all([a.service.sweep(), a.service.sweep(), b.service.sweep(), b.service.sweep()]);
    expect(reports.reduce((n, r) => n + r.accountsSettled, 0)).toBeGreaterThanOrEqual(1);
    // b's background sweeper and the sweeps above together leave nothing overdue.
    await a.service.sweep();
    for (const { accountId, reservationId } of holds) {
      const stored = await a.service.store.findReservation(reservationId);
      expect(stored?.status).toBe("EXPIRED");
      const { entries } = await a.admin.listLedgerEntries({ accountId, kinds: [LedgerEntryKind.RELEASE] });
      expect(entries.map((e) => e.amount)).toEqual([30n]);
      expect(entries[0]?.caller).toBe("system");
      expect(await a.service.store.reconcile(accountId)).toEqual([]);
    }
  });

  it("runs in the background: an overdue hold is released without anybody touching the account", async () => {
    const { reservationId } = await holdOn(b, 40n);
    b.clock.advance(HOUR);
    const deadline = performance.now() + 10_000;
    let status = (await b.service.store.findReservation(reservationId))?.status;
    while (status === "HELD" && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      status = (await b.service.store.findReservation(reservationId))?.status;
    }
    expect(status).toBe("EXPIRED");
  });
});
