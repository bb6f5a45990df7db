import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  GenerationKind,
  GenerationSpecSchema,
  Granularity,
  LedgerEntryKind,
  Quality,
  ReleaseReason,
  type UsageRow,
  UsageDimension,
} from "../../src/client/index.js";
import pg from "pg";
import { failureOf } from "../support/e2e.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, TEST_EPOCH, type TestService } from "../support/harness.js";
import { dayOf } from "../../src/domain/usage.js";
import { toPositional } from "../../src/store/pg.js";
import { CLOSE_USAGE_DAYS } from "../../src/store/usage-rollup.js";

/**
 * GetUsage and ForecastBalance through the generated client against a real server. The server's
 * clock stays at 2030-01-15T12:00Z (a Tuesday); each account's own test clock moves it on.
 */

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

let t: TestService;
/** The test database, for the sweeper's close of the daily level (the test server runs no sweeper) and for tampering. */
let db: pg.Pool;
beforeAll(async () => {
  t = await startTestService();
  db = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 });
});
afterAll(async () => {
  await db.end();
  await t.stop();
});

/**
 * The sweeper's close of the daily level (CLOSE_USAGE_DAYS) as of `now` (default: the server's
 * clock): every account of the test database whose days before today are open, at most 10,000.
 * A close changes no answer, so the other tests sharing the database are unaffected.
 */
async function closeDays(now = TEST_EPOCH): Promise<void> {
  await db.query(toPositional(CLOSE_USAGE_DAYS), [now, dayOf(now), 10_000]);
}

/** The account's first open UTC day (null: every day open). */
async function openFrom(accountId: string): Promise<string | null> {
  const { rows } = await db.query<{ w: Date; finite: boolean }>(`select usage_days_open_from as w, isfinite(usage_days_open_from) as finite from accounts where account_id = $1`, [
    accountId,
  ]);
  return rows[0]!.finite ? rows[0]!.w.toISOString() : null;
}

const ts = (iso: string) => timestampFromDate(new Date(iso));
const iso = (row: UsageRow) => timestampDate(row.start!).toISOString();

async function fund(accountId: string, amount: bigint, expiresAt?: Date) {
  await t.admin.adjustCredits({ accountId, amount, reason: "usage test", idempotencyKey: newKey("fund"), expiresAt: expiresAt && timestampFromDate(expiresAt) });
}

async function spend(accountId: string, amount: bigint, labels: { model?: string; memberId?: string } = {}, actual = amount) {
  const r = await t.credit.reserve({
    accountId,
    idempotencyKey: newKey("res"),
    memberId: labels.memberId ?? "",
    metadata: labels.model ? { model: labels.model } : {},
    cost: { case: "amount", value: amount },
  });
  await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: actual } });
}

/** Moves the account's clock to `at` (forward only). */
async function clockTo(accountId: string, at: string) {
  const now = timestampDate((await t.credit.getBalance({ accountId })).balance!.asOf!);
  const by = new Date(at).getTime() - now.getTime();
  if (by > 0) await t.admin.advanceTestClock({ accountId, by: durationFromMs(by), idempotencyKey: newKey("clock") });
}

function usage(accountId: string, start: string, end: string, granularity: Granularity, groupBy: UsageDimension[] = [], timeZone = "") {
  return t.credit.getUsage({ accountId, startTime: ts(start), endTime: ts(end), granularity, groupBy, timeZone });
}

const figures = (r: UsageRow) => [r.consumed, r.restored, r.granted, r.expired, r.generations];

