import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { conservation, doubleEffects, heldCount, lostAcks, reconcileAll, reservationLedger } from "./support/checks.js";
import { fundAccounts, newAttemptLog, rawClients, runHoldLoad } from "./support/load.js";
import { replayAll } from "./support/replay.js";
import { byScale, Figures, ms, percentile } from "./support/report.js";
import { sleep, Stack } from "./support/stack.js";

/**
 * Scenario 2 — Redis loss. Under load: FLUSHALL, then kill -9 of Redis; the load keeps going on
 * the Postgres backstop. Then every acknowledged call is replayed (same key, same request) with
 * Redis down, again after Redis comes back empty, and once more with the fast path warm again.
 */
const PHASE_MS = byScale(3000, 10_000);
const FUNDED = 1_000_000_000n;
const stack = new Stack();
const figures = new Figures("2 redis loss");

beforeAll(async () => {
  await stack.start(1, { HOLD_DEFAULT_TTL_SECONDS: "2", SWEEPER_INTERVAL_MS: "200" });
});
afterAll(async () => {
  await stack.stop();
});

async function ledgerRows(accounts: readonly string[]): Promise<string> {
  const { rows } = await stack.db.query<{ n: string }>(
    `select (select count(*) from ledger_entries where account_id = any($1)) || '/' || (select count(*) from reservations where account_id = any($1)) || '/' || (select count(*) from operations where account_id = any($1)) as n`,
    [accounts],
  );
  return rows[0]!.n;
}

describe("Redis flushed and killed under load", () => {
  it("applies nothing twice and replays every key with the original bytes", async () => {
    const server = stack.servers[0]!;
    const clients = rawClients(server.url);
    const accounts = await fundAccounts(clients, "redis", 8, FUNDED);
    let stopping = false;
    const load = runHoldLoad({ clients: () => clients, accounts, workers: 12, abandonShare: 0.15, settleTtlMs: 60_000, stop: () => stopping });

    await sleep(PHASE_MS);
    const keysBefore = stack.redis.dbSize();
    stack.redis.flushAll();
    const flushedAt = performance.now();
    await sleep(PHASE_MS);
    await stack.redis.kill();
    const downAt = performance.now();
    await sleep(PHASE_MS);
    stopping = true;
    const result = await load;
    const loadEnd = performance.now();

    const upLatencies = result.log.latencies.filter((l) => l.at < flushedAt).map((l) => l.ms);
    const downLatencies = result.log.latencies.filter((l) => l.at >= downAt + 100 && l.at < loadEnd).map((l) => l.ms);
    await sleep(3500); // abandoned holds expire first (TTL 2 s + sweeper), so only replays could change rows below
    const before = await ledgerRows(accounts);

    const log = newAttemptLog();
    const whileDown = await replayAll(clients, log, result.replayables);
    await stack.redis.start();
    await sleep(2500); // ioredis reconnects with back-off (≤ 2 s)
    const afterRestart = await replayAll(clients, log, result.replayables);
    const warm = await replayAll(clients, log, result.replayables);
    const redisKeysAfter = stack.redis.dbSize();
    const after = await ledgerRows(accounts);

    const ledger = await reservationLedger(stack.db, accounts);
    const lost = lostAcks(ledger, result.acks);
    const doubles = doubleEffects(ledger, result.acks);
    const held = await heldCount(stack.db, accounts);
    const conserved = await conservation(stack.db, clients, new Map(accounts.map((a) => [a, FUNDED])));
    const reconciled = await reconcileAll(clients, accounts);
    const failuresByCode: Record<string, number> = {};
    for (const f of [...result.log.failures, ...log.failures]) failuresByCode[f.code] = (failuresByCode[f.code] ?? 0) + 1;

    figures.info("acknowledged calls / replayed (×3)", `${result.acks.length} / ${result.replayables.length * 3}`);
    figures.info("redis keys before FLUSHALL / after replays", `${keysBefore} / ${redisKeysAfter}`);
    figures.info("failed attempts (by code)", JSON.stringify(failuresByCode));
    figures.info("p99 with Redis up (calls before FLUSHALL)", `${ms(percentile(upLatencies, 99))} (n=${upLatencies.length})`);
    figures.check("p99 while Redis is down", `${ms(percentile(downLatencies, 99))} (n=${downLatencies.length})`, "< 1000 ms", percentile(downLatencies, 99) < 1000);
    figures.check("replayed responses ≠ original bytes (Redis down / restarted empty / warm)", `${whileDown.differing} / ${afterRestart.differing} / ${warm.differing}`, "0 / 0 / 0", whileDown.differing + afterRestart.differing + warm.differing === 0);
    figures.check("replays refused", whileDown.refused + afterRestart.refused + warm.refused, "0", whileDown.refused + afterRestart.refused + warm.refused === 0);
    figures.check("ledger/reservations/operations rows before → after replays", `${before} → ${after}`, "unchanged", before === after);
    figures.check("double effects", doubles.count, "0", doubles.count === 0);
    figures.check("acknowledged operations lost", lost.count, "0", lost.count === 0);
    figures.check("holds still HELD after TTL + sweep", held, "0", held === 0);
    figures.check("conservation differences", conserved.count, "0", conserved.count === 0);
    figures.check("reconcile differences", reconciled.differences, "0", reconciled.differences === 0);

    expect([...whileDown.examples, ...afterRestart.examples, ...warm.examples]).toEqual([]);
    expect(after).toBe(before);
    expect(doubles.examples).toEqual([]);
    expect(lost.examples).toEqual([]);
    expect(held).toBe(0);
    expect(conserved.examples).toEqual([]);
    expect(reconciled.differences).toBe(0);
    expect(result.refusals).toEqual([]);
    expect(percentile(downLatencies, 99)).toBeLessThan(1000);
    expect(downLatencies.length).toBeGreaterThan(10);
    expect(server.crashes).toBe(0);
  });
});
