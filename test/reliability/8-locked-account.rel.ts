import { randomUUID } from "node:crypto";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { conservation, doubleEffects, lostAcks, reconcileAll, reservationLedger } from "./support/checks.js";
import { fundAccounts, newAttemptLog, rawClients, runHoldLoad, untilAnswered } from "./support/load.js";
import { byScale, Figures, ms, percentile } from "./support/report.js";
import { sleep, Stack } from "./support/stack.js";

/**
 * Scenario 8 — an account row locked elsewhere. Another connection holds `select … for update` on
 * one account's row (a long transaction, a psql session left open) while concurrent clients write
 * to other accounts (Reserve → Commit | Release) and Reserves on the locked account keep arriving,
 * more of them than the server has write slots. The others must not wait for that lock; once it
 * goes, every Reserve on the locked account completes, each held once and in full.
 */
const HOLD_MS = byScale(15_000, 30_000);
/** Closed-loop clients on the other accounts. */
const WORKERS = 4;
/** The same load without the lock first, for comparison (after 2 s of warm-up). */
const BASELINE_MS = 5000;
/** A new Reserve on the locked account this often while it is locked (each waits for the lock). */
const LOCKED_EVERY_MS = 500;
const FUNDED = 1_000_000_000n;
const stack = new Stack();
const figures = new Figures("8 locked account");

beforeAll(async () => {
  await stack.start(1, { DB_POOL_MAX: "10" });
});
afterAll(async () => {
  await stack.stop();
});

/** A transaction of its own holding the account's row lock until `release()`. */
async function holdRow(accountId: string): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: stack.databaseUrl, application_name: "lock-holder" });
  await client.connect();
  await client.query("begin");
  const { rowCount } = await client.query(`select 1 from accounts where account_id = $1 for update`, [accountId]);
  expect(rowCount).toBe(1);
  return {
    release: async () => {
      await client.query("commit");
      await client.end();
    },
  };
}

