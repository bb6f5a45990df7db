import { createHash, randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AccountCommand } from "../../src/app/ports.js";
import { commit as commitHold, reserve as reserveHold } from "../../src/domain/holds.js";
import { type QueuedCommand, runCommandBatch } from "../../src/store/command-batch.js";
import { migrate } from "../../src/store/database.js";
import { createPool, inTransaction, type Transaction } from "../../src/store/pg.js";
import type { Row } from "../../src/store/rows.js";
import { runDatabaseUrl, TEST_DATABASE_URL } from "../support/env.js";

/**
 * The ledger pool plans each prepared statement once per connection, without its parameters
 * (src/store/pg.ts). Such a plan may be made while the tables are nearly empty and is kept as
 * they grow, so it must reach rows only through indexes that name them. Once, a plan made on
 * small tables found a hot account's named reservations through the account alone and read its
 * whole history on every batch (docs/performance.md).
 *
 * Here the plans are made on a fresh database; then one account's history grows to thousands of
 * reservations, operation records and spent buckets; then a batch of Reserves and a batch of
 * Commits on that account and fifteen quiet ones must read only a few rows of each table. The
 * transaction's own counters (pg_stat_xact_user_tables) say how many rows it read.
 */
const HISTORY = 5000;
const ACCOUNTS = ["plans-hot", ...Array.from({ length: 15 }, (_, i) => `plans-quiet-${i}`)];

const url = runDatabaseUrl(`plans_${process.pid}`);
let pool: pg.Pool;
let admin: pg.Client;

beforeAll(async () => {
  await dropDatabase();
  await migrate(url);
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`insert into accounts (account_id, created_at) select unnest($1::text[]), now()`, [ACCOUNTS]);
  await admin.query(
    `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
     select id, gen_random_uuid(), 'ADJUSTMENT', 1000000, 1000000, 0, now() - interval '1 minute', null, 'plans-test', now() from unnest($1::text[]) id`,
    [ACCOUNTS],
  );
  // One connection: the one whose plans are made on the empty tables and then used.
  pool = createPool({ url, max: 1, onIdleError: () => {} });
}, 60_000);

afterAll(async () => {
  await pool?.end();
  await admin?.end();
  await dropDatabase();
});

async function dropDatabase(): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  await client.query(`drop database if exists "${new URL(url).pathname.slice(1)}" with (force)`);
  await client.end();
}

function claim(method: string) {
  const key = `plans-${randomUUID()}`;
  return { key, method, requestHash: createHash("sha256").update(key).digest() };
}

const encode = () => new Uint8Array([1]);

function reserveItem(accountId: string): { item: QueuedCommand; reservationId: string } {
  const reservationId = randomUUID();
  const command: AccountCommand<unknown> = {
    target: { accountId },
    createAccount: false,
    idempotency: claim("Reserve"),
    caller: "plans-test",
    run: (book, now) => reserveHold(book, { reservationId, amount: 5n, ttlMs: 3_600_000, metadata: {} }, now),
    encode,
  };
  return { item: { command, now: new Date(), accountId, reservationId: null }, reservationId };
}

function commitItem(accountId: string, reservationId: string): QueuedCommand {
  const command: AccountCommand<unknown> = {
    target: { reservationId },
    createAccount: false,
    idempotency: claim("Commit"),
    caller: "plans-test",
    run: (book, now) => commitHold(book, book.reservation(reservationId)!, 4n, now),
    encode,
  };
  return { command, now: new Date(), accountId, reservationId };
}

/** Rows read, per table, by the transaction that runs `items` as one batch (counted just before its COMMIT). */
async function rowsRead(items: QueuedCommand[]): Promise<Record<string, number>> {
  let counted: Row[] = [];
  await inTransaction(pool, async (tx) => {
    const counting: Transaction = {
      query: tx.query,
      run: (statements) => tx.run(statements),
      commit: async (statements = []) => {
        const rows = await tx.run([
          ...statements,
          {
            sql: `select relname, (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::int as n from pg_stat_xact_user_tables
                   where relname in ('reservations', 'operations', 'buckets', 'accounts')`,
          },
        ]);
        counted = rows[rows.length - 1]!;
        return tx.commit([]);
      },
    };
    const result = await runCommandBatch(counting, items, randomUUID);
    expect(result.outcomes.map((o) => o?.kind)).toEqual(items.map(() => "applied"));
  });
  return Object.fromEntries(counted.map((r) => [r["relname"] as string, r["n"] as number]));
}

describe("ledger statements keep index plans however the tables grow", () => {
  it("reads a handful of rows per account even after one account's history grew past the plans", async () => {
    // The plans are made now, on empty reservations and operations and sixteen buckets.
    const first = ACCOUNTS.map(reserveItem);
    await rowsRead(first.map((r) => r.item));
    await rowsRead(first.map((r) => commitItem(r.item.accountId, r.reservationId)));
    const [{ generic }] = (
      await pool.query<{ generic: number }>(`select coalesce(sum(generic_plans), 0)::int as generic from pg_prepared_statements where name in ('load_books', 'persist_books')`)
    ).rows as [{ generic: number }];
    // (The count above ran on the same single connection: its own prepared statements.)
    expect(generic).toBeGreaterThanOrEqual(4);

    // Other accounts arrive, and the hot account's history grows: settled reservations, operation records, spent buckets.
    await admin.query(`insert into accounts (account_id, created_at) select 'plans-other-' || g, now() from generate_series(1, $1) g`, [HISTORY]);
    await admin.query(
      `insert into reservations (account_id, reservation_id, state, held_amount, captured_amount, allocations, expires_at, created_at, settled_at)
       select 'plans-hot', gen_random_uuid(), 'COMMITTED', 5, 5, '[]', now() - interval '1 hour', now() - interval '2 hours', now() - interval '1 hour'
         from generate_series(1, $1)`,
      [HISTORY],
    );
    await admin.query(
      `insert into operations (account_id, idempotency_key, method, request_hash, response, created_at)
       select 'plans-hot', 'history-' || g, 'Reserve', '\\x00', '\\x00', now() from generate_series(1, $1) g`,
      [HISTORY],
    );
    await admin.query(
      `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
       select 'plans-hot', gen_random_uuid(), 'ADJUSTMENT', 1, 0, 0, now() - interval '1 day', null, 'spent', now() from generate_series(1, $1)`,
      [HISTORY],
    );

    const reserves = ACCOUNTS.map(reserveItem);
    const reserveRead = await rowsRead(reserves.map((r) => r.item));
    const commitRead = await rowsRead(reserves.map((r) => commitItem(r.item.accountId, r.reservationId)));
    // Sixteen accounts, each a few rows per table (key checks included); a plan that reached the
    // hot account's rows through the account alone would read all HISTORY of them.
    for (const read of [reserveRead, commitRead]) {
      for (const table of ["reservations", "operations", "buckets", "accounts"]) expect(read[table] ?? 0, table).toBeLessThan(25 * ACCOUNTS.length);
    }
    expect(commitRead["reservations"]).toBeGreaterThanOrEqual(ACCOUNTS.length); // the named reservations were read
  }, 60_000);
});
