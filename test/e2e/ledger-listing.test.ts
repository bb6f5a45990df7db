import { toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type LedgerEntry, ListLedgerEntriesResponseSchema } from "../../src/client/index.js";
import { LEDGER_PAGE_MAX_BYTES } from "../../src/app/queries.js";
import { MAX_METADATA_ENTRIES, MAX_METADATA_KEY_LENGTH, MAX_METADATA_VALUE_LENGTH } from "../../src/domain/limits.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

/**
 * ListLedgerEntries under weight: pages are bounded in bytes as well as in entries (so an
 * account whose entries carry the largest metadata still answers under gRPC's 4 MiB send limit),
 * and heavy listings cannot take every ORM connection from plan lookups.
 */

/** The largest metadata a Reserve may carry: every entry, every key and value at its longest. */
const LARGEST_METADATA = Object.fromEntries(
  Array.from({ length: MAX_METADATA_ENTRIES }, (_, i) => [`k${i}-`.padEnd(MAX_METADATA_KEY_LENGTH, "k"), `v${i}-`.padEnd(MAX_METADATA_VALUE_LENGTH, "v")]),
);
/** Holds made on the heavy account: their HOLD entries together are far over 4 MiB. */
const HOLDS = 500;

let t: TestService;
let heavy: string;

beforeAll(async () => {
  t = await startTestService();
  heavy = newAccountId("heavy");
  await t.admin.adjustCredits({ accountId: heavy, amount: 1_000_000n, reason: "listing test", idempotencyKey: newKey("fund") });
  for (let done = 0; done < HOLDS; done += 25) {
    await Promise.all(
      Array.from({ length: 25 }, () =>
        t.credit.reserve({ accountId: heavy, idempotencyKey: newKey("hold"), cost: { case: "amount", value: 1n }, metadata: LARGEST_METADATA }),
      ),
    );
  }
});
afterAll(async () => {
  await t?.stop();
});

function errorOf(err: unknown): { code: Code; reason: string | undefined } {
  const e = ConnectError.from(err);
  return { code: e.code, reason: e.findDetails(ErrorInfoSchema)[0]?.reason };
}

describe("pages are bounded in bytes", () => {
  it("page_size 1000 over entries with the largest metadata: OK, fewer entries under the byte budget, and paging returns every entry exactly once", async () => {
    const seen: LedgerEntry[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await t.admin.listLedgerEntries({ accountId: heavy, pageSize: 1000, pageToken });
      expect(page.entries.length).toBeGreaterThan(0);
      expect(toBinary(ListLedgerEntriesResponseSchema, page).length).toBeLessThanOrEqual(LEDGER_PAGE_MAX_BYTES);
      if (pages === 0) {
        expect(page.entries.length).toBeLessThan(HOLDS + 1);
        expect(page.nextPageToken).not.toBe("");
      }
      seen.push(...page.entries);
      pageToken = page.nextPageToken;
      pages += 1;
    } while (pageToken !== "");
    expect(pages).toBeGreaterThan(1);
    const ids = seen.map((e) => e.entryId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual([...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    expect(seen).toHaveLength(HOLDS + 1); // the ADJUST and every HOLD
    expect(seen.filter((e) => e.metadata["k0-".padEnd(MAX_METADATA_KEY_LENGTH, "k")] !== undefined)).toHaveLength(HOLDS);
  });
});

describe("heavy listings keep their own share of the ORM pool", () => {
  it("with 16 listings stuck in Postgres, ChangePlan and ListPlans still answer; listings beyond the queue are RESOURCE_EXHAUSTED", async () => {
    const subscriber = newAccountId("plan");
    await t.credit.changePlan({ accountId: subscriber, planId: "pro-monthly", idempotencyKey: newKey("plan") });

    // Listings read ledger_entries; with the table locked they wait inside Postgres, on their connection.
    const blocker = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await blocker.connect();
    // Watched from another connection: inside the blocker's transaction pg_stat_activity is a snapshot.
    const watcher = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await watcher.connect();
    const lockWaiters = async () =>
      Number((await watcher.query<{ n: string }>(`select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`)).rows[0]!.n);
    const settled: { ok: boolean; error?: unknown }[] = [];
    const listings: Promise<void>[] = [];
    const list = () =>
      listings.push(
        t.admin.listLedgerEntries({ accountId: heavy, pageSize: 1000 }).then(
          (page) => void settled.push({ ok: page.entries.length > 0 }),
          (error: unknown) => void settled.push({ ok: false, error }),
        ),
      );
    try {
      await blocker.query("begin");
      await blocker.query("lock table ledger_entries in access exclusive mode");
      for (let i = 0; i < 16; i += 1) list();
      await vi.waitFor(async () => expect(await lockWaiters()).toBeGreaterThanOrEqual(2), { timeout: 20_000, interval: 20 });

      // Both need the ORM pool (the plan lookup); neither touches ledger_entries.
      const failure = await t.credit.changePlan({ accountId: subscriber, planId: "pro-monthly", idempotencyKey: newKey("plan") }).then(
        () => expect.unreachable("the subscriber is already on pro-monthly"),
        errorOf,
      );
      expect(failure).toEqual({ code: Code.FailedPrecondition, reason: "ALREADY_ON_PLAN" });
      expect((await t.credit.listPlans({})).plans.map((p) => p.planId)).toContain("pro-monthly");
      expect(settled).toEqual([]); // every listing is still waiting

      // Two run and sixteen wait: the 19th and 20th are refused at once.
      for (let i = 0; i < 4; i += 1) list();
      await vi.waitFor(() => expect(settled).toHaveLength(2), { timeout: 20_000, interval: 20 });
      for (const s of settled) expect(errorOf(s.error)).toEqual({ code: Code.ResourceExhausted, reason: "READ_LIMIT_EXCEEDED" });
    } finally {
      await blocker.query("commit");
      await blocker.end();
      await watcher.end();
    }
    await Promise.all(listings);
    expect(settled.filter((s) => s.ok)).toHaveLength(18);
  });
});
