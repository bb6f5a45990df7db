/**
 * Group commit against the real Postgres: PostgresLedgerStore built directly (no server, no Redis),
 * so each test controls exactly which commands arrive in one event-loop turn and can watch the
 * batches form (onBatch). Every command here is a real AccountCommand running the real domain
 * functions (reserve / commit / release / grantAdjustment) on the books the store loads.
 */
import { randomUUID } from "node:crypto";
import type { MikroORM } from "@mikro-orm/postgresql";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AccountCommand } from "../../src/app/ports.js";
import { fail, InvariantViolation } from "../../src/domain/errors.js";
import { reserve as reserveHold } from "../../src/domain/holds.js";
import { openDatabase } from "../../src/store/database.js";
import type { PostgresLedgerStore } from "../../src/store/ledger-store.js";
import { createPool, inTransaction, pipeline, queryOn } from "../../src/store/pg.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import {
  adjustCommand,
  balanceOf,
  claim,
  failureOf,
  fundAccounts,
  HOUR,
  makeProbe,
  newAccount,
  type Probe,
  queryRows,
  reserveCommand,
  settleCommand,
  sizes,
  type StoreOptions,
  sum,
  withRun,
} from "../support/ledger-commands.js";

let pool: pg.Pool;
let orm: MikroORM;
/** Funds accounts; its batches are not counted by any test. */
let funder: PostgresLedgerStore;
const extraPools: pg.Pool[] = [];

beforeAll(async () => {
  orm = await openDatabase({ url: TEST_DATABASE_URL, poolMax: 1, migrate: false });
  pool = createPool({ url: TEST_DATABASE_URL, max: 6, onIdleError: () => {} });
  funder = makeStore({ writeConcurrency: 2, maxBatch: 64 }).store;
});

afterAll(async () => {
  await Promise.all(extraPools.map((p) => p.end()));
  await pool?.end();
  await orm?.close(true);
});

// ---------------------------------------------------------------------------------------------
// helpers bound to this file's pool and funder

const makeStore = (options: StoreOptions, on: pg.Pool = pool): Probe => makeProbe(on, orm, options);
const fund = (accountIds: readonly string[], amount: bigint) => fundAccounts(funder, accountIds, amount);
const rows = <T extends Record<string, unknown>>(text: string, params: unknown[] = []) => queryRows<T>(pool, text, params);
const heldAndAvailable = (accountId: string) => balanceOf(funder, accountId);

// ---------------------------------------------------------------------------------------------

