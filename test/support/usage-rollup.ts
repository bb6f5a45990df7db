import type pg from "pg";
import { REBUILD_ACCOUNT_USAGE } from "../../src/store/usage-rollup.js";

/**
 * Rebuilds an account's usage rollup from its entries, for tests and benches that write entries
 * in SQL (the service adds to the rollup in the write transaction; SQL seeding bypasses it).
 */
export async function rebuildUsage(db: pg.Pool | pg.PoolClient | pg.Client, accountId: string): Promise<void> {
  for (const sql of REBUILD_ACCOUNT_USAGE) await db.query(sql, [accountId]);
}
