import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Granularity } from "../../src/client/index.js";
import { LedgerEntryKind } from "../../src/gen/credit/v1/admin_service_pb.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
let a: TestService;
let b: TestService;
let db: pg.Pool;

beforeAll(async () => {
  // Two servers on one database; b also runs the background sweeper on a short interval.
  a = await startTestService();
  b = await startTestService({ SWEEPER_ENABLED: "true", SWEEPER_INTERVAL_MS: "100" });
  db = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 1 });
});
afterAll(async () => {
  await db.end();
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

  it("writes the daily usage rows of the days the accounts' clocks have left, and the answers stay the same", async () => {
    const accountId = newAccountId("sweep-days");
    await a.admin.adjustCredits({ accountId, amount: 100n, reason: "sweeper test", idempotencyKey: newKey() });
    const { reservation } = await a.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 30n } });
    await a.credit.commit({ reservationId: reservation!.reservationId, idempotencyKey: newKey(), actual: { case: "amount", value: 20n } });
    const day = new Date(Math.floor(a.clock.now().getTime() / DAY) * DAY);
    const read = async () =>
      (await a.credit.getUsage({ accountId, startTime: timestampFromDate(new Date(day.getTime() - DAY)), endTime: timestampFromDate(new Date(day.getTime() + 2 * DAY)), granularity: Granularity.DAY })).rows.map((r) => [
        timestampDate(r.start!).toISOString(),
        r.consumed,
        r.granted,
      ]);
    const before = await read();
    expect(before).toEqual([[day.toISOString(), 20n, 100n]]);
    const openFrom = async () => (await db.query<{ w: Date }>(`select usage_days_open_from as w from accounts where account_id = $1`, [accountId])).rows[0]!.w;
    a.clock.advance(DAY);
    b.clock.advance(DAY);
    // a's sweep closes the day, or b's background one if it came first (a skips an account b's
    // sweep holds: should b's have started before its clock moved, the next sweep closes the day).
    const target = new Date(day.getTime() + DAY).toISOString();
    const deadline = performance.now() + 10_000;
    await a.service.sweep();
    while ((await openFrom()).toISOString() !== target && performance.now() < deadline) await a.service.sweep();
    const { rows } = await db.query<{ day: Date; consumed: string }>(`select day, consumed::text from usage_daily where account_id = $1 and dim = 'kind' and consumed > 0`, [accountId]);
    expect(rows.map((r) => [r.day.toISOString(), r.consumed])).toEqual([[day.toISOString(), "20"]]);
    expect((await openFrom()).toISOString()).toBe(target);
    expect(await read()).toEqual(before);
    expect(await a.service.store.reconcile(accountId)).toEqual([]);
  });
});