describe("group commit: PostgresLedgerStore against the real Postgres", () => {
  it("groups many concurrent Reserves on many accounts into shared transactions (writeConcurrency 1), each account exact", async () => {
    const accounts = Array.from({ length: 40 }, () => newAccount("many"));
    await fund(accounts, 1000n);
    const probe = makeStore({ writeConcurrency: 1, maxBatch: 64 });
    const amounts = [10n, 20n, 30n];
    // Interleaved: every account's three commands spread over the queue.
    const commands = amounts.flatMap((amount) => accounts.map((id) => reserveCommand(id, amount, { probe })));
    const unknown = newAccount("missing");
    const now = new Date();
    const outcomes = await Promise.all([...commands.map((c) => probe.store.execute(c, now)), probe.store.execute(reserveCommand(unknown, 1n), now)]);

    expect(outcomes.slice(0, commands.length).map((o) => o.kind)).toEqual(commands.map(() => "applied"));
    // A command on an account that does not exist fails alone, and creates nothing.
    expect(failureOf(outcomes[commands.length]!)).toBe("ACCOUNT_NOT_FOUND");
    expect(await rows(`select 1 from accounts where account_id = $1`, [unknown])).toEqual([]);

    // Grouping happened: with one write slot, 121 commands went in a handful of batches.
    expect(Math.max(...sizes(probe))).toBeGreaterThan(1);
    expect(sum(sizes(probe))).toBe(commands.length + 1);
    expect(probe.batches.length).toBeLessThanOrEqual(Math.ceil((commands.length + 1) / 64) + 1);

    for (const accountId of accounts) {
      expect(await heldAndAvailable(accountId)).toEqual({ held: 60n, available: 940n });
      const [stored] = await rows<{ held: string; remaining: string; n: string }>(
        `select sum(held)::text as held, sum(remaining)::text as remaining,
                (select count(*) from reservations r where r.account_id = $1 and r.state = 'HELD')::text as n
           from buckets where account_id = $1`,
        [accountId],
      );
      expect(stored).toEqual({ held: "60", remaining: "1000", n: "3" });
      expect(await probe.store.reconcile(accountId)).toEqual([]);
    }
  });

  it("two calls with one idempotency key in one batch: one effect, the second replays byte-identically; another request with the key is refused", async () => {
    const accountId = newAccount("idem");
    await fund([accountId], 500n);
    const probe = makeStore({ writeConcurrency: 2, maxBatch: 64 });
    const now = new Date();

    // Same key, same request hash (a client retry); each call picks its own reservation id like the app does.
    const first = reserveCommand(accountId, 40n, { key: "k-same", request: "reserve 40", probe });
    const retry = reserveCommand(accountId, 40n, { key: "k-same", request: "reserve 40", probe });
    const [a, b] = await Promise.all([probe.store.execute(first, now), probe.store.execute(retry, now)]);
    expect(sizes(probe)).toEqual([2]); // the same batch
    // The replay comes from the record the first call made in this batch: the retry's run() never ran,
    // and the batch did not fail and run again command by command (that would have run the first twice).
    expect(probe.runs()).toBe(1);
    expect(a.kind).toBe("applied");
    expect(b.kind).toBe("replayed");
    if (a.kind !== "applied" || b.kind !== "replayed") return;
    expect(Buffer.from(b.response).equals(Buffer.from(a.response!))).toBe(true);
    expect(JSON.parse(Buffer.from(b.response).toString())).toMatchObject({ reservationId: first.reservationId });

    const reservations = await rows<{ reservation_id: string }>(`select reservation_id from reservations where account_id = $1`, [accountId]);
    expect(reservations.map((r) => r.reservation_id)).toEqual([first.reservationId]);
    const holds = await rows(`select 1 from ledger_entries where account_id = $1 and kind = 'HOLD'`, [accountId]);
    expect(holds).toHaveLength(1);
    const ops = await rows(`select 1 from operations where account_id = $1 and idempotency_key = 'k-same'`, [accountId]);
    expect(ops).toHaveLength(1);

    // Later, in its own batch, the stored record replays the very same bytes.
    const later = await probe.store.execute(reserveCommand(accountId, 40n, { key: "k-same", request: "reserve 40" }), new Date());
    expect(later.kind).toBe("replayed");
    if (later.kind === "replayed") expect(Buffer.from(later.response).equals(Buffer.from(a.response!))).toBe(true);

    // Same key, a different request, in one batch: the first applies, the second is refused and changes nothing.
    const c1 = reserveCommand(accountId, 10n, { key: "k-reused", request: "reserve 10" });
    const c2 = reserveCommand(accountId, 20n, { key: "k-reused", request: "reserve 20" });
    const [r1, r2] = await Promise.all([probe.store.execute(c1, now), probe.store.execute(c2, now)]);
    expect(sizes(probe).at(-1)).toBe(2);
    expect(r1.kind).toBe("applied");
    expect(failureOf(r2)).toBe("IDEMPOTENCY_KEY_REUSED");
    const after = await rows<{ reservation_id: string }>(`select reservation_id from reservations where account_id = $1 order by created_at`, [accountId]);
    expect(after.map((r) => r.reservation_id).sort()).toEqual([first.reservationId, c1.reservationId].sort());
    expect(await heldAndAvailable(accountId)).toEqual({ held: 50n, available: 450n });
    expect(await probe.store.reconcile(accountId)).toEqual([]);
  });

  it("a command whose run() throws fails alone: its neighbours (other accounts and its own) are applied, nothing of it is written", async () => {
    const good = [newAccount("good"), newAccount("good"), newAccount("good")];
    const victim = newAccount("thrower");
    await fund([...good, victim], 300n);
    const probe = makeStore({ writeConcurrency: 1, maxBatch: 64 });
    const bug = new Error("a bug in a command");
    // The thrower changes the shared book (holds 50) before throwing: none of that may reach the database.
    const thrower = reserveCommand(victim, 50n, {
      key: "k-thrower",
      after: () => {
        throw bug;
      },
    });
    const neighbour = reserveCommand(victim, 25n, { key: "k-neighbour", caller: "neighbour" });
    const goods = good.map((id) => reserveCommand(id, 100n));
    const now = new Date();
    const settled = await Promise.allSettled([
      probe.store.execute(goods[0]!, now),
      probe.store.execute(thrower, now),
      probe.store.execute(goods[1]!, now),
      probe.store.execute(neighbour, now),
      probe.store.execute(goods[2]!, now),
    ]);
    expect(sizes(probe)).toEqual([5]); // they really shared the batch that failed

    expect(settled[1]).toEqual({ status: "rejected", reason: bug });
    for (const i of [0, 2, 3, 4]) {
      const s = settled[i]!;
      expect(s.status).toBe("fulfilled");
      if (s.status === "fulfilled") expect(s.value.kind).toBe("applied");
    }
    for (const id of good) {
      expect(await heldAndAvailable(id)).toEqual({ held: 100n, available: 200n });
      expect(await probe.store.reconcile(id)).toEqual([]);
    }
    // The thrower's account holds only its neighbour's 25.
    expect(await heldAndAvailable(victim)).toEqual({ held: 25n, available: 275n });
    const reservations = await rows<{ reservation_id: string }>(`select reservation_id from reservations where account_id = $1`, [victim]);
    expect(reservations.map((r) => r.reservation_id)).toEqual([neighbour.reservationId]);
    const entries = await rows<{ kind: string; amount: string; idempotency_key: string | null }>(
      `select kind, amount::text as amount, idempotency_key from ledger_entries where account_id = $1 and kind <> 'ADJUST' order by entry_id`,
      [victim],
    );
    expect(entries).toEqual([{ kind: "HOLD", amount: "25", idempotency_key: "k-neighbour" }]);
    expect(await rows(`select 1 from operations where account_id = $1 and idempotency_key = 'k-thrower'`, [victim])).toEqual([]);
    expect(await probe.store.reconcile(victim)).toEqual([]);
  });

  it("a command Postgres refuses to write (NUL in jsonb metadata) fails alone; its neighbours on the same account are applied", async () => {
    const accountId = newAccount("refused");
    const other = newAccount("refused");
    await fund([accountId, other], 100n);
    const probe = makeStore({ writeConcurrency: 1, maxBatch: 64 });
    const reservationId = randomUUID();
    const bad = reserveCommand(accountId, 10n, { reservationId, metadata: { note: "nul \u0000 byte" } });
    const before = reserveCommand(accountId, 20n);
    const after = reserveCommand(accountId, 30n);
    const elsewhere = reserveCommand(other, 40n);
    const now = new Date();
    const settled = await Promise.allSettled([before, bad, after, elsewhere].map((c) => probe.store.execute(c, now)));
    expect(sizes(probe)).toEqual([4]);
    expect(settled.map((s) => (s.status === "fulfilled" ? s.value.kind : "rejected"))).toEqual(["applied", "rejected", "applied", "applied"]);
    expect((settled[1] as PromiseRejectedResult).reason).toMatchObject({ code: "22P05" }); // untranslatable character
    expect(await heldAndAvailable(accountId)).toEqual({ held: 50n, available: 50n });
    expect(await heldAndAvailable(other)).toEqual({ held: 40n, available: 60n });
    expect(await rows(`select 1 from reservations where reservation_id = $1`, [reservationId])).toEqual([]);
    expect(await probe.store.reconcile(accountId)).toEqual([]);
  });

  it("a command that changes the book and then reports a failure is a bug: it rejects alone and none of its changes are written", async () => {
    const accountId = newAccount("liar");
    await fund([accountId], 100n);
    const probe = makeStore({ writeConcurrency: 1, maxBatch: 64 });
    const liar = withRun(reserveCommand(accountId, 10n, { key: "k-liar" }), (book, now) => {
      const held = reserveHold(book, { reservationId: randomUUID(), amount: 70n, ttlMs: HOUR, metadata: {} }, now);
      return held.ok ? fail("INSUFFICIENT_CREDITS", "pretends to have failed") : held;
    });
    const honest = reserveCommand(accountId, 20n, { key: "k-honest" });
    const now = new Date();
    const settled = await Promise.allSettled([probe.store.execute(liar, now), probe.store.execute(honest, now)]);
    expect(sizes(probe)).toEqual([2]);
    expect(settled[0]!.status).toBe("rejected");
    expect((settled[0] as PromiseRejectedResult).reason).toBeInstanceOf(InvariantViolation);
    expect(settled[1]!.status === "fulfilled" && settled[1].value.kind).toBe("applied");
    expect(await heldAndAvailable(accountId)).toEqual({ held: 20n, available: 80n });
    const holds = await rows<{ idempotency_key: string }>(`select idempotency_key from ledger_entries where account_id = $1 and kind = 'HOLD'`, [accountId]);
    expect(holds).toEqual([{ idempotency_key: "k-honest" }]);
    expect(await rows(`select 1 from operations where account_id = $1 and idempotency_key = 'k-liar'`, [accountId])).toEqual([]);
    expect(await probe.store.reconcile(accountId)).toEqual([]);
  });

  it("a command that moves credits without an entry breaks conservation: it rejects alone before the write, nothing of it is written", async () => {
    const accountId = newAccount("leak");
    await fund([accountId], 100n);
    const probe = makeStore({ writeConcurrency: 1, maxBatch: 64 });
    const leak = withRun(reserveCommand(accountId, 10n, { key: "k-leak" }), (book, _now, real) => {
      const result = real();
      book.allBuckets()[0]!.remaining -= 1n; // a credit gone with no CAPTURE or EXPIRE to say where
      return result;
    });
    const honest = reserveCommand(accountId, 20n, { key: "k-honest" });
    const settled = await Promise.allSettled([probe.store.execute(leak, new Date()), probe.store.execute(honest, new Date())]);
    expect(sizes(probe)).toEqual([2]);
    expect((settled[0] as PromiseRejectedResult).reason).toBeInstanceOf(InvariantViolation);
    expect(String((settled[0] as PromiseRejectedResult).reason)).toMatch(/not conserved/);
    expect(settled[1]!.status === "fulfilled" && settled[1].value.kind).toBe("applied");
    expect(await heldAndAvailable(accountId)).toEqual({ held: 20n, available: 80n });
    expect(await rows(`select 1 from operations where account_id = $1 and idempotency_key = 'k-leak'`, [accountId])).toEqual([]);
    expect(await probe.store.reconcile(accountId)).toEqual([]);
  });

  it("two servers, one idempotency key, a new account: several calls each at once make exactly one grant", async () => {
    const accountId = newAccount("two-servers");
    const otherPool = createPool({ url: TEST_DATABASE_URL, max: 2, onIdleError: () => {} });
    extraPools.push(otherPool);
    const one = makeStore({ writeConcurrency: 2, maxBatch: 64 });
    const two = makeStore({ writeConcurrency: 2, maxBatch: 64 }, otherPool);
    // The same AdjustCredits call (same key, same request), retried three times against each server at once.
    const call = () => ({ ...adjustCommand(accountId, 250n), idempotency: claim("k-grant", `grant ${accountId} 250`, "AdjustCredits") });
    const now = new Date();
    const outcomes = await Promise.all([0, 1, 2].flatMap(() => [one.store.execute(call(), now), two.store.execute(call(), now)]));
    expect(outcomes.filter((o) => o.kind === "applied")).toHaveLength(1);
    expect(outcomes.filter((o) => o.kind === "replayed")).toHaveLength(5);
    const responses = outcomes.map((o) => (o.kind === "failed" ? "" : Buffer.from(o.response!).toString("hex")));
    expect(new Set(responses).size).toBe(1);
    expect(await rows(`select 1 from buckets where account_id = $1`, [accountId])).toHaveLength(1);
    expect(await heldAndAvailable(accountId)).toEqual({ held: 0n, available: 250n });
    expect(await one.store.reconcile(accountId)).toEqual([]);
  });

  it("a domain failure in a batch changes nothing; the successes on the same account apply, each entry carrying its own caller and key", async () => {
    const accountId = newAccount("mixed");
    await fund([accountId], 100n);
    const probe = makeStore({ writeConcurrency: 1, maxBatch: 64 });
    const now = new Date();
    const cmds = [
      reserveCommand(accountId, 200n, { key: "k0", caller: "svc-0" }), // more than there is: fails
      reserveCommand(accountId, 60n, { key: "k1", caller: "svc-a" }), // applied
      reserveCommand(accountId, 60n, { key: "k2", caller: "svc-b" }), // only 40 left: fails
      reserveCommand(accountId, 30n, { key: "k3", caller: "svc-c" }), // applied
    ];
    const outcomes = await Promise.all(cmds.map((c) => probe.store.execute(c, now)));
    expect(sizes(probe)).toEqual([4]);
    expect(outcomes.map((o) => o.kind)).toEqual(["failed", "applied", "failed", "applied"]);
    expect(outcomes.map(failureOf)).toEqual(["INSUFFICIENT_CREDITS", null, "INSUFFICIENT_CREDITS", null]);
    const failure = outcomes[2]!;
    if (failure.kind === "failed") expect(failure.failure.metadata).toEqual({ requested: "60", available: "40" });

    const entries = await rows<{ kind: string; amount: string; idempotency_key: string | null; caller: string; reservation_id: string | null }>(
      `select kind, amount::text as amount, idempotency_key, caller, reservation_id::text as reservation_id
         from ledger_entries where account_id = $1 order by entry_id`,
      [accountId],
    );
    expect(entries.slice(1)).toEqual([
      { kind: "HOLD", amount: "60", idempotency_key: "k1", caller: "svc-a", reservation_id: cmds[1]!.reservationId },
      { kind: "HOLD", amount: "30", idempotency_key: "k3", caller: "svc-c", reservation_id: cmds[3]!.reservationId },
    ]);
    expect(entries[0]).toMatchObject({ kind: "ADJUST", caller: "funder" });
    const ops = await rows<{ idempotency_key: string }>(`select idempotency_key from operations where account_id = $1 and idempotency_key like 'k_' order by 1`, [accountId]);
    expect(ops.map((o) => o.idempotency_key)).toEqual(["k1", "k3"]); // failed calls leave no record: a retry runs again
    const reservations = await rows<{ reservation_id: string }>(`select reservation_id from reservations where account_id = $1`, [accountId]);
    expect(reservations.map((r) => r.reservation_id).sort()).toEqual([cmds[1]!.reservationId, cmds[3]!.reservationId].sort());
    expect(await heldAndAvailable(accountId)).toEqual({ held: 90n, available: 10n });
    expect(await probe.store.reconcile(accountId)).toEqual([]);
  });

  it("Commit and Release by reservation id on a second store (empty locator: the miss path); an unknown id is RESERVATION_NOT_FOUND", async () => {
    const accountId = newAccount("locate");
    await fund([accountId], 200n);
    const first = makeStore({ writeConcurrency: 2, maxBatch: 64 });
    const now = new Date();
    const toCommit = reserveCommand(accountId, 50n);
    const toRelease = reserveCommand(accountId, 40n);
    const toBoth = reserveCommand(accountId, 20n);
    expect((await Promise.all([toCommit, toRelease, toBoth].map((c) => first.store.execute(c, now)))).map((o) => o.kind)).toEqual([
      "applied",
      "applied",
      "applied",
    ]);

    // Another "server": its own pool and store on the same database; it has never seen these reservations.
    const otherPool = createPool({ url: TEST_DATABASE_URL, max: 2, onIdleError: () => {} });
    extraPools.push(otherPool);
    const second = makeStore({ writeConcurrency: 2, maxBatch: 64 }, otherPool);
    const [committed, released] = await Promise.all([
      second.store.execute(settleCommand(toCommit.reservationId, { commit: 30n }), new Date()),
      second.store.execute(settleCommand(toRelease.reservationId, { release: true }), new Date()),
    ]);
    expect(committed.kind).toBe("applied");
    expect(released.kind).toBe("applied");
    const states = await rows<{ reservation_id: string; state: string; captured_amount: string; released_amount: string }>(
      `select reservation_id::text as reservation_id, state, captured_amount::text as captured_amount, released_amount::text as released_amount
         from reservations where account_id = $1`,
      [accountId],
    );
    const byId = new Map(states.map((s) => [s.reservation_id, s]));
    expect(byId.get(toCommit.reservationId)).toMatchObject({ state: "COMMITTED", captured_amount: "30", released_amount: "20" });
    expect(byId.get(toRelease.reservationId)).toMatchObject({ state: "RELEASED", captured_amount: "0", released_amount: "40" });

    // Commit then Release of one hold in ONE batch (the first store knows the hold, so both arrive in
    // one turn, in order): the hold is named twice in one load, and the second sees the first's result.
    const batchesBefore = first.batches.length;
    const both = await Promise.all([
      first.store.execute(settleCommand(toBoth.reservationId, { commit: 20n }), new Date()),
      first.store.execute(settleCommand(toBoth.reservationId, { release: true }), new Date()),
    ]);
    expect(sizes(first).slice(batchesBefore)).toEqual([2]);
    expect(both.map((o) => o.kind)).toEqual(["applied", "failed"]);
    expect(failureOf(both[1]!)).toBe("RESERVATION_NOT_HELD");

    // A reservation nobody made: refused before anything runs.
    const probe = { runs: 0 };
    const missing = await second.store.execute(settleCommand(randomUUID(), { commit: 1n }, probe), new Date());
    expect(failureOf(missing)).toBe("RESERVATION_NOT_FOUND");
    expect(probe.runs).toBe(0);

    // 200 − 30 − 20 captured; nothing held.
    expect(await heldAndAvailable(accountId)).toEqual({ held: 0n, available: 150n });
    expect(await second.store.reconcile(accountId)).toEqual([]);
  });

  it("staggered: 32 Reserves at once split into two transactions, the second loading while the first runs; every account exact", async () => {
    const accounts = Array.from({ length: 29 }, () => newAccount("stagger"));
    await fund(accounts, 100n);
    const probe = makeStore({ writeConcurrency: 2, maxBatch: 64, staggerFrom: 8 });
    const now = new Date();
    // The last account has four commands: the split puts one in the first transaction and three in
    // the second, which waits for the first's lock on it.
    const cmds = [...accounts.map((id) => reserveCommand(id, 10n, { probe })), ...[1, 2, 3].map(() => reserveCommand(accounts[28]!, 10n, { probe }))];
    const outcomes = await Promise.all(cmds.map((c) => probe.store.execute(c, now)));
    expect(outcomes.map((o) => o.kind)).toEqual(cmds.map(() => "applied"));
    expect(sizes(probe)).toEqual([16, 16]);
    // The second began before any command of the first had run: the first had loaded and not yet finished.
    expect(probe.batches[1]!.runsBefore).toBe(0);
    for (const id of accounts.slice(0, 28)) expect(await heldAndAvailable(id)).toEqual({ held: 10n, available: 90n });
    expect(await heldAndAvailable(accounts[28]!)).toEqual({ held: 40n, available: 60n });
    for (const id of accounts) expect(await probe.store.reconcile(id)).toEqual([]);
  });

  it("staggered, one hot account whose balance allows exactly N of 40 Reserves: two overlapping transactions, the first N in arrival order succeed", async () => {
    const accountId = newAccount("hot-stagger");
    const n = 27;
    await fund([accountId], BigInt(n) * 10n + 5n);
    const probe = makeStore({ writeConcurrency: 2, maxBatch: 64, staggerFrom: 8 });
    const now = new Date();
    const cmds = Array.from({ length: 40 }, () => reserveCommand(accountId, 10n, { probe }));
    const outcomes = await Promise.all(cmds.map((c) => probe.store.execute(c, now)));
    expect(sizes(probe)).toEqual([20, 20]);
    expect(probe.batches[1]!.runsBefore).toBe(0);
    expect(outcomes.map((o) => o.kind)).toEqual(cmds.map((_, i) => (i < n ? "applied" : "failed")));
    expect(await heldAndAvailable(accountId)).toEqual({ held: BigInt(n) * 10n, available: 5n });
    expect(await rows(`select 1 from ledger_entries where account_id = $1 and kind = 'HOLD'`, [accountId])).toHaveLength(n);
    expect(await probe.store.reconcile(accountId)).toEqual([]);
  });

  it("a hot account: 50 concurrent Reserves with writeConcurrency 2 run batch after batch, never two batches at once", async () => {
    const accountId = newAccount("hot");
    await fund([accountId], 500n);
    const probe = makeStore({ writeConcurrency: 2, maxBatch: 8 });
    const now = new Date();
    const cmds = Array.from({ length: 50 }, () => reserveCommand(accountId, 10n, { probe }));
    const outcomes = await Promise.all(cmds.map((c) => probe.store.execute(c, now)));
    expect(outcomes.map((o) => o.kind)).toEqual(cmds.map(() => "applied"));
    expect(sum(sizes(probe))).toBe(50);
    expect(sizes(probe)).toEqual([8, 8, 8, 8, 8, 8, 2]);
    // Each batch started only after every command of the batches before it had run: no overlap.
    let before = 0;
    for (const batch of probe.batches) {
      expect(batch.runsBefore).toBe(before);
      before += batch.size;
    }
    expect(await heldAndAvailable(accountId)).toEqual({ held: 500n, available: 0n });
    expect(await probe.store.reconcile(accountId)).toEqual([]);
  });

  it("a hot account whose balance allows exactly N of 50 Reserves: exactly the first N in arrival order succeed", async () => {
    const accountId = newAccount("hot-n");
    const n = 17;
    await fund([accountId], BigInt(n) * 10n + 5n);
    const probe = makeStore({ writeConcurrency: 2, maxBatch: 8 });
    const now = new Date();
    const cmds = Array.from({ length: 50 }, () => reserveCommand(accountId, 10n, { probe }));
    const outcomes = await Promise.all(cmds.map((c) => probe.store.execute(c, now)));
    expect(outcomes.map((o) => o.kind)).toEqual(cmds.map((_, i) => (i < n ? "applied" : "failed")));
    expect(new Set(outcomes.slice(n).map(failureOf))).toEqual(new Set(["INSUFFICIENT_CREDITS"]));
    expect(sum(sizes(probe))).toBe(50);
    const holds = await rows(`select 1 from ledger_entries where account_id = $1 and kind = 'HOLD'`, [accountId]);
    expect(holds).toHaveLength(n);
    expect(await heldAndAvailable(accountId)).toEqual({ held: BigInt(n) * 10n, available: 5n });
    expect(await probe.store.reconcile(accountId)).toEqual([]);
  });

  it("batchAcrossAccounts false: a batch never takes two accounts, yet one account's commands still group", async () => {
    const accounts = Array.from({ length: 6 }, () => newAccount("single"));
    await fund(accounts, 100n);
    const probe = makeStore({ writeConcurrency: 1, maxBatch: 64, batchAcrossAccounts: false });
    const now = new Date();
    // Three commands per account, interleaved in arrival order.
    const cmds = [0, 1, 2].flatMap(() => accounts.map((id) => reserveCommand(id, 5n, { probe })));
    const outcomes = await Promise.all(cmds.map((c) => probe.store.execute(c, now)));
    expect(outcomes.map((o) => o.kind)).toEqual(cmds.map(() => "applied"));
    expect(sizes(probe)).toEqual(accounts.map(() => 3));
    for (const id of accounts) expect(await heldAndAvailable(id)).toEqual({ held: 15n, available: 85n });
  });

  it("concurrent readBook calls return each caller its own book, and null for an unknown account", async () => {
    const a = newAccount("read");
    const b = newAccount("read");
    await fund([a], 100n);
    await fund([b], 200n);
    expect((await funder.execute(reserveCommand(a, 30n), new Date())).kind).toBe("applied");
    const store = makeStore({ writeConcurrency: 1, maxBatch: 64 }).store;
    const now = new Date();
    const [a1, a2, b1, none, a3] = (
      await Promise.all([
        store.readBook(a, now),
        store.readBook(a, now),
        store.readBook(b, now),
        store.readBook(newAccount("nobody"), now),
        store.readBook(a, now),
      ])
    ).map((read) => read?.book ?? null);
    expect(none).toBeNull();
    expect([a1?.accountId, a2?.accountId, b1?.accountId, a3?.accountId]).toEqual([a, a, b, a]);
    expect(a1).not.toBe(a2);
    expect(b1!.available(now)).toBe(200n);
    expect(b1!.held()).toBe(0n);

    // Mutating one caller's book (as a caller applying due work would) leaves the others' alone.
    const bucket = a1!.allBuckets()[0]!;
    const twin = a2!.allBuckets().find((x) => x.id === bucket.id)!;
    expect(twin).not.toBe(bucket);
    bucket.remaining = 0n;
    bucket.held = 0n;
    const extra = reserveHold(a3!, { reservationId: randomUUID(), amount: 70n, ttlMs: HOUR, metadata: {} }, now);
    expect(extra.ok).toBe(true);
    expect(a3!.available(now)).toBe(0n);
    expect(a2!.available(now)).toBe(70n);
    expect(a2!.held()).toBe(30n);
    expect(a2!.entries).toEqual([]);
    // And nothing of it reached the database.
    expect(await heldAndAvailable(a)).toEqual({ held: 30n, available: 70n });
  });
});

