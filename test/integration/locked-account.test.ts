/**
 * An account whose row another transaction holds locked (another server, a long transaction,
 * someone's `select … for update` in psql) must not stall the writes of other accounts: its
 * commands wait for the lock without taking every write slot, and run in arrival order once it
 * comes free. PostgresLedgerStore against the real Postgres, the lock held by a connection of its own.
 */
import type { MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CommandOutcome } from "../../src/app/ports.js";
import { openDatabase } from "../../src/store/database.js";
import type { PostgresLedgerStore } from "../../src/store/ledger-store.js";
import { createPool } from "../../src/store/pg.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { balanceOf, failureOf, fundAccounts, makeProbe, newAccount, queryRows, reserveCommand, type StoreOptions } from "../support/ledger-commands.js";

let pool: pg.Pool;
let orm: MikroORM;
let funder: PostgresLedgerStore;
const extraPools: pg.Pool[] = [];
const holders: pg.Client[] = [];

beforeAll(async () => {
  orm = await openDatabase({ url: TEST_DATABASE_URL, poolMax: 1, migrate: false });
  pool = createPool({ url: TEST_DATABASE_URL, max: 8, onIdleError: () => {} });
  funder = makeProbe(pool, orm, { writeConcurrency: 2, maxBatch: 64 }).store;
});

afterAll(async () => {
  await Promise.all(holders.map((c) => c.end().catch(() => {})));
  await Promise.all(extraPools.map((p) => p.end()));
  await pool?.end();
  await orm?.close(true);
});

const rows = <T extends Record<string, unknown>>(text: string, params: unknown[] = []) => queryRows<T>(pool, text, params);
const turn = () => new Promise((r) => setImmediate(r));

/** Another transaction holding `select … for update` on the accounts' rows until `release()`. */
async function holdRows(accountIds: readonly string[]): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, application_name: "lock-holder" });
  holders.push(client);
  await client.connect();
  await client.query("begin");
  const locked = await client.query(`select account_id from accounts where account_id = any($1) for update`, [accountIds]);
  expect(locked.rowCount).toBe(accountIds.length);
  return {
    release: async () => {
      await client.query("commit");
    },
  };
}

/** Polls until `check` holds (a condition, not a duration); fails with `what` after `limitMs`. */
async function until(what: string, check: () => boolean | Promise<boolean>, limitMs = 10_000): Promise<void> {
  const t0 = performance.now();
  while (!(await check())) {
    if (performance.now() - t0 > limitMs) throw new Error(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Connections of the store's pool waiting for a lock in Postgres right now. */
async function lockWaiters(): Promise<number> {
  const [row] = await rows<{ n: number }>(
    `select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'credit-service' and wait_event_type = 'Lock'`,
  );
  return row!.n;
}

/** Whether the promise settles within `limitMs` (the limit only bounds a failing run; it decides nothing that passes). */
async function settlesWithin(promise: Promise<unknown>, limitMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), limitMs)));
  const done = await Promise.race([promise.then(() => true as const, () => true as const), limit]);
  clearTimeout(timer);
  return done;
}

interface Scenario {
  readonly options: StoreOptions;
  /** How many accounts another transaction holds locked. */
  readonly locked: number;
  /**
   * Waves of Reserves on them (a locked account's index per Reserve); a wave arrives once the store
   * has started a batch for the one before (without the fix, each wave takes a write slot and waits).
   */
  readonly waves: readonly (readonly number[])[];
}

/**
 * Each locked account can pay for the first half of its Reserves of 10, so which ones succeed
 * shows the order they ran in. An unrelated account's Reserve arrives with the first wave (sharing
 * its batch), another after the last wave: both must complete while the rows are still locked.
 */
async function lockedAccountScenario(scenario: Scenario): Promise<void> {
  const probe = makeProbe(pool, orm, scenario.options);
  const locked = Array.from({ length: scenario.locked }, () => newAccount("locked"));
  const [sharer, late] = [newAccount("sharer"), newAccount("late")];
  const payable = locked.map((_, a) => Math.floor(scenario.waves.flat().filter((i) => i === a).length / 2));
  await fundAccounts(funder, [sharer, late], 100n);
  await Promise.all(locked.map((id, a) => fundAccounts(funder, [id], BigInt(payable[a]!) * 10n + 5n)));
  const holder = await holdRows(locked);

  const commands = locked.map(() => [] as ReturnType<typeof reserveCommand>[]);
  const outcomes = locked.map(() => [] as Promise<CommandOutcome<unknown>>[]);
  let sharerDone: Promise<CommandOutcome<unknown>> | undefined;
  for (const [w, wave] of scenario.waves.entries()) {
    for (const a of wave) {
      const command = reserveCommand(locked[a]!, 10n, { probe });
      commands[a]!.push(command);
      outcomes[a]!.push(probe.store.execute(command, new Date()));
    }
    sharerDone ??= probe.store.execute(reserveCommand(sharer, 10n), new Date());
    await until(`a batch for wave ${w + 1}, waiting for the lock`, async () => probe.batches.length > w && (await lockWaiters()) > 0);
  }
  const lateDone = probe.store.execute(reserveCommand(late, 10n), new Date());
  const [sharerSettled, lateSettled] = await Promise.all([settlesWithin(sharerDone!, 10_000), settlesWithin(lateDone, 10_000)]);
  const pending = "still pending while the locked rows are held";
  expect({ sharer: sharerSettled ? "completed" : pending, late: lateSettled ? "completed" : pending }).toEqual({ sharer: "completed", late: "completed" });
  expect((await Promise.all([sharerDone!, lateDone])).map((o) => o.kind)).toEqual(["applied", "applied"]);
  expect(probe.runs()).toBe(0); // none of the locked accounts' commands has run yet

  await holder.release();
  for (const [a, accountId] of locked.entries()) {
    const results = await Promise.all(outcomes[a]!);
    // Arrival order: exactly the first `payable` succeed, the rest find too little left.
    expect(results.map((o) => o.kind)).toEqual(results.map((_, i) => (i < payable[a]! ? "applied" : "failed")));
    expect(new Set(results.slice(payable[a]).map(failureOf))).toEqual(new Set(["INSUFFICIENT_CREDITS"]));
    const holds = await rows<{ key: string }>(`select idempotency_key as key from ledger_entries where account_id = $1 and kind = 'HOLD' order by entry_id`, [accountId]);
    expect(holds.map((h) => h.key)).toEqual(commands[a]!.slice(0, payable[a]).map((c) => c.idempotency!.key));
    expect(await balanceOf(funder, accountId)).toEqual({ held: BigInt(payable[a]!) * 10n, available: 5n });
    expect(await probe.store.reconcile(accountId)).toEqual([]);
  }
  // Each command ran once: those left out of a batch never ran in it.
  expect(probe.runs()).toBe(scenario.waves.flat().length);
  for (const accountId of [sharer, late]) expect(await balanceOf(funder, accountId)).toEqual({ held: 10n, available: 90n });
}

