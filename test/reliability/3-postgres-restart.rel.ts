import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { conservation, doubleEffects, heldCount, lostAcks, reconcileAll, reservationLedger } from "./support/checks.js";
import { fundAccounts, rawClients, runHoldLoad } from "./support/load.js";
import { byScale, Figures, ms } from "./support/report.js";
import { healthClient, type HealthStatus, sleep, Stack } from "./support/stack.js";

/**
 * Scenario 3 — Postgres restart (pg_ctl stop -m fast, then start) under load. Every failed attempt
 * must be UNAVAILABLE; health must say NOT_SERVING while the database is down and SERVING again
 * after; every acknowledged write must be in the database afterwards.
 */
const OUTAGES = byScale(2, 5);
const DOWN_MS = byScale(3000, 5000);
const FUNDED = 1_000_000_000n;
const stack = new Stack();
const figures = new Figures("3 postgres restart");

beforeAll(async () => {
  await stack.start(1, { HOLD_DEFAULT_TTL_SECONDS: "2", SWEEPER_INTERVAL_MS: "200", HEALTH_PROBE_INTERVAL_MS: "200" });
});
afterAll(async () => {
  await stack.stop();
});

describe("Postgres stopped and started under load", () => {
  it("answers UNAVAILABLE while it is down, reports NOT_SERVING, and loses no acknowledged write", async () => {
    const server = stack.servers[0]!;
    const clients = rawClients(server.url, 15_000);
    const accounts = await fundAccounts(clients, "pgdown", 8, FUNDED);
    const health = healthClient(server.url);
    const samples: { at: number; status: HealthStatus }[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        samples.push({ at: performance.now(), status: await health.status(1000) });
        await sleep(50);
      }
    })();

    let stopping = false;
    const load = runHoldLoad({ clients: () => clients, accounts, workers: 8, abandonShare: 0.15, settleTtlMs: 120_000, stop: () => stopping });
    const windows: { down: number; up: number }[] = [];
    const backToServing: number[] = [];
    for (let i = 0; i < OUTAGES; i++) {
      await sleep(2000);
      await stack.pg.stop("fast");
      // The outage window starts when `pg_ctl stop -w` returns, once the server has stopped: a
      // fast shutdown writes a checkpoint first, and health rightly says SERVING until then.
      const down = performance.now();
      await sleep(DOWN_MS);
      // The outage window ends when Postgres is asked to start: `pg_ctl start -w` returns only once
      // it accepts connections, and the health probe may see it (SERVING, rightly) before that.
      const starting = performance.now();
      await stack.pg.start();
      const up = performance.now();
      windows.push({ down, up: starting });
      for (;;) {
        if ((await health.status(1000)) === "SERVING") break;
        if (performance.now() - up > 30_000) throw new Error("not SERVING 30 s after Postgres came back");
        await sleep(20);
      }
      backToServing.push(performance.now() - up);
    }
    await sleep(2000);
    stopping = true;
    const result = await load;
    polling = false;
    await poller;

    // Failed attempts that happened while the database was down (or going down, or coming back).
    const failures = result.log.failures;
    const unavailable = failures.filter((f) => f.code === "Unavailable").length;
    const byCode: Record<string, number> = {};
    for (const f of failures) byCode[f.code] = (byCode[f.code] ?? 0) + 1;
    const others = failures.filter((f) => f.code !== "Unavailable").slice(0, 5).map((f) => `${f.code}: ${f.message}`);
    // Health while down: after one probe interval (+ margin) into each outage, every sample must be NOT_SERVING.
    const downSamples = samples.filter((s) => windows.some((w) => s.at > w.down + 700 && s.at < w.up));
    const notServing = downSamples.filter((s) => s.status === "NOT_SERVING").length;

    await sleep(3500);
    const ledger = await reservationLedger(stack.db, accounts);
    const lost = lostAcks(ledger, result.acks);
    const doubles = doubleEffects(ledger, result.acks);
    const held = await heldCount(stack.db, accounts);
    const conserved = await conservation(stack.db, clients, new Map(accounts.map((a) => [a, FUNDED])));
    const reconciled = await reconcileAll(clients, accounts);

    figures.info("outages (pg_ctl stop -m fast → start) × down time", `${OUTAGES} × ${DOWN_MS} ms`);
    figures.info("acknowledged calls", result.acks.length);
    figures.check("failed attempts answered UNAVAILABLE", `${unavailable}/${failures.length} = ${failures.length ? ((100 * unavailable) / failures.length).toFixed(1) : "—"} % ${JSON.stringify(byCode)}`, "100 %", unavailable === failures.length && failures.length > 0);
    figures.check("health samples NOT_SERVING while down", `${notServing}/${downSamples.length}`, "all", downSamples.length > 0 && notServing === downSamples.length);
    figures.info("time Postgres up → SERVING (each outage)", backToServing.map(ms).join(", "));
    figures.check("acknowledged writes lost", lost.count, "0", lost.count === 0);
    figures.check("double effects", doubles.count, "0", doubles.count === 0);
    figures.check("holds still HELD after TTL + sweep", held, "0", held === 0);
    figures.check("conservation differences", conserved.count, "0", conserved.count === 0);
    figures.check("reconcile differences", reconciled.differences, "0", reconciled.differences === 0);

    expect(others).toEqual([]);
    expect(failures.length).toBeGreaterThan(0);
    expect(notServing).toBe(downSamples.length);
    expect(downSamples.length).toBeGreaterThan(0);
    expect(lost.examples).toEqual([]);
    expect(doubles.examples).toEqual([]);
    expect(held).toBe(0);
    expect(conserved.examples).toEqual([]);
    expect(reconciled.differences).toBe(0);
    expect(result.refusals).toEqual([]);
    expect(server.crashes).toBe(0);
  });
});