describe("pg.ts: pipeline and inTransaction", () => {
  /** One connection only: a connection that were wrongly returned to the pool would be the next one used. */
  let single: pg.Pool;
  beforeAll(() => {
    single = createPool({ url: TEST_DATABASE_URL, max: 1, onIdleError: () => {} });
    extraPools.push(single);
  });

  const backendPid = async () => Number((await queryOn(single)(`select pg_backend_pid() as pid`))[0]!["pid"]);

  it("a pipeline whose second statement fails rejects with that error, and runs nothing after it", async () => {
    const client = await single.connect();
    let broken: Error | undefined;
    try {
      await expect(
        pipeline(client, [
          { sql: "create temporary table gc_pipeline_probe (n int)" },
          { sql: "select 1 / ?::int as v", params: [0] },
          { sql: "insert into gc_pipeline_probe values (1)" },
        ]),
      ).rejects.toMatchObject({ code: "22012" }); // division_by_zero
      // The connection is still usable; the statements after the failure never ran (implicit transaction rolled back).
      expect(await pipeline(client, [{ sql: "select to_regclass('pg_temp.gc_pipeline_probe')::text as t" }])).toEqual([[{ t: null }]]);
      // A successful pipeline: each statement's rows, in order.
      const results = await pipeline(client, [{ sql: "select ?::int as a", params: [1] }, { sql: "select 2 as b union all select 3" }, { sql: "set local work_mem = '8MB'" }]);
      expect(results).toEqual([[{ a: 1 }], [{ b: 2 }, { b: 3 }], []]);
    } catch (err) {
      broken = err as Error;
      throw err;
    } finally {
      client.release(broken ?? true); // a test connection: not handed on
    }
  });

  it("inTransaction: a failed pipeline rolls back, discards its connection, and the pool serves the next queries", async () => {
    const pidBefore = await backendPid();
    await expect(
      inTransaction(single, async (tx) => {
        const [[row]] = (await tx.run([{ sql: "select pg_backend_pid() as pid" }])) as [[{ pid: number }]];
        expect(row.pid).toBe(pidBefore);
        await tx.run([
          { sql: "create temporary table gc_tx_probe (n int)" },
          { sql: "select 1 / ?::int as v", params: [0] },
          // Parsed (by name) after the failure: Postgres skips it, so it is NOT prepared on that connection.
          { sql: "select ?::int + 1 as v", params: [1], name: "gc_after_failure" },
        ]);
      }),
    ).rejects.toMatchObject({ code: "22012" });
    const pidAfter = await backendPid();
    expect(pidAfter).not.toBe(pidBefore); // the broken connection was discarded
    expect(single.totalCount).toBe(1);
    // Rolled back: the temp table does not exist (it would have died with the connection anyway).
    expect(await queryOn(single)("select to_regclass('pg_temp.gc_tx_probe')::text as t")).toEqual([{ t: null }]);
    // The named statement whose parse was skipped runs fine afterwards, through a pipeline and a plain query.
    expect(await inTransaction(single, (tx) => tx.run([{ sql: "select ?::int + 1 as v", params: [41], name: "gc_after_failure" }]))).toEqual([[{ v: 42 }]]);
    expect(await queryOn(single)("select ?::int + 1 as v", [1], "gc_after_failure")).toEqual([{ v: 2 }]);
  });

  it("inTransaction: a named statement that failed to run runs again successfully afterwards", async () => {
    const named = { sql: "select 10 / ?::int as v", name: "gc_divide" };
    await expect(inTransaction(single, (tx) => tx.run([{ ...named, params: [0] }]))).rejects.toMatchObject({ code: "22012" });
    expect(await inTransaction(single, (tx) => tx.run([{ ...named, params: [2] }]))).toEqual([[{ v: 5 }]]);
    // And on a connection that kept it prepared: twice more, the second time without a Parse.
    expect(await inTransaction(single, (tx) => tx.run([{ ...named, params: [5] }]))).toEqual([[{ v: 2 }]]);
    expect(await inTransaction(single, (tx) => tx.query(named.sql, [10], named.name))).toEqual([{ v: 1 }]);
    // A failed COMMIT round trip (deferred work fails) is an error too, and the pool recovers.
    await expect(inTransaction(single, (tx) => tx.commit([{ sql: "select 1 / 0" }]))).rejects.toMatchObject({ code: "22012" });
    expect(await inTransaction(single, (tx) => tx.commit([{ ...named, params: [1] }]))).toEqual([[{ v: 10 }]]);
  });

  it("inTransaction: a connection that dies between two round trips fails the transaction, not the process", async () => {
    const outcome = await inTransaction(pool, async (tx) => {
      const [mine] = await tx.run([{ sql: "select pg_backend_pid() as pid" }]);
      await pool.query("select pg_terminate_backend($1)", [mine![0]!["pid"]]);
      // The connection's 'error' arrives while no statement is on it.
      await new Promise((r) => setTimeout(r, 200));
      return tx.run([{ sql: "select 1" }]);
    }).then(
      () => "committed",
      (err: Error) => err.message,
    );
    expect(outcome).not.toBe("committed");
    expect((await pool.query("select 1 as one")).rows).toEqual([{ one: 1 }]);
  });

  it("inTransaction commits what work left open, and rolls back when work throws", async () => {
    const id = newAccount("tx");
    await inTransaction(pool, (tx) => tx.run([{ sql: "insert into accounts (account_id, created_at) values (?, now())", params: [id] }]));
    expect(await rows(`select account_id from accounts where account_id = $1`, [id])).toEqual([{ account_id: id }]);
    const other = newAccount("tx");
    const oops = new Error("work failed");
    await expect(
      inTransaction(pool, async (tx) => {
        await tx.run([{ sql: "insert into accounts (account_id, created_at) values (?, now())", params: [other] }]);
        throw oops;
      }),
    ).rejects.toBe(oops);
    expect(await rows(`select account_id from accounts where account_id = $1`, [other])).toEqual([]);
  });
});