describe("one account's row locked elsewhere for a while", () => {
  it(`keeps the other accounts' writes fast while the row is locked for ${HOLD_MS / 1000} s, and completes the locked account's calls after`, async () => {
    const server = stack.servers[0]!;
    const clients = rawClients(server.url);
    const accounts = await fundAccounts(clients, "busy", 16, FUNDED);
    const [locked] = await fundAccounts(clients, "locked", 1, FUNDED);
    let stopping = false;
    const load = runHoldLoad({ clients: () => clients, accounts, workers: WORKERS, abandonShare: 0, settleTtlMs: 60_000, stop: () => stopping });
    await sleep(2000); // warm-up
    const baselineAt = performance.now();
    await sleep(BASELINE_MS);

    const holder = await holdRow(locked!);
    const lockedAt = performance.now();
    // Reserves on the locked account, each with a deadline past the hold: they wait for the lock.
    const waiting = rawClients(server.url, HOLD_MS + 30_000);
    const lockedLog = newAttemptLog();
    const lockedCalls: { key: string; amount: bigint; answered: Promise<{ ok: boolean; at: number; reservationId: string }> }[] = [];
    while (performance.now() < lockedAt + HOLD_MS) {
      const key = `locked-${randomUUID()}`;
      const amount = BigInt(1 + lockedCalls.length);
      const request = { accountId: locked!, idempotencyKey: key, cost: { case: "amount" as const, value: amount }, ttl: durationFromMs(600_000) };
      const answered = untilAnswered(lockedLog, () => waiting.credit.reserve(request), HOLD_MS + 60_000).then((r) => ({
        ok: r.ok,
        at: performance.now(),
        reservationId: r.ok ? r.value.reservation!.reservationId : "",
      }));
      lockedCalls.push({ key, amount, answered });
      await sleep(LOCKED_EVERY_MS);
    }
    const unlockedAt = performance.now(); // (no Reserve on the locked account can be answered before the COMMIT is sent)
    await holder.release();
    const answers = await Promise.all(lockedCalls.map((c) => c.answered));
    const lastAnsweredMs = Math.max(...answers.map((a) => a.at)) - unlockedAt;
    await sleep(1000);
    stopping = true;
    const result = await load;

    const before = result.log.latencies.filter((l) => l.at >= baselineAt && l.at < lockedAt).map((l) => l.ms);
    const during = result.log.latencies.filter((l) => l.at >= lockedAt && l.at < unlockedAt).map((l) => l.ms);
    const p99 = percentile(during, 99);
    const p99Before = percentile(before, 99);
    // 100 ms is the target; on a machine whose own tail is already slower without any lock (the
    // load generator shares its cores), the lock may add at most 50 ms to the tail it had just before.
    const fastEnough = p99 < 100 || p99 <= p99Before + 50;
    const answeredEarly = answers.filter((a) => a.at < unlockedAt).length;
    const refused = answers.filter((a) => !a.ok).length;
    const ledger = await reservationLedger(stack.db, [locked!]);
    const lockedProblems: string[] = [];
    for (const [i, call] of lockedCalls.entries()) {
      const row = ledger.get(answers[i]!.reservationId);
      if (!row) lockedProblems.push(`${call.key}: no reservation`);
      else if (row.state !== "HELD" || row.holds !== "1" || row.held_amount !== String(call.amount) || row.hold_sum !== String(call.amount)) {
        lockedProblems.push(`${call.key}: ${row.state}, ${row.holds} HOLD entries summing to ${row.hold_sum}, held ${row.held_amount} of ${call.amount}`);
      }
    }
    if (ledger.size !== lockedCalls.length) lockedProblems.push(`${ledger.size} reservations for ${lockedCalls.length} Reserves`);
    const { balance } = await clients.credit.getBalance({ accountId: locked! });
    const heldOnLocked = lockedCalls.reduce((sum, c) => sum + c.amount, 0n);
    if (balance!.held !== heldOnLocked || balance!.available !== FUNDED - heldOnLocked) {
      lockedProblems.push(`balance held ${balance!.held} / available ${balance!.available}, expected ${heldOnLocked} / ${FUNDED - heldOnLocked}`);
    }
    const busyLedger = await reservationLedger(stack.db, accounts);
    const lost = lostAcks(busyLedger, result.acks);
    const doubles = doubleEffects(busyLedger, result.acks);
    const conserved = await conservation(stack.db, clients, new Map(accounts.map((a) => [a, FUNDED])));
    const reconciled = await reconcileAll(clients, [...accounts, locked!]);

    figures.info("row lock held / Reserves sent to the locked account meanwhile", `${ms(unlockedAt - lockedAt)} / ${lockedCalls.length}`);
    figures.info(`other accounts' calls: p99 in the ${BASELINE_MS / 1000} s before the lock`, `${ms(p99Before)} (p50 ${ms(percentile(before, 50))}, n=${before.length})`);
    figures.check("other accounts' calls: p99 while the row is locked", `${ms(p99)} (p50 ${ms(percentile(during, 50))}, max ${ms(Math.max(...during))}, n=${during.length})`, "< 100 ms (or ≤ before + 50 ms)", fastEnough);
    figures.check("locked account's Reserves answered before the lock went", answeredEarly, "0", answeredEarly === 0);
    figures.info("lock released → last locked-account Reserve answered", ms(lastAnsweredMs));
    figures.check("locked account's Reserves refused / held wrongly", `${refused} / ${lockedProblems.length}`, "0 / 0", refused === 0 && lockedProblems.length === 0);
    figures.info("locked account's attempts retried", lockedLog.failures.map((f) => f.code).join(", ") || "none");
    figures.check("other accounts: acknowledged operations lost / double effects", `${lost.count} / ${doubles.count}`, "0 / 0", lost.count + doubles.count === 0);
    figures.check("conservation differences", conserved.count, "0", conserved.count === 0);
    figures.check("reconcile differences", reconciled.differences, "0", reconciled.differences === 0);

    expect(during.length).toBeGreaterThan(100);
    expect(fastEnough, `p99 ${p99} ms while locked, ${p99Before} ms before`).toBe(true);
    expect(answeredEarly).toBe(0);
    expect(refused).toBe(0);
    expect(lockedProblems).toEqual([]);
    expect(lost.examples).toEqual([]);
    expect(doubles.examples).toEqual([]);
    expect(conserved.examples).toEqual([]);
    expect(reconciled.differences).toBe(0);
    expect(result.refusals).toEqual([]);
    expect(server.crashes).toBe(0);
  });
});