describe("GetUsage", () => {
  it("groups a day's movements by model, kind and member: consumed, restored, granted, expired, generations", async () => {
    const accountId = newAccountId("usage");
    await fund(accountId, 10_000n);
    const veo = create(GenerationSpecSchema, { model: "veo-lite", kind: GenerationKind.VIDEO, width: 1920, height: 1080, duration: durationFromMs(4000), count: 1, quality: Quality.HIGH });
    const priced = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), memberId: "ann", cost: { case: "spec", value: veo } });
    await t.credit.commit({ reservationId: priced.reservation!.reservationId, idempotencyKey: newKey(), actual: { case: "spec", value: veo } }); // 144
    await spend(accountId, 100n, { model: "flux-pro", memberId: "bob" }, 60n); // 60 consumed, 40 restored
    const failed = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), metadata: { model: "flux-pro", member_id: "bob" }, cost: { case: "amount", value: 30n } });
    await t.credit.release({ reservationId: failed.reservation!.reservationId, idempotencyKey: newKey(), reason: ReleaseReason.GENERATION_FAILED });
    await spend(accountId, 5n); // no model, no member

    const byModel = await usage(accountId, "2030-01-15T00:00:00Z", "2030-01-16T00:00:00Z", Granularity.DAY, [UsageDimension.MODEL, UsageDimension.KIND, UsageDimension.MEMBER]);
    expect(byModel.rows.map((r) => [iso(r), r.group, ...figures(r)])).toEqual([
      // Grants belong to a bucket: its kind, no model, no member.
      ["2030-01-15T00:00:00.000Z", { model: "", kind: "ADJUSTMENT", member: "" }, 0n, 0n, 10_000n, 0n, 0n],
      ["2030-01-15T00:00:00.000Z", { model: "flux-pro", kind: "unknown", member: "bob" }, 60n, 70n, 0n, 0n, 1n],
      ["2030-01-15T00:00:00.000Z", { model: "unknown", kind: "unknown", member: "unknown" }, 5n, 0n, 0n, 0n, 1n],
      ["2030-01-15T00:00:00.000Z", { model: "veo-lite", kind: "VIDEO", member: "ann" }, 144n, 0n, 0n, 0n, 1n],
    ]);
    // Ungrouped: one row per bucket; consumed equals the CAPTURE entries.
    const total = await usage(accountId, "2030-01-15T00:00:00Z", "2030-01-16T00:00:00Z", Granularity.DAY);
    expect(total.rows.map(figures)).toEqual([[209n, 70n, 10_000n, 0n, 3n]]);
    const captures = await t.admin.listLedgerEntries({ accountId, kinds: [LedgerEntryKind.CAPTURE], pageSize: 1000 });
    expect(captures.entries.reduce((sum, e) => sum + e.amount, 0n)).toBe(209n);
    expect(total.rows[0]!.group).toEqual({});
    const byCaller = await usage(accountId, "2030-01-15T00:00:00Z", "2030-01-16T00:00:00Z", Granularity.HOUR, [UsageDimension.CALLER]);
    expect(byCaller.rows.map((r) => [iso(r), r.group["caller"]])).toEqual([["2030-01-15T12:00:00.000Z", "test-suite"]]); // the harness client's x-caller
    expect(timestampDate(total.asOf!).toISOString()).toBe(TEST_EPOCH.toISOString());
  });

  it("follows calendar months across a month boundary, and a plan's grants and expiry by bucket kind", async () => {
    const accountId = newAccountId("usage-month");
    await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") }); // 1000 a month from Jan 15
    await spend(accountId, 300n, { model: "sdxl" });
    await clockTo(accountId, "2030-01-31T23:50:00Z");
    await spend(accountId, 200n, { model: "sdxl" });
    await clockTo(accountId, "2030-02-01T00:10:00Z");
    await spend(accountId, 100n, { model: "sdxl" });
    await clockTo(accountId, "2030-02-15T12:00:01Z"); // the allowance rolls over: 400 unused expire, 1000 granted

    const months = await usage(accountId, "2030-01-01T00:00:00Z", "2030-03-01T00:00:00Z", Granularity.MONTH, [UsageDimension.KIND]);
    expect(months.rows.map((r) => [iso(r), r.group["kind"], ...figures(r)])).toEqual([
      ["2030-01-01T00:00:00.000Z", "SUBSCRIPTION", 0n, 0n, 1000n, 0n, 0n],
      ["2030-01-01T00:00:00.000Z", "unknown", 500n, 0n, 0n, 0n, 2n],
      ["2030-02-01T00:00:00.000Z", "SUBSCRIPTION", 0n, 0n, 1000n, 400n, 0n],
      ["2030-02-01T00:00:00.000Z", "unknown", 100n, 0n, 0n, 0n, 1n],
    ]);
    // The same days in New York: 23:50Z on Jan 31 is still Jan 31 there, and so is 00:10Z on Feb 1.
    const ny = await usage(accountId, "2030-01-31T00:00:00Z", "2030-02-02T00:00:00Z", Granularity.DAY, [], "America/New_York");
    expect(ny.rows.map((r) => [iso(r), r.consumed])).toEqual([["2030-01-31T05:00:00.000Z", 300n]]);
    expect((await t.admin.reconcile({ accountId })).consistent).toBe(true);
  });

  it("a day across a daylight-saving change is 23 hours in the zone", async () => {
    const accountId = newAccountId("usage-dst");
    await fund(accountId, 1000n);
    await clockTo(accountId, "2030-03-31T21:30:00Z"); // 23:30 in Paris (summer time since 01:00Z)
    await spend(accountId, 10n);
    await clockTo(accountId, "2030-03-31T22:30:00Z"); // 00:30 on April 1 in Paris
    await spend(accountId, 20n);
    const paris = await usage(accountId, "2030-03-31T00:00:00Z", "2030-04-01T23:00:00Z", Granularity.DAY, [], "Europe/Paris");
    expect(paris.rows.map((r) => [iso(r), r.consumed])).toEqual([
      ["2030-03-30T23:00:00.000Z", 10n],
      ["2030-03-31T22:00:00.000Z", 20n],
    ]);
    const hours = await usage(accountId, "2030-03-31T21:00:00Z", "2030-03-31T23:00:00Z", Granularity.HOUR, [], "Asia/Kolkata");
    // Kolkata's hours start at :30 UTC.
    expect(hours.rows.map((r) => [iso(r), r.consumed])).toEqual([
      ["2030-03-31T21:30:00.000Z", 10n],
      ["2030-03-31T22:30:00.000Z", 20n],
    ]);
  });

  it("a series by one dimension (read from the daily and hourly levels, corrected at each boundary) equals the slots' in every zone", async () => {
    const accountId = newAccountId("usage-levels");
    await fund(accountId, 100_000n);
    // Spends at quarter hours around UTC midnights, over three days, by two models and members.
    const models = ["flux-pro", "veo-lite", "sdxl"];
    let i = 0;
    for (let at = new Date("2030-01-15T12:05:00Z").getTime(); at < new Date("2030-01-18T06:00:00Z").getTime(); at += 5 * HOUR + 45 * MINUTE) {
      await clockTo(accountId, new Date(at).toISOString());
      await spend(accountId, BigInt(10 + i), { model: models[i % 3]!, memberId: i % 2 === 0 ? "ann" : "bob" }, BigInt(5 + i));
      i += 1;
    }
    const key = (r: UsageRow, dims: string[]) => `${iso(r)} ${dims.map((d) => r.group[d] ?? "").join(",")}`;
    /** Rows of a finer grouping summed down to `dims`: what the slots give for that grouping. */
    const summed = (rows: UsageRow[], dims: string[]) => {
      const out = new Map<string, bigint[]>();
      for (const r of rows) {
        const k = key(r, dims);
        const f = figures(r);
        out.set(k, (out.get(k) ?? [0n, 0n, 0n, 0n, 0n]).map((v, j) => v + f[j]!));
      }
      return [...out].filter(([, f]) => f.some((v) => v !== 0n));
    };
    const cases: [Granularity, string, string][] = [
      [Granularity.HOUR, "2030-01-15T00:00:00Z", "2030-01-18T12:00:00Z"],
      [Granularity.DAY, "2030-01-10T00:00:00Z", "2030-01-25T00:00:00Z"],
      [Granularity.MONTH, "2029-12-01T00:00:00Z", "2030-03-01T00:00:00Z"],
    ];
    const compare = async (when: string) => {
      for (const zone of ["", "Europe/Paris", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham"]) {
        for (const [granularity, start, end] of cases) {
          const leveled = await usage(accountId, start, end, granularity, [UsageDimension.MODEL], zone);
          const slots = await usage(accountId, start, end, granularity, [UsageDimension.MODEL, UsageDimension.MEMBER], zone);
          expect(leveled.rows.map((r) => [key(r, ["model"]), figures(r)]), `${when} ${zone} ${granularity}`).toEqual(summed(slots.rows, ["model"]));
          const total = await usage(accountId, start, end, granularity, [], zone);
          expect(total.rows.map((r) => [key(r, []), figures(r)]), `${when} ${zone} ${granularity} total`).toEqual(summed(slots.rows, []));
          expect(total.rows.reduce((s, r) => s + r.consumed, 0n)).toBe(BigInt(i * 5 + (i * (i - 1)) / 2));
        }
      }
      expect((await t.admin.reconcile({ accountId })).consistent).toBe(true);
    };
    // Every day open (summed from the hours), then the days before the account's today closed (day rows).
    await compare("open");
    await closeDays();
    expect(await openFrom(accountId)).toBe("2030-01-18T00:00:00.000Z");
    await compare("closed");
  }, 60_000);

  it("the sweeper's close writes each past day's rows once: answers agree before and after, a locked account waits, a write into a closed day reopens it", async () => {
    const accountId = newAccountId("usage-close");
    await fund(accountId, 10_000n);
    for (const at of ["2030-01-15T13:00:00Z", "2030-01-16T02:30:00Z", "2030-01-17T20:00:00Z"]) {
      await clockTo(accountId, at);
      await spend(accountId, 50n, { model: "sdxl" }, 40n);
    }
    const read = async () =>
      (await usage(accountId, "2030-01-10T00:00:00Z", "2030-01-20T00:00:00Z", Granularity.DAY, [UsageDimension.MODEL], "Asia/Kolkata")).rows.map((r) => [
        iso(r),
        r.group["model"],
        ...figures(r),
      ]);
    const dayRows = async () =>
      (await db.query<{ day: Date; consumed: string }>(`select day, consumed::text from usage_daily where account_id = $1 and dim = 'model' and value = 'sdxl' order by day`, [accountId])).rows.map(
        (r) => [r.day.toISOString(), r.consumed],
      );
    const before = await read();
    expect(before.reduce((s, r) => s + (r[2] as bigint), 0n)).toBe(120n);
    expect(await dayRows()).toEqual([]);

    // Held by a write elsewhere: skipped, nothing written.
    const locker = await db.connect();
    try {
      await locker.query("begin");
      await locker.query("select 1 from accounts where account_id = $1 for update", [accountId]);
      await closeDays();
      expect(await openFrom(accountId)).toBeNull();
      await locker.query("rollback");
    } finally {
      locker.release();
    }

    // Closed up to the account's own today (its clock is at Jan 17, 20:00): the 15th and 16th get their rows.
    await closeDays();
    expect(await openFrom(accountId)).toBe("2030-01-17T00:00:00.000Z");
    expect(await dayRows()).toEqual([
      ["2030-01-15T00:00:00.000Z", "40"],
      ["2030-01-16T00:00:00.000Z", "40"],
    ]);
    expect(await read()).toEqual(before);
    expect((await t.admin.reconcile({ accountId })).consistent).toBe(true);

    // A close by a clock three days ahead of the writers' (the account's own clock is 2 days 8 hours
    // ahead of the server's) closes up to the 20th; a write then lands in a closed day (as one from
    // a server whose clock is behind would) and reopens it: its row stays as the close wrote it,
    // unread, until the next close writes it again.
    const ahead = new Date(TEST_EPOCH.getTime() + 3 * DAY);
    await closeDays(ahead);
    expect(await openFrom(accountId)).toBe("2030-01-20T00:00:00.000Z");
    const closedRows = [
      ["2030-01-15T00:00:00.000Z", "40"],
      ["2030-01-16T00:00:00.000Z", "40"],
      ["2030-01-17T00:00:00.000Z", "40"],
    ];
    expect(await dayRows()).toEqual(closedRows);
    await spend(accountId, 30n, { model: "sdxl" }, 25n);
    expect(await openFrom(accountId)).toBe("2030-01-17T00:00:00.000Z");
    expect(await dayRows()).toEqual(closedRows);
    const after = await read();
    expect(after.reduce((s, r) => s + (r[2] as bigint), 0n)).toBe(145n);
    expect((await t.admin.reconcile({ accountId })).consistent).toBe(true);
    await closeDays(ahead);
    expect(await openFrom(accountId)).toBe("2030-01-20T00:00:00.000Z");
    expect(await dayRows()).toEqual([...closedRows.slice(0, 2), ["2030-01-17T00:00:00.000Z", "65"]]);
    expect(await read()).toEqual(after);
    expect((await t.admin.reconcile({ accountId })).consistent).toBe(true);
  });

  it("Reconcile finds a level of the rollup that differs from the one below it: the days from the hours, the hours from the slots", async () => {
    const accountId = newAccountId("usage-tamper");
    await fund(accountId, 1000n);
    await spend(accountId, 40n, { model: "sdxl" }, 30n);
    // The day closed (its rows written), as the sweeper does once the account's clock has passed it.
    await clockTo(accountId, "2030-01-16T01:00:00Z");
    await closeDays();
    expect((await t.admin.reconcile({ accountId })).consistent).toBe(true);
    {
      await db.query(`update usage_daily set consumed = consumed + 1 where account_id = $1 and dim = 'model' and value = 'sdxl'`, [accountId]);
      const daily = await t.admin.reconcile({ accountId });
      expect(daily.differences.map((d) => [d.subject, d.field, d.stored, d.fromEntries])).toEqual([["usage daily model=sdxl 2030-01-15", "consumed", 31n, 30n]]);
      await db.query(`update usage_hourly set restored = restored + 2 where account_id = $1 and dim = 'model' and value = 'sdxl'`, [accountId]);
      const hourly = await t.admin.reconcile({ accountId });
      expect(hourly.differences.map((d) => [d.subject, d.field, d.stored, d.fromEntries])).toEqual([
        ["usage daily model=sdxl 2030-01-15", "consumed", 31n, 30n],
        // 12:00 is before the day's marks from 12:30 on (p25 … p47): their prefixes moved with the hour.
        ...Array.from({ length: 23 }, (_, k) => ["usage daily model=sdxl 2030-01-15", `p${k + 25}_restored`, 10n, 12n]),
        ["usage daily model=sdxl 2030-01-15", "restored", 10n, 12n],
        ["usage hourly model=sdxl 2030-01-15T12Z", "restored", 12n, 10n],
      ]);
      // An hour's first-half figures (what a half-hour zone's boundary reads) are checked against its slots too.
      await db.query(`update usage_hourly set half_consumed = half_consumed + 3 where account_id = $1 and dim = 'kind' and value = 'unknown'`, [accountId]);
      const half = (await t.admin.reconcile({ accountId })).differences.filter((d) => d.field === "half_consumed");
      expect(half.map((d) => [d.subject, d.stored - d.fromEntries])).toEqual([["usage hourly kind=unknown 2030-01-15T12Z", 3n]]);
      // And a day's half hours (what a boundary off UTC midnight reads: its prefix array, by figure and mark) against its hours.
      await db.query(`update usage_daily set prefixes[3][36] = prefixes[3][36] + 4 where account_id = $1 and dim = 'kind' and value = 'unknown'`, [accountId]);
      const mark = (await t.admin.reconcile({ accountId })).differences.filter((d) => d.field === "p36_granted");
      expect(mark.map((d) => [d.subject, d.stored - d.fromEntries])).toEqual([["usage daily kind=unknown 2030-01-15", 4n]]);
    }
  });

  it("bad input is INVALID_ARGUMENT naming the field; an unknown account is NOT_FOUND", async () => {
    const accountId = newAccountId("usage-bad");
    await fund(accountId, 10n);
    const bad = async (req: Parameters<typeof t.credit.getUsage>[0], field: string) => {
      const f = await failureOf(t.credit.getUsage(req));
      expect([f.code, f.metadata["field"]]).toEqual([Code.InvalidArgument, field]);
    };
    const base = { accountId, startTime: ts("2030-01-01T00:00:00Z"), endTime: ts("2030-01-02T00:00:00Z"), granularity: Granularity.DAY };
    await bad({ ...base, startTime: ts("2030-01-03T00:00:00Z") }, "end_time");
    await bad({ ...base, endTime: undefined }, "end_time");
    await bad({ ...base, granularity: Granularity.HOUR, endTime: ts("2030-02-02T00:00:00Z") }, "end_time"); // 32 days of hours
    await bad({ ...base, endTime: ts("2031-03-01T00:00:00Z") }, "end_time"); // 424 days
    await bad({ ...base, timeZone: "Mars/Olympus" }, "time_zone");
    await bad({ ...base, groupBy: [99 as UsageDimension] }, "group_by");
    await bad({ ...base, groupBy: [UsageDimension.MODEL, UsageDimension.MODEL] }, "group_by");
    await bad({ ...base, granularity: Granularity.UNSPECIFIED }, "granularity");
    expect((await failureOf(t.credit.getUsage({ ...base, accountId: newAccountId("nobody") }))).code).toBe(Code.NotFound);
    expect((await failureOf(t.credit.forecastBalance({ accountId: newAccountId("nobody") }))).code).toBe(Code.NotFound);
  });
});