describe("accounts a batch creates", () => {
  it("do not exist for the commands of the batch that arrived before the one creating them", async () => {
    // Arrival order: Reserve on X (createAccount false), then AdjustCredits creating X. Run one after
    // the other — or each alone — the Reserve is ACCOUNT_NOT_FOUND. The batch inserts the accounts
    // its commands may create before running them, so it must hide each one until its first
    // creating command has run (regression: the Reserve used to fail INSUFFICIENT_CREDITS, and an
    // earlier AdvanceTestClock succeeded on an account that did not exist yet).
    const accountId = newAccount("created-later");
    const probe = makeStore({ writeConcurrency: 1, maxBatch: 64 });
    const now = new Date();
    const [reserved, granted] = await Promise.all([
      probe.store.execute(reserveCommand(accountId, 10n), now),
      probe.store.execute(adjustCommand(accountId, 100n), now),
    ]);
    expect(sizes(probe)).toEqual([2]);
    expect(granted.kind).toBe("applied");

    const clockAccount = newAccount("created-later");
    const step: AccountCommand = {
      target: { accountId: clockAccount },
      createAccount: false,
      idempotency: claim(`clock-${randomUUID()}`, "advance 1h", "AdvanceTestClock"),
      caller: "gc-test",
      clockStepMs: HOUR,
      action: { kind: "AdvanceTestClock" },
    };
    const [stepped] = await Promise.all([probe.store.execute(step, now), probe.store.execute(adjustCommand(clockAccount, 100n), now)]);
    const [clock] = await rows<{ clock_offset_ms: string }>(`select clock_offset_ms::text as clock_offset_ms from accounts where account_id = $1`, [clockAccount]);

    expect({ reserve: failureOf(reserved), advanceTestClock: failureOf(stepped), clockOffsetMs: clock?.clock_offset_ms }).toEqual({
      reserve: "ACCOUNT_NOT_FOUND",
      advanceTestClock: "ACCOUNT_NOT_FOUND",
      clockOffsetMs: "0",
    });
  });
});

