import { createHash, randomUUID } from "node:crypto";
import type { MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AccountCommand } from "../../src/app/ports.js";
import { type QueuedCommand, runCommandBatch } from "../../src/store/command-batch.js";
import { PostgresChangeFeed } from "../../src/store/change-feed.js";
import { migrate, openDatabase } from "../../src/store/database.js";
import { PostgresLedgerStore } from "../../src/store/ledger-store.js";
import { dueWorkStatement } from "../../src/store/due-work.js";
import { createPool, inSnapshot, inTransaction, listenerClient, type Query, toPositional, type Transaction } from "../../src/store/pg.js";
import { RECONCILE_SETTINGS, RECONCILE_SUSPECTS } from "../../src/store/reconcile-scan.js";
import type { Row } from "../../src/store/rows.js";
import { runDatabaseUrl, TEST_DATABASE_URL } from "../support/env.js";
import { TEST_APPLY } from "../support/ledger-commands.js";
import { rebuildUsage } from "../support/usage-rollup.js";
import { dayOf, levelPlan } from "../../src/domain/usage.js";
import { boundaries } from "../../src/domain/time-zone.js";
import { CLOSE_USAGE_DAYS, leveledSeries } from "../../src/store/usage-rollup.js";

/**
 * The ledger pool plans each prepared statement once per connection, without its parameters
 * (src/store/pg.ts). Such a plan may be made while the tables are nearly empty and is kept as
 * they grow, so it must reach rows only through indexes that name them. Once, a plan made on
 * small tables found a hot account's named reservations through the account alone and read its
 * whole history on every batch (docs/performance-log.md, changes 10 and 13).
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
let orm: MikroORM | undefined;

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
  await orm?.close(true);
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

function reserveItem(accountId: string): { item: QueuedCommand; reservationId: string } {
  const reservationId = randomUUID();
  const command: AccountCommand = {
    target: { accountId },
    createAccount: false,
    idempotency: claim("Reserve"),
    caller: "plans-test",
    action: { kind: "Reserve", reservationId, cost: { amount: 5n }, ttlMs: 3_600_000, metadata: {}, memberId: "" },
  };
  return { item: { command, now: new Date(), accountId, reservationId: null }, reservationId };
}

function commitItem(accountId: string, reservationId: string): QueuedCommand {
  const command: AccountCommand = {
    target: { reservationId },
    createAccount: false,
    idempotency: claim("Commit"),
    caller: "plans-test",
    action: { kind: "Commit", reservationId, actual: { amount: 4n } },
  };
  return { command, now: new Date(), accountId, reservationId };
}

/**
 * What the transaction that runs `items` as one batch adds to `count` (a query of
 * pg_stat_xact_user_tables, one row per `relname`, numbers only). Those counters also hold
 * earlier transactions' counts until the backend reports them (at most once a second), so the
 * batch's share is the difference of a reading before it and one just before its COMMIT.
 */
async function countedBatch(items: QueuedCommand[], count: string): Promise<Record<string, Record<string, number>>> {
  let before: Row[] = [];
  let after: Row[] = [];
  await inTransaction(pool, async (tx) => {
    before = await tx.query(count);
    const counting: Transaction = {
      query: tx.query,
      run: (statements) => tx.run(statements),
      commit: async (statements = []) => {
        const rows = await tx.run([...statements, { sql: count }]);
        after = rows[rows.length - 1]!;
        return tx.commit([]);
      },
    };
    const result = await runCommandBatch(counting, items, TEST_APPLY, randomUUID);
    expect(result.outcomes.map((o) => o?.kind)).toEqual(items.map(() => "applied"));
  });
  const numbers = (row: Row | undefined): Record<string, number> =>
    Object.fromEntries(Object.entries(row ?? {}).filter(([k]) => k !== "relname").map(([k, v]) => [k, Number(v)]));
  return Object.fromEntries(
    after.map((row) => {
      const start = numbers(before.find((b) => b["relname"] === row["relname"]));
      return [row["relname"] as string, Object.fromEntries(Object.entries(numbers(row)).map(([k, v]) => [k, v - (start[k] ?? 0)]))];
    }),
  );
}

/** Rows read, per table, by the transaction that runs `items` as one batch. */
async function rowsRead(items: QueuedCommand[]): Promise<Record<string, number>> {
  const counted = await countedBatch(
    items,
    `select relname, (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::int as n from pg_stat_xact_user_tables
      where relname in ('reservations', 'operations', 'buckets', 'accounts')`,
  );
  return Object.fromEntries(Object.entries(counted).map(([table, n]) => [table, n["n"]!]));
}

