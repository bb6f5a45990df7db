import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadStatement } from "../../src/store/account-loader.js";
import { createPool, queryOn } from "../../src/store/pg.js";
import { TEST_DATABASE_URL } from "../support/env.js";

/**
 * The ledger's prepared statements are planned for each execution's own parameters. A generic
 * plan, fixed after five runs on the statistics of that moment, once scanned a hot account's
 * whole reservation history on every batch (docs/performance.md).
 */
describe("ledger statements are never run on a generic plan", () => {
  let pool: pg.Pool;
  beforeAll(() => {
    pool = createPool({ url: TEST_DATABASE_URL, max: 1, onIdleError: () => {} });
  });
  afterAll(async () => {
    await pool.end();
  });

  it("load_books keeps custom plans however often it runs on one connection", async () => {
    const q = queryOn(pool);
    // A batch's shape: sixteen accounts, each with a named reservation and a key.
    const requests = Array.from({ length: 16 }, (_, i) => ({
      accountId: `plan-probe-${i}`,
      now: new Date(),
      reservationIds: [`00000000-0000-0000-0000-${String(i).padStart(12, "0")}`],
      idempotencyKeys: [`k-${i}`],
    }));
    const load = loadStatement(requests);
    for (let i = 0; i < 12; i++) await q(load.sql, load.params, load.name);
    // max 1: the same connection, whose prepared statements this view shows.
    const [row] = await q(`select generic_plans, custom_plans from pg_prepared_statements where name = ?`, [load.name]);
    expect(row).toBeDefined();
    expect(Number(row!["custom_plans"])).toBeGreaterThanOrEqual(12);
    expect(Number(row!["generic_plans"])).toBe(0);
  });
});