describe("ForecastBalance", () => {
  it("zero usage: no run-out, and credits that expire within the horizon are listed whole", async () => {
    const accountId = newAccountId("fc-zero");
    await fund(accountId, 500n, new Date(TEST_EPOCH.getTime() + 10 * DAY));
    await fund(accountId, 1000n);
    const f = await t.credit.forecastBalance({ accountId });
    expect(f.burnRatePerDay).toBe(0n);
    expect(f.runsOutAt).toBeUndefined();
    expect(f.nextResetAt).toBeUndefined();
    expect(f.expiringUnused.map((e) => [e.amount, timestampDate(e.expiresAt!).toISOString()])).toEqual([[500n, "2030-01-25T12:00:00.000Z"]]);
  });

  it("a bucket drained too slowly to be used before it expires loses the rest; the pace is the account's days so far", async () => {
    const accountId = newAccountId("fc-expiring");
    await fund(accountId, 1000n, new Date(TEST_EPOCH.getTime() + 10 * DAY));
    await fund(accountId, 100_000n);
    await spend(accountId, 70n); // a one-day-old account: 70 a day
    const f = await t.credit.forecastBalance({ accountId });
    expect(f.burnRatePerDay).toBe(70n);
    // 930 left in the expiring bucket, 700 of it used in 10 days: 230 expire unused.
    expect(f.expiringUnused.map((e) => [e.amount, e.bucket?.expiresAt && timestampDate(e.bucket.expiresAt).toISOString()])).toEqual([[230n, "2030-01-25T12:00:00.000Z"]]);
    expect(f.runsOutAt).toBeUndefined(); // 100,000 more at 70 a day lasts beyond 400 days
  });

  it("with a plan: runs out before the reset at a fast pace; at a slow one the allowance resets first and its rest expires", async () => {
    const fast = newAccountId("fc-fast");
    await t.credit.changePlan({ accountId: fast, planId: "max-monthly", idempotencyKey: newKey("plan") }); // 20,000
    await spend(fast, 7000n);
    const f = await t.credit.forecastBalance({ accountId: fast });
    expect(f.burnRatePerDay).toBe(7000n);
    expect(timestampDate(f.nextResetAt!).toISOString()).toBe("2030-02-15T12:00:00.000Z");
    // 13,000 at 7,000 a day: ⌈13000 × 86,400,000 / 7000⌉ ms.
    const expected = new Date(TEST_EPOCH.getTime() + Math.ceil((13_000 * DAY) / 7000));
    expect(timestampDate(f.runsOutAt!).toISOString()).toBe(expected.toISOString());
    expect(f.expiringUnused).toEqual([]);

    const slow = newAccountId("fc-slow");
    await t.credit.changePlan({ accountId: slow, planId: "max-monthly", idempotencyKey: newKey("plan") });
    await spend(slow, 100n);
    const s = await t.credit.forecastBalance({ accountId: slow });
    expect(s.runsOutAt).toBeUndefined();
    // 19,900 left, 31 days at 100 a day until the reset: 16,800 expire with the period.
    expect(s.expiringUnused.map((e) => [e.amount, timestampDate(e.expiresAt!).toISOString()])).toEqual([[16_800n, "2030-02-15T12:00:00.000Z"]]);
  });

  it("measures the pace over the last 7 days once the account is older", async () => {
    const accountId = newAccountId("fc-week");
    await fund(accountId, 100_000n);
    await spend(accountId, 7000n); // day 0: falls out of the window below
    await clockTo(accountId, new Date(TEST_EPOCH.getTime() + 8 * DAY).toISOString());
    await spend(accountId, 1400n);
    const f = await t.credit.forecastBalance({ accountId });
    expect(f.burnRatePerDay).toBe(200n);
    expect(timestampDate(f.asOf!).toISOString()).toBe(new Date(TEST_EPOCH.getTime() + 8 * DAY).toISOString());
  });
});
