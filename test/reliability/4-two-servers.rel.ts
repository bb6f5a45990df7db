import { randomUUID } from "node:crypto";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createCreditClients, type CreditClients, LimitMode, ReleaseReason, ReservationState, SpendPeriod } from "../../src/client/index.js";
import { reconcileAll, reservationLedger } from "./support/checks.js";
import { reasonOf } from "./support/load.js";
import { byScale, Figures } from "./support/report.js";
import { Stack } from "./support/stack.js";
import { StreamRecorder } from "../support/watch.js";

/**
 * Scenario 4 — two server processes, one database. Rounds of 200 concurrent Reserves of `a` on a
 * balance `B`, split across both servers: exactly min(200, ⌊B/a⌋) succeed, the rest fail
 * INSUFFICIENT_CREDITS, and the balance never goes negative. Then Commit, Commit (another key,
 * same amount), Release and Extend race on each hold, across both servers: one terminal outcome each.
 * Then spend-limit storms: 200 concurrent Reserves of 7 by one member with a hard limit of 1000,
 * split across both servers: exactly 142 are held, the rest SPEND_LIMIT_EXCEEDED. Then watchers on
 * both servers follow concurrent writes made through either: each reaches the final state, in
 * sequence order.
 */
const ROUNDS = byScale(10, 100);
const STORM = 200;
const SETTLE_PER_ROUND = byScale(40, 60);
const LIMIT_ROUNDS = byScale(5, 20);
const WATCH_ROUNDS = byScale(5, 20);
const WATCH_WRITES = 100;
const stack = new Stack();
const figures = new Figures("4 two servers");
let s1: CreditClients;
let s2: CreditClients;

beforeAll(async () => {
  await stack.start(2, { SWEEPER_INTERVAL_MS: "500", DB_POOL_MAX: "10" });
  const client = (url: string) => createCreditClients({ baseUrl: url, caller: "reliability", defaultTimeoutMs: 30_000, retry: { maxAttempts: 10 } });
  s1 = client(stack.servers[0]!.url);
  s2 = client(stack.servers[1]!.url);
});
afterAll(async () => {
  await stack.stop();
});

const rand = (n: number) => Math.floor(Math.random() * n);

type Outcome = { ok: true; state?: ReservationState; captured?: bigint } | { ok: false; code: Code; reason: string };

async function outcome(p: Promise<{ reservation?: { state: ReservationState; capturedAmount: bigint } }>): Promise<Outcome> {
  try {
    const r = await p;
    return { ok: true, state: r.reservation?.state, captured: r.reservation?.capturedAmount };
  } catch (err) {
    const e = ConnectError.from(err);
    return { ok: false, code: e.code, reason: reasonOf(e) };
  }
}