/** The buckets' updates by the transaction that runs `items` as one batch, and how many of them were heap-only. */
async function bucketUpdates(items: QueuedCommand[]): Promise<{ updated: number; heapOnly: number }> {
  const { buckets } = await countedBatch(
    items,
    `select relname, n_tup_upd::int as updated, n_tup_hot_upd::int as heap_only from pg_stat_xact_user_tables where relname = 'buckets'`,
  );
  return { updated: buckets!["updated"]!, heapOnly: buckets!["heap_only"]! };
}

describe("a bucket's balance changes leave its indexes alone", () => {
  it("updates the buckets of a batch of Reserves and of Commits heap-only (no predicate names held or remaining)", async () => {
    // The sixteen buckets share the table's first page, with room for their new versions: only
    // an indexed column's change can make an update write index entries.
    const reserves = ACCOUNTS.map(reserveItem);
    const reserved = await bucketUpdates(reserves.map((r) => r.item));
    const committed = await bucketUpdates(reserves.map((r) => commitItem(r.item.accountId, r.reservationId)));
    for (const counts of [reserved, committed]) expect(counts).toEqual({ updated: ACCOUNTS.length, heapOnly: ACCOUNTS.length });
  });
});

describe("ledger statements keep index plans however the tables grow", () => {
  it("reads a handful of rows per account even after one account's history grew past the plans", async () => {
    // The plans are made now (or were, by the test above), on nearly empty reservations and operations and sixteen buckets.
    const first = ACCOUNTS.map(reserveItem);
    await rowsRead(first.map((r) => r.item));
    await rowsRead(first.map((r) => commitItem(r.item.accountId, r.reservationId)));
    const [{ generic }] = (
      await pool.query<{ generic: number }>(`select coalesce(sum(generic_plans), 0)::int as generic from pg_prepared_statements where name = 'load_books' or name like 'persist\\_books\\_%'`)
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

/** A store on the test's single connection (reads, Commit's reservation lookup, Reconcile). */
async function storeOnPool(): Promise<PostgresLedgerStore> {
  orm ??= await openDatabase({ url, poolMax: 1, migrate: false });
  const changes = new PostgresChangeFeed({ connect: () => listenerClient(url), retryMs: 1000, checkMs: 2000, checkTimeoutMs: 1000 });
  return new PostgresLedgerStore(pool, orm, randomUUID, { writeConcurrency: 1, maxBatch: 64, batchAcrossAccounts: true, changes, apply: TEST_APPLY });
}

/** The connection's prepared statements and how each was planned. */
async function preparedPlans(): Promise<Record<string, { generic: number; custom: number }>> {
  const { rows } = await pool.query<{ name: string; generic: number; custom: number }>(
    `select name, generic_plans::int as generic, custom_plans::int as custom from pg_prepared_statements`,
  );
  return Object.fromEntries(rows.map((r) => [r.name, { generic: r.generic, custom: r.custom }]));
}

describe("the hot path's planner settings", () => {
  it("GetBalance's reads and Commit's reservation lookup, outside any transaction, use generic plans too; other statements see Postgres' defaults", async () => {
    const store = await storeOnPool();
    // Holds made in a batch; committed through a new store, whose empty cache looks each reservation up.
    const held = ACCOUNTS.slice(0, 4).map(reserveItem);
    await rowsRead(held.map((r) => r.item));
    for (const { item, reservationId } of held) {
      const command = commitItem(item.accountId, reservationId).command;
      expect((await store.execute(command, new Date())).kind).toBe("applied");
    }
    // More than five reads of one statement: where Postgres' default applies, the first five would be custom plans.
    for (let i = 0; i < 8; i++) expect(await store.readBook(ACCOUNTS[i % ACCOUNTS.length]!, new Date())).not.toBeNull();

    const plans = await preparedPlans();
    for (const name of ["hot_path_planner", "lock_accounts", "load_books", "locate_reservation"]) expect(plans[name], name).toBeDefined();
    // The persist statement is prepared per shape (the parts a batch has rows for): a hold's and a commit's differ.
    expect(Object.keys(plans).filter((name) => name.startsWith("persist_books_")).length).toBeGreaterThanOrEqual(2);
    for (const [name, { custom }] of Object.entries(plans)) expect(custom, name).toBe(0);
    expect(plans["load_books"]!.generic).toBeGreaterThanOrEqual(8);
    // Outside the hot path's transactions, the same connection plans as Postgres does by default.
    const { rows } = await pool.query(
      `select current_setting('plan_cache_mode') as p, current_setting('enable_seqscan') as s, current_setting('enable_hashjoin') as h, current_setting('enable_mergejoin') as m`,
    );
    expect(rows).toEqual([{ p: "auto", s: "on", h: "on", m: "on" }]);
  }, 60_000);
});

describe("Reconcile's plan on a large account", () => {
  const HOLDS = 20_000;
  const BIG = "plans-reconcile-big";

  /** A node of an EXPLAIN (FORMAT JSON). */
  interface PlanNode {
    readonly "Node Type": string;
    readonly "Relation Name"?: string;
    readonly "Index Name"?: string;
    readonly "Total Cost": number;
    readonly "Parent Relationship"?: string;
    readonly Strategy?: string;
    readonly "Grouping Sets"?: unknown[];
    readonly Plans?: PlanNode[];
  }
  /** Every node, depth first, with the nodes above it (nearest last). */
  function nodes(plan: PlanNode, above: PlanNode[] = []): { node: PlanNode; above: PlanNode[] }[] {
    return [{ node: plan, above }, ...(plan.Plans ?? []).flatMap((child) => nodes(child, [...above, plan]))];
  }
  /** Whether the node runs again for each row of a nested loop (it is on, or under, a loop's inner side). */
  function rescanned({ node, above }: { node: PlanNode; above: PlanNode[] }): boolean {
    const path = [...above, node];
    return path.some((n, i) => n["Node Type"] === "Nested Loop" && path[i + 1]?.["Parent Relationship"] === "Inner");
  }

  it("sums the account's entries in one hashed pass, reaches each reservation once, sorts none of them, and is planned with every path open", async () => {
    // One account with HOLDS settled holds (as bench/reconcile.ts makes one), then statistics, as autovacuum would gather.
    await admin.query(`insert into accounts (account_id, created_at) values ($1, now())`, [BIG]);
    const bucket = randomUUID();
    await admin.query(
      `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
       values ($1, $2, 'ADJUSTMENT', $3::bigint * 10, $3::bigint * 6, 0, now() - interval '1 day', null, 'plans-test', now())`,
      [BIG, bucket, HOLDS],
    );
    await admin.query(
      `insert into reservations (account_id, reservation_id, state, held_amount, captured_amount, released_amount, allocations, expires_at, created_at, settled_at)
       select $1, gen_random_uuid(), 'COMMITTED', 5, 4, 1, '[]', now() - interval '1 hour', now() - interval '2 hours', now() - interval '1 hour' from generate_series(1, $2)`,
      [BIG, HOLDS],
    );
    await admin.query(
      `insert into ledger_entries (account_id, kind, bucket_id, amount, caller, metadata, created_at) values ($1, 'ADJUST', $2, $3::bigint * 10, 'plans-test', '{}', now())`,
      [BIG, bucket, HOLDS],
    );
    await admin.query(
      `insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, caller, metadata, created_at)
       select $1, k.kind, $2, r.reservation_id, k.amount, 'plans-test', '{}', now()
         from reservations r cross join (values ('HOLD', 5), ('CAPTURE', 4), ('RELEASE', 1)) as k(kind, amount) where r.account_id = $1`,
      [BIG, bucket],
    );
    await rebuildUsage(admin, BIG);
    await admin.query(`analyze accounts, buckets, reservations, ledger_entries`);

    const store = await storeOnPool();
    expect(await store.reconcile(BIG)).toEqual([]);
    // The plan, made where and as Reconcile makes it: in a snapshot transaction, under its settings.
    const explained = await inSnapshot(pool, async (tx) => {
      const [settings, ...rest] = await tx.run([
        { sql: `select current_setting('enable_seqscan') as s, current_setting('enable_hashjoin') as h, current_setting('enable_mergejoin') as m` },
        ...RECONCILE_SETTINGS,
        { sql: `select current_setting('jit') as jit, current_setting('max_parallel_workers_per_gather') as workers` },
        { sql: `explain (format json) ${RECONCILE_SUSPECTS}`, params: [BIG, BIG, BIG, BIG] },
      ]);
      expect(settings).toEqual([{ s: "on", h: "on", m: "on" }]);
      expect(rest[RECONCILE_SETTINGS.length]).toEqual([{ jit: "off", workers: "0" }]);
      return rest[RECONCILE_SETTINGS.length + 1]!;
    });
    const plan = (explained[0]!["QUERY PLAN"] as { Plan: PlanNode }[])[0]!.Plan;
    const all = nodes(plan);
    const shown = JSON.stringify(plan);
    // Nothing priced out (a disabled path costs 1e10 in this Postgres).
    expect(plan["Total Cost"], shown).toBeLessThan(1e9);
    // The entries: read at most twice, never once per row of anything, and summed by hashing before
    // anything is joined to them: once for every sum (per bucket and per reservation at once), and
    // once for the shares of open holds (a pass Postgres skips when there are none).
    const entryScans = all.filter(({ node }) => node["Relation Name"] === "ledger_entries");
    expect(entryScans.length, shown).toBeLessThanOrEqual(2);
    for (const scan of entryScans) {
      expect(rescanned(scan), shown).toBe(false);
      const aggregate = scan.above.findLastIndex((n) => n["Node Type"] === "Aggregate");
      expect(scan.above[aggregate]?.Strategy, shown).toBe("Hashed");
      // Nothing sorts them or their sums on the way up (at 200,000 holds, 600,000 rows or 200,000 sums).
      expect(scan.above.filter((n) => n["Node Type"] === "Sort"), shown).toEqual([]);
    }
    // The account holds nearly all of the entries: the pass that sums them all is sequential, not through an index.
    const summed = entryScans.filter((scan) => scan.above.findLast((n) => n["Node Type"] === "Aggregate")?.["Grouping Sets"]);
    expect(summed, shown).toHaveLength(1);
    expect(summed[0]!.node["Node Type"], shown).toBe("Seq Scan");
    // Reservations: one scan, or probed by their key once per row.
    const reservationScans = all.filter(({ node }) => node["Relation Name"] === "reservations");
    expect(reservationScans, shown).toHaveLength(1);
    if (rescanned(reservationScans[0]!)) expect(reservationScans[0]!.node["Index Name"], shown).toBe("reservations_pkey");
  }, 120_000);
});

/** A node of an EXPLAIN (FORMAT JSON), for the due-work query's plan. */
interface DuePlanNode {
  readonly "Node Type": string;
  readonly "Relation Name"?: string;
  readonly "Index Name"?: string;
  readonly Plans?: DuePlanNode[];
}
function dueNodes(plan: DuePlanNode): DuePlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(dueNodes)];
}

describe("the sweeper's due-work query with expiry notices", () => {
  const NOTICE_MS = 7 * 24 * 3600_000;
  const QUIET = 20_000;

  it("finds the buckets whose notice fell due through buckets_expiry_notice, never by reading every bucket", async () => {
    // Many accounts' buckets that are no candidates: noticed already, spent, subscriptions, far from expiry.
    await admin.query(
      `insert into accounts (account_id, created_at) select 'plans-notice-quiet-' || g, now() from generate_series(1, $1) g`,
      [QUIET / 4],
    );
    await admin.query(
      `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at, expiry_noticed)
       select 'plans-notice-quiet-' || (g % $2 + 1), gen_random_uuid(), k.kind, 10, k.remaining, 0, now() - interval '1 day',
              now() + k.expires_in, 'plans-test', now(), k.noticed
         from generate_series(1, $1) g
         cross join lateral (values
           ('TOP_UP', 10, interval '3 days', true),          -- noticed already
           ('ADJUSTMENT', 0, interval '3 days', false),      -- nothing free
           ('SUBSCRIPTION', 10, interval '3 days', false),   -- allowances reset: no notice
           ('TOP_UP', 10, interval '60 days', false)          -- not yet
         ) as k(kind, remaining, expires_in, noticed)
`,
      [QUIET / 4, QUIET / 4],
    );
    const due = "plans-notice-due";
    await admin.query(`insert into accounts (account_id, created_at) values ($1, now())`, [due]);
    await admin.query(
      `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
       values ($1, gen_random_uuid(), 'TOP_UP', 10, 10, 0, now() - interval '1 day', now() + interval '3 days', 'plans-test', now())`,
      [due],
    );
    await admin.query(`analyze accounts, buckets`);

    const statement = dueWorkStatement(new Date(), 200, NOTICE_MS);
    const params = [...(statement.params ?? [])];
    const explained = await pool.query<{ "QUERY PLAN": { Plan: DuePlanNode }[] }>(`explain (format json) ${toPositional(statement.sql)}`, params);
    const plan = explained.rows[0]!["QUERY PLAN"][0]!.Plan;
    const shown = JSON.stringify(plan);
    const all = dueNodes(plan);
    expect(all.filter((node) => node["Relation Name"] === "buckets" && node["Node Type"] === "Seq Scan"), shown).toEqual([]);
    expect(all.map((node) => node["Index Name"]), shown).toContain("buckets_expiry_notice");

    // And the query finds the account, and only it among these.
    const { rows } = await pool.query<{ account_id: string }>(toPositional(statement.sql), params);
    const found = rows.map((r) => r.account_id);
    expect(found).toContain(due);
    expect(found.filter((id) => id.startsWith("plans-notice-quiet-"))).toEqual([]);
  }, 120_000);

  it("finds accounts whose auto top-up rule fell due through accounts_auto_top_up_due, never by reading every account", async () => {
    const quiet = "plans-atu-quiet-";
    await admin.query(
      `insert into accounts (account_id, created_at, auto_top_up, auto_top_up_due_at)
       select $2 || g, now(), case when g % 2 = 0 then '{}'::jsonb end, case when g % 2 = 0 then now() + interval '1 hour' end
         from generate_series(1, $1) g`,
      [QUIET, quiet],
    );
    const due = "plans-atu-due";
    await admin.query(`insert into accounts (account_id, created_at, auto_top_up, auto_top_up_due_at) values ($1, now(), '{}'::jsonb, now() - interval '1 second')`, [due]);
    await admin.query(`analyze accounts`);
    const statement = dueWorkStatement(new Date(), 200, 0);
    const params = [...(statement.params ?? [])];
    const explained = await pool.query<{ "QUERY PLAN": { Plan: DuePlanNode }[] }>(`explain (format json) ${toPositional(statement.sql)}`, params);
    const plan = explained.rows[0]!["QUERY PLAN"][0]!.Plan;
    const shown = JSON.stringify(plan);
    const all = dueNodes(plan);
    expect(all.filter((node) => node["Relation Name"] === "accounts" && node["Node Type"] === "Seq Scan"), shown).toEqual([]);
    expect(all.map((node) => node["Index Name"]), shown).toContain("accounts_auto_top_up_due");
    const { rows } = await pool.query<{ account_id: string }>(toPositional(statement.sql), params);
    const found = rows.map((r) => r.account_id);
    expect(found).toContain(due);
    expect(found.filter((id) => id.startsWith(quiet))).toEqual([]);
  }, 120_000);
});

describe("the sweeper's close of the daily usage level", () => {
  it("finds the accounts with open past days through accounts_usage_days_open and reads each one's hours by index range, never every account or hour", async () => {
    const now = new Date();
    const today = dayOf(now);
    const quiet = "plans-days-quiet-";
    // Many accounts already closed up to today, each with hours of its own.
    await admin.query(`insert into accounts (account_id, created_at, usage_days_open_from) select $2 || g, now(), $3 from generate_series(1, $1) g`, [5000, quiet, today]);
    await admin.query(
      `insert into usage_hourly (account_id, dim, hour, value, consumed)
       select $2 || (g % $1 + 1), d.dim, $3::timestamptz - (g % 48) * interval '1 hour', 'v', 1
         from generate_series(1, $1 * 4) g cross join (values ('model'), ('kind'), ('member'), ('caller')) as d(dim)
       on conflict do nothing`,
      [5000, quiet, today],
    );
    const due = "plans-days-due";
    await admin.query(`insert into accounts (account_id, created_at, usage_days_open_from) values ($1, now(), $2)`, [due, new Date(today.getTime() - 2 * 86_400_000)]);
    await admin.query(
      `insert into usage_hourly (account_id, dim, hour, value, consumed)
       select $1, d.dim, $2::timestamptz - h * interval '1 hour', 'v', 2 from generate_series(1, 30) h cross join (values ('model'), ('kind'), ('member'), ('caller')) as d(dim)`,
      [due, today],
    );
    // The other tests' accounts closed too, so that the due one is the only candidate.
    await admin.query(`update accounts set usage_days_open_from = $1 where usage_days_open_from < $1 and account_id <> $2`, [today, due]);
    await admin.query(`analyze accounts, usage_hourly, usage_daily`);
    const params = [now, today, 200];
    const explained = await pool.query<{ "QUERY PLAN": { Plan: DuePlanNode }[] }>(`explain (format json) ${toPositional(CLOSE_USAGE_DAYS)}`, params);
    const plan = explained.rows[0]!["QUERY PLAN"][0]!.Plan;
    const shown = JSON.stringify(plan);
    const all = dueNodes(plan);
    expect(all.filter((node) => (node["Relation Name"] === "accounts" || node["Relation Name"] === "usage_hourly") && node["Node Type"] === "Seq Scan"), shown).toEqual([]);
    expect(all.map((node) => node["Index Name"]), shown).toContain("accounts_usage_days_open");

    await pool.query(toPositional(CLOSE_USAGE_DAYS), params);
    const { rows } = await pool.query<{ account_id: string; w: Date; days: number }>(
      `select a.account_id, a.usage_days_open_from as w, (select count(distinct day)::int from usage_daily d where d.account_id = a.account_id) as days
         from accounts a where a.account_id = $1 or a.account_id = $2`,
      [due, `${quiet}1`],
    );
    const byId = new Map(rows.map((r) => [r.account_id, r]));
    // The due account's two open past days (30 hours back from today's start) are written; the quiet one is untouched.
    expect([byId.get(due)!.w.toISOString(), byId.get(due)!.days]).toEqual([today.toISOString(), 2]);
    expect([byId.get(`${quiet}1`)!.w.toISOString(), byId.get(`${quiet}1`)!.days]).toEqual([today.toISOString(), 0]);
  }, 120_000);
});

describe("a DAY series in a zone off UTC midnight", () => {
  it("cuts each closed day's boundary from the day row it reads, and reads hours only for a boundary in an open day", async () => {
    const accountId = "plans-leveled";
    const today = dayOf(new Date());
    const DAY_MS = 86_400_000;
    await admin.query(`insert into accounts (account_id, created_at, usage_days_open_from) values ($1, now(), $2)`, [accountId, today]);
    // Ten closed days with their rows, and today's hours.
    await admin.query(
      `insert into usage_daily (account_id, dim, day, value, consumed, prefixes)
       select $1, 'model', $2::timestamptz - g * interval '1 day', 'v', 48, array_fill(1::bigint, array[5, 47]) from generate_series(1, 10) g`,
      [accountId, today],
    );
    await admin.query(
      `insert into usage_hourly (account_id, dim, hour, value, consumed) select $1, 'model', $2::timestamptz + h * interval '1 hour', 'v', 2 from generate_series(0, 23) h`,
      [accountId, today],
    );
    await admin.query(`analyze usage_daily, usage_hourly`);
    // Kolkata's days start at 18:30 UTC: ten boundaries in the closed days, the last (today 18:30) in the open one.
    const bounds = boundaries("Asia/Kolkata", "DAY", new Date(today.getTime() - 10 * DAY_MS + 19 * 3_600_000), new Date(today.getTime() + 18 * 3_600_000), 400)!;
    expect(bounds.length).toBe(11);
    const plans: ExplainNode[] = [];
    const explain: Query = async (sql, params) => {
      const { rows } = await pool.query<{ "QUERY PLAN": { Plan: ExplainNode }[] }>(`explain (analyze, format json) ${toPositional(sql)}`, params as unknown[]);
      plans.push(rows[0]!["QUERY PLAN"][0]!.Plan);
      return [];
    };
    await leveledSeries(explain, accountId, levelPlan(bounds, "day"), "model");
    const all = explainNodes(plans[0]!);
    const shown = JSON.stringify(plans[0]);
    // One range of today's hours for the open day's rows, one for the open day's boundary: not one per boundary.
    expect(all.filter((n) => n["Relation Name"] === "usage_hourly").map((n) => n["Actual Loops"]), shown).toEqual([1, 1]);
    expect(all.filter((n) => n["Relation Name"] === "usage_daily").map((n) => [n["Actual Loops"], n["Actual Rows"]]), shown).toEqual([[1, 10]]);
  });
});

interface ExplainNode {
  readonly "Node Type": string;
  readonly "Relation Name"?: string;
  readonly "Actual Loops"?: number;
  readonly "Actual Rows"?: number;
  readonly Plans?: ExplainNode[];
}
function explainNodes(plan: ExplainNode): ExplainNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(explainNodes)];
}
