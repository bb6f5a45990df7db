import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

/**
 * Reconcile takes up to a Postgres core for a second on a large account, so a server runs one
 * at a time on a connection of its own: 16 more wait their turn, and the one after them is refused
 * at once (READ_LIMIT_EXCEEDED), instead of queueing without bound.
 */

let t: TestService;
let accountId: string;

beforeAll(async () => {
  t = await startTestService();
  accountId = newAccountId("reconcile-gate");
  await t.admin.adjustCredits({ accountId, amount: 100n, reason: "reconcile gate test", idempotencyKey: newKey("fund") });
});
afterAll(async () => {
  await t?.stop();
});

function errorOf(err: unknown): { code: Code; reason: string | undefined } {
  const e = ConnectError.from(err);
  return { code: e.code, reason: e.findDetails(ErrorInfoSchema)[0]?.reason };
}

describe("Reconciles waiting on one server", () => {
  it("one runs, sixteen wait, the eighteenth is refused; once the first is free every waiting one completes", async () => {
    // Reconcile reads ledger_entries; with the table locked the running one waits inside Postgres.
    const blocker = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await blocker.connect();
    const watcher = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await watcher.connect();
    const settled: { ok: boolean; error?: unknown }[] = [];
    const calls: Promise<void>[] = [];
    const reconcile = () =>
      calls.push(
        t.admin.reconcile({ accountId }).then(
          (r) => void settled.push({ ok: r.consistent }),
          (error: unknown) => void settled.push({ ok: false, error }),
        ),
      );
    try {
      await blocker.query("begin");
      await blocker.query("lock table ledger_entries in access exclusive mode");
      reconcile();
      // The running one is on the Reconcile connection, waiting for the table lock.
      await vi.waitFor(
        async () => {
          const { rows } = await watcher.query(
            `select 1 from pg_stat_activity where datname = current_database() and application_name = 'credit-service-reconcile' and wait_event_type = 'Lock'`,
          );
          expect(rows).toHaveLength(1);
        },
        { timeout: 20_000, interval: 20 },
      );
      for (let i = 0; i < 16; i += 1) reconcile();
      expect(settled).toEqual([]);
      reconcile();
      await vi.waitFor(() => expect(settled).toHaveLength(1), { timeout: 20_000, interval: 20 });
      expect(errorOf(settled[0]!.error)).toEqual({ code: Code.ResourceExhausted, reason: "READ_LIMIT_EXCEEDED" });
    } finally {
      await blocker.query("commit");
      await blocker.end();
      await watcher.end();
    }
    await Promise.all(calls);
    expect(settled.filter((s) => s.ok)).toHaveLength(17);
  });
});