describe("two servers on one database", () => {
  it(`${ROUNDS} rounds of ${STORM}-way Reserve storms and settle races`, async () => {
    const problems: string[] = [];
    let exact = 0;
    let negative = 0;
    let settled = 0;
    let oneOutcome = 0;
    let otherCodes = 0;
    const accounts: string[] = [];
    const t0 = performance.now();
    for (let round = 0; round < ROUNDS; round++) {
      const accountId = `storm-${randomUUID()}`;
      accounts.push(accountId);
      const B = BigInt(1 + rand(20_000));
      const k = 1 + rand(250);
      const a = BigInt(Math.max(1, Math.floor(Number(B) / k) + rand(3) - 1));
      await s1.admin.adjustCredits({ accountId, amount: B, reason: "storm", idempotencyKey: `fund-${accountId}` });

      const results = await Promise.all(
        Array.from({ length: STORM }, (_, i) =>
          outcome((i % 2 === 0 ? s1 : s2).credit.reserve({ accountId, idempotencyKey: `r-${i}`, cost: { case: "amount", value: a }, ttl: durationFromMs(120_000) })),
        ),
      );
      const ok = results.filter((r) => r.ok).length;
      const insufficient = results.filter((r) => !r.ok && r.code === Code.FailedPrecondition && r.reason === "INSUFFICIENT_CREDITS").length;
      const expected = Math.min(STORM, Number(B / a));
      if (ok === expected && ok + insufficient === STORM) exact += 1;
      else problems.push(`round ${round}: B=${B} a=${a}: ${ok} succeeded (expected ${expected}), ${insufficient} insufficient, others ${JSON.stringify(results.filter((r) => !r.ok && r.reason !== "INSUFFICIENT_CREDITS"))}`);
      const { balance } = await s2.credit.getBalance({ accountId });
      if (balance!.available < 0n || balance!.held < 0n) negative += 1;
      if (balance!.available !== B - BigInt(ok) * a || balance!.held !== BigInt(ok) * a) problems.push(`round ${round}: balance ${balance!.available}/${balance!.held} after ${ok} holds of ${a} on ${B}`);
      const { rows } = await stack.db.query<{ n: string }>(`select count(*)::text as n from buckets where account_id = $1 and (remaining < 0 or held < 0 or held > remaining)`, [accountId]);
      if (rows[0]!.n !== "0") negative += 1;

      // Settle races on the holds just made.
      const { rows: holds } = await stack.db.query<{ id: string; held: string }>(
        `select reservation_id::text as id, held_amount::text as held from reservations where account_id = $1 and state = 'HELD' limit $2`,
        [accountId, SETTLE_PER_ROUND],
      );
      await Promise.all(
        holds.map(async (h) => {
          const c = BigInt(rand(Number(h.held) + 1));
          const [x, y] = Math.random() < 0.5 ? [s1, s2] : [s2, s1];
          const [commitA, commitB, release, extend] = await Promise.all([
            outcome(x.credit.commit({ reservationId: h.id, idempotencyKey: `c1-${h.id}`, actual: { case: "amount", value: c } })),
            outcome(y.credit.commit({ reservationId: h.id, idempotencyKey: `c2-${h.id}`, actual: { case: "amount", value: c } })),
            outcome(y.credit.release({ reservationId: h.id, idempotencyKey: `rl-${h.id}`, reason: ReleaseReason.CANCELLED })),
            outcome(x.credit.extendReservation({ reservationId: h.id, idempotencyKey: `ex-${h.id}`, ttl: durationFromMs(300_000) })),
          ]);
          settled += 1;
          for (const r of [commitA, commitB, release, extend]) {
            if (!r.ok && r.code !== Code.FailedPrecondition) {
              otherCodes += 1;
              problems.push(`hold ${h.id}: code ${Code[r.code]} ${r.reason}`);
            }
          }
          const commits = [commitA, commitB].filter((r) => r.ok);
          const committed = commits.length > 0;
          const released = release.ok;
          const consistent =
            committed !== released &&
            commits.every((r) => r.ok && r.state === ReservationState.COMMITTED && r.captured === c) &&
            (!released || (release.ok && release.state === ReservationState.RELEASED));
          if (consistent) oneOutcome += 1;
          else problems.push(`hold ${h.id}: commits ${JSON.stringify([commitA, commitB], (_, v) => (typeof v === "bigint" ? String(v) : v))} release ${JSON.stringify(release)}`);
        }),
      );
      const ledger = await reservationLedger(stack.db, [accountId]);
      for (const r of ledger.values()) {
        if (r.state === "HELD") continue;
        const bad = Number(r.captures) > 1 || Number(r.releases) > 1 || BigInt(r.capture_sum) + BigInt(r.release_sum) !== BigInt(r.hold_sum) || r.capture_sum !== r.captured_amount;
        if (bad) problems.push(`ledger of ${r.reservation_id}: ${JSON.stringify(r)}`);
      }
    }
    const elapsed = performance.now() - t0;
    const reconciled = await reconcileAll(s1, accounts);

    figures.info("rounds × concurrent Reserves (split over 2 servers)", `${ROUNDS} × ${STORM} in ${(elapsed / 1000).toFixed(1)} s`);
    figures.check("rounds with successes = min(200, ⌊B/a⌋) exactly", `${exact}/${ROUNDS}`, "all", exact === ROUNDS);
    figures.check("negative balances or buckets seen", negative, "0", negative === 0);
    figures.check("holds raced (Commit ×2, Release, Extend) with one terminal outcome", `${oneOutcome}/${settled}`, "all", oneOutcome === settled && settled > 0);
    figures.check("race answers other than OK / FAILED_PRECONDITION", otherCodes, "0", otherCodes === 0);
    figures.check("reconcile differences", reconciled.differences, "0", reconciled.differences === 0);

    expect(problems.slice(0, 10)).toEqual([]);
    expect(exact).toBe(ROUNDS);
    expect(negative).toBe(0);
    expect(oneOutcome).toBe(settled);
    expect(reconciled.differences).toBe(0);
    expect(stack.servers.every((s) => s.crashes === 0)).toBe(true);
  });

  it(`${LIMIT_ROUNDS} rounds of ${STORM} concurrent Reserves of 7 against a member's hard limit of 1000`, async () => {
    const problems: string[] = [];
    let exact = 0;
    const accounts: string[] = [];
    const t0 = performance.now();
    for (let round = 0; round < LIMIT_ROUNDS; round++) {
      const accountId = `limit-storm-${randomUUID()}`;
      accounts.push(accountId);
      await s1.admin.adjustCredits({ accountId, amount: 10_000n, reason: "limit storm", idempotencyKey: `fund-${accountId}` });
      // The limit is set through one server, the storm runs through both.
      await s2.admin.setSpendLimit({ accountId, memberId: "storm", period: SpendPeriod.DAY, maxCredits: 1000n, mode: LimitMode.HARD, idempotencyKey: `limit-${accountId}` });
      const results = await Promise.all(
        Array.from({ length: STORM }, (_, i) =>
          outcome((i % 2 === 0 ? s1 : s2).credit.reserve({ accountId, idempotencyKey: `r-${i}`, memberId: "storm", cost: { case: "amount", value: 7n }, ttl: durationFromMs(120_000) })),
        ),
      );
      const held = results.filter((r) => r.ok).length;
      const refused = results.filter((r) => !r.ok && r.code === Code.FailedPrecondition && r.reason === "SPEND_LIMIT_EXCEEDED").length;
      const [limit] = (await s1.credit.getSpendLimits({ accountId, memberId: "storm" })).limits;
      if (held === 142 && refused === STORM - 142 && limit?.held === 994n) exact += 1;
      else problems.push(`round ${round}: ${held} held, ${refused} SPEND_LIMIT_EXCEEDED, limit shows held ${limit?.held}; others ${JSON.stringify(results.filter((r) => !r.ok && r.reason !== "SPEND_LIMIT_EXCEEDED"))}`);
    }
    const elapsed = performance.now() - t0;
    const reconciled = await reconcileAll(s2, accounts);
    figures.info("limit rounds × concurrent Reserves (split over 2 servers)", `${LIMIT_ROUNDS} × ${STORM} in ${(elapsed / 1000).toFixed(1)} s`);
    figures.check("rounds with exactly 142 held and 58 SPEND_LIMIT_EXCEEDED", `${exact}/${LIMIT_ROUNDS}`, "all", exact === LIMIT_ROUNDS);
    figures.check("reconcile differences (spend counters included)", reconciled.differences, "0", reconciled.differences === 0);
    expect(problems).toEqual([]);
    expect(reconciled.differences).toBe(0);
  });

  it(`${WATCH_ROUNDS} rounds of ${WATCH_WRITES} concurrent writes over both servers reach watchers on both`, async () => {
    const problems: string[] = [];
    let reached = 0;
    let ordered = 0;
    let messages = 0;
    const t0 = performance.now();
    for (let round = 0; round < WATCH_ROUNDS; round++) {
      const accountId = `watch-${randomUUID()}`;
      await s1.admin.adjustCredits({ accountId, amount: 1_000_000n, reason: "watch", idempotencyKey: `fund-${accountId}` });
      const abort = new AbortController();
      const watchers = [s1, s2].map((c) => new StreamRecorder(c.watchBalance(accountId, { signal: abort.signal }), abort));
      try {
        await Promise.all(watchers.map((w) => w.until(() => true)));
        await Promise.all(
          Array.from({ length: WATCH_WRITES }, (_, i) =>
            (i % 2 === 0 ? s1 : s2).admin.adjustCredits({ accountId, amount: 1n, reason: "watch", idempotencyKey: `w-${i}` }),
          ),
        );
        const final = await s2.credit.getBalance({ accountId });
        for (const [i, w] of watchers.entries()) {
          const last = await w.until((u) => u.sequence === final.sequence, 30_000);
          if (last.message.balance.available === final.balance!.available) reached += 1;
          else problems.push(`round ${round} server ${i + 1}: final ${final.sequence} shows ${last.message.balance.available}, not ${final.balance!.available}`);
          const sequences = w.messages.map((u) => u.sequence);
          if (sequences.every((s, k) => k === 0 || s > sequences[k - 1]!)) ordered += 1;
          else problems.push(`round ${round} server ${i + 1}: sequences out of order ${sequences.join(",")}`);
          messages += sequences.length;
        }
      } finally {
        abort.abort();
        await Promise.all(watchers.map((w) => w.end()));
      }
    }
    const elapsed = performance.now() - t0;
    figures.info("watch rounds × concurrent writes (watchers on both servers)", `${WATCH_ROUNDS} × ${WATCH_WRITES} in ${(elapsed / 1000).toFixed(1)} s, ${messages} messages`);
    figures.check("watchers that reached the final state", `${reached}/${2 * WATCH_ROUNDS}`, "all", reached === 2 * WATCH_ROUNDS);
    figures.check("watchers whose sequences only grew", `${ordered}/${2 * WATCH_ROUNDS}`, "all", ordered === 2 * WATCH_ROUNDS);
    expect(problems.slice(0, 10)).toEqual([]);
    expect(reached).toBe(2 * WATCH_ROUNDS);
    expect(ordered).toBe(2 * WATCH_ROUNDS);
  });
});