describe("an account whose row another transaction holds locked", () => {
  it("staggered batches: its commands filling both write slots' worth do not stall an unrelated Reserve; once unlocked they run in arrival order", async () => {
    await lockedAccountScenario({ options: { writeConcurrency: 2, maxBatch: 8, staggerFrom: 16 }, locked: 1, waves: [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]] });
  });

  it("batches not staggered: two locked accounts do not take both write slots", async () => {
    await lockedAccountScenario({ options: { writeConcurrency: 2, maxBatch: 64 }, locked: 2, waves: [[0, 0, 0, 0], [1, 1, 1, 1, 1, 1]] });
  });

  it("a batch that fails while it leaves a locked account out: its other commands run again alone, the locked account's run once, after the lock", async () => {
    const probe = makeProbe(pool, orm, { writeConcurrency: 2, maxBatch: 64, staggerFrom: 16 });
    const [lockedId, other] = [newAccount("locked"), newAccount("thrower")];
    await fundAccounts(funder, [lockedId, other], 100n);
    const holder = await holdRows([lockedId]);
    const bug = new Error("a bug in a command");
    const now = new Date();
    const onLocked = [reserveCommand(lockedId, 30n, { probe }), reserveCommand(lockedId, 40n, { probe })];
    const thrower = reserveCommand(other, 10n, {
      after: () => {
        throw bug;
      },
    });
    const neighbour = reserveCommand(other, 20n);
    const locked = onLocked.map((c) => probe.store.execute(c, now));
    const others = Promise.allSettled([probe.store.execute(thrower, now), probe.store.execute(neighbour, now)]);
    expect(await settlesWithin(others, 10_000)).toBe(true);
    expect((await others).map((r) => (r.status === "fulfilled" ? r.value.kind : r.reason))).toEqual([bug, "applied"]);
    expect(probe.batches[0]!.size).toBe(4); // they shared the batch that failed
    expect(probe.runs()).toBe(0);
    await holder.release();
    expect((await Promise.all(locked)).map((o) => o.kind)).toEqual(["applied", "applied"]);
    expect(probe.runs()).toBe(2);
    expect(await balanceOf(funder, lockedId)).toEqual({ held: 70n, available: 30n });
    expect(await balanceOf(funder, other)).toEqual({ held: 20n, available: 80n });
    for (const id of [lockedId, other]) expect(await probe.store.reconcile(id)).toEqual([]);
  });

  it("two servers on one hot account: each server's Reserves still succeed in arrival order, exactly the balance's worth", async () => {
    const otherPool = createPool({ url: TEST_DATABASE_URL, max: 4, onIdleError: () => {} });
    extraPools.push(otherPool);
    const servers = [makeProbe(pool, orm, { writeConcurrency: 2, maxBatch: 64, staggerFrom: 8 }), makeProbe(otherPool, orm, { writeConcurrency: 2, maxBatch: 64, staggerFrom: 8 })];
    const accountId = newAccount("contended");
    await fundAccounts(funder, [accountId], 505n);
    const outcomes: Promise<CommandOutcome<unknown>>[][] = [[], []];
    for (let wave = 0; wave < 4; wave++) {
      for (const [s, server] of servers.entries()) for (let i = 0; i < 10; i++) outcomes[s]!.push(server.store.execute(reserveCommand(accountId, 10n), new Date()));
      await turn();
    }
    const kinds = await Promise.all(outcomes.map(async (list) => (await Promise.all(list)).map((o) => o.kind)));
    for (const list of kinds) {
      const applied = list.filter((k) => k === "applied").length;
      expect(list).toEqual(list.map((_, i) => (i < applied ? "applied" : "failed")));
    }
    expect(kinds.flat().filter((k) => k === "applied")).toHaveLength(50);
    expect(await balanceOf(funder, accountId)).toEqual({ held: 500n, available: 5n });
    expect(await servers[0]!.store.reconcile(accountId)).toEqual([]);
  });
});
