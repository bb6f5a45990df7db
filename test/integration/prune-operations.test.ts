import { randomUUID } from "node:crypto";
import type { MikroORM } from "@mikro-orm/postgresql";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PostgresChangeFeed } from "../../src/store/change-feed.js";
import { openDatabase } from "../../src/store/database.js";
import { TEST_APPLY } from "../support/ledger-commands.js";
import { PostgresLedgerStore } from "../../src/store/ledger-store.js";
import { createPool, listenerClient } from "../../src/store/pg.js";
import { TEST_DATABASE_URL } from "../support/env.js";

/** The sweeper's pruning of operation records past the idempotency window. */
describe("pruneOperations", () => {
  let pool: pg.Pool;
  let orm: MikroORM;
  let store: PostgresLedgerStore;

  beforeAll(async () => {
    orm = await openDatabase({ url: TEST_DATABASE_URL, poolMax: 1, migrate: false });
    pool = createPool({ url: TEST_DATABASE_URL, max: 2, onIdleError: () => {} });
    const changes = new PostgresChangeFeed({ connect: () => listenerClient(TEST_DATABASE_URL), retryMs: 1000, checkMs: 2000, checkTimeoutMs: 1000 });
    store = new PostgresLedgerStore(pool, orm, randomUUID, { writeConcurrency: 1, maxBatch: 8, batchAcrossAccounts: true, changes, apply: TEST_APPLY });
  });
  afterAll(async () => {
    await pool?.end();
    await orm?.close(true);
  });

  it("deletes the oldest records first, only those older than the cut-off, at most `limit` per call", async () => {
    const accountId = `prune-${randomUUID()}`;
    // Far in the past, so that no other test's records are older than these.
    const base = new Date("2001-01-01T00:00:00Z").getTime();
    await pool.query(`insert into accounts (account_id, created_at) values ($1, now())`, [accountId]);
    const ages = [1, 3, 5, 2, 4]; // days before the cut-off, not in age order; one record younger than it
    await pool.query(
      `insert into operations (account_id, idempotency_key, method, request_hash, response, created_at)
       select $1, 'k' || d, 'Reserve', '\\x00'::bytea, '\\x00'::bytea, $2::timestamptz - d * interval '1 day' from unnest($3::int[]) d
       union all select $1, 'young', 'Reserve', '\\x00'::bytea, '\\x00'::bytea, $2::timestamptz + interval '1 hour'`,
      [accountId, new Date(base), ages],
    );
    const keys = async () => (await pool.query(`select idempotency_key from operations where account_id = $1 order by created_at`, [accountId])).rows.map((r) => r.idempotency_key as string);
    const cutOff = new Date(base);
    expect(await store.pruneOperations(cutOff, 2)).toBe(2);
    expect(await keys()).toEqual(["k3", "k2", "k1", "young"]);
    expect(await store.pruneOperations(cutOff, 10)).toBe(3);
    expect(await keys()).toEqual(["young"]);
    expect(await store.pruneOperations(cutOff, 10)).toBe(0);
  });
});