describe("group commit: the per-account change sequence", () => {
  const sequenceOf = async (accountId: string) => BigInt((await rows<{ sequence: string }>(`select sequence::text from accounts where account_id = $1`, [accountId]))[0]!.sequence);
  const sequenceIn = (outcome: { kind: string; sequence?: bigint }) => (outcome.kind === "applied" ? outcome.sequence : null);

  it("commands of one account in one batch get consecutive sequences in their order; refusals and replays take none", async () => {
    const a = newAccount("seq");
    const b = newAccount("seq");
    await fund([a, b], 100n);
    const startA = await sequenceOf(a);
    const startB = await sequenceOf(b);
    expect([startA, startB]).toEqual([1n, 1n]);
    const probe = makeStore({ writeConcurrency: 1, maxBatch: 64 });
    const now = new Date();
    const commands = [
      reserveCommand(a, 10n, { key: "seq-a1", request: "a1" }),
      reserveCommand(b, 10n),
      reserveCommand(a, 1000n), // refused: not enough credits
      reserveCommand(a, 10n, { key: "seq-a1", request: "a1" }), // replays the first
      reserveCommand(a, 20n),
      reserveCommand(b, 20n),
      reserveCommand(a, 30n),
    ];
    const outcomes = await Promise.all(commands.map((c) => probe.store.execute(c, now)));
    expect(sizes(probe)).toEqual([commands.length]); // one batch
    expect(outcomes.map((o) => o.kind)).toEqual(["applied", "applied", "failed", "replayed", "applied", "applied", "applied"]);
    expect(outcomes.map(sequenceIn)).toEqual([2n, 2n, null, null, 3n, 3n, 4n]);
    expect(await sequenceOf(a)).toBe(4n);
    expect(await sequenceOf(b)).toBe(3n);

    // The next batch continues from what the last one persisted.
    const next = await probe.store.execute(settleCommand(commands[0]!.reservationId, { release: true }), new Date());
    expect(sequenceIn(next)).toBe(5n);
    expect(await sequenceOf(a)).toBe(5n);
    // Due work alone (nothing due here) changes nothing and takes no number.
    expect(await probe.store.applyDueIfUnlocked(a, new Date())).toBe(false);
    expect(await sequenceOf(a)).toBe(5n);
  });
});
