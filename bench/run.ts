import { mkdirSync, writeFileSync } from "node:fs";
import type { LoadJob } from "./load.js";
import { measuredLoad, type Pids, type Run } from "./measured-load.js";
import { peakRssMb, percentile } from "./proc.js";
import { measureRelay, type RelayFigures } from "./relay.js";
import { LimitMode, SpendPeriod } from "../src/client/index.js";
import {
  type BenchSpendLimit,
  buildAndMigrate,
  fundAccounts,
  pgbench,
  pgbenchInit,
  type PgbenchRun,
  reconcileAll,
  recreateDatabase,
  setSpendLimits,
  spendCounters,
  startRedis,
  startServer,
} from "./setup.js";

/**
 * npm run bench [-- --quick] [-- --json]
 * npm run bench [-- --encoder-ab] [-- --no-outbox-ab] [-- --no-limits-ab] [-- --no-usage-ab]
 * npm run bench [-- --relay]   (also: the broker relay's events/s beside the outbox's write rate; needs NATS JetStream at BENCH_NATS_URL)
 * Runs, on one Postgres and one server, in interleaved rounds: pgbench tpcb-like, Reserve→Commit/Release
 * cycles on many accounts (uniform) and on one (hot), GetBalance, and a no-op RPC (health
 * Check through the same server stack); then reconciles every account.
 */
const quick = process.argv.includes("--quick");
const asJson = process.argv.includes("--json");
/**
 * --encoder-ab: a second server answers with protobuf-es' toBinary (BENCH_ANSWER_ENCODER) instead
 * of src/rpc/binary-encoder.ts, and uniform and hot cycles alternate between the two servers.
 */
const encoderAb = process.argv.includes("--encoder-ab");
/**
 * The outbox A/B (on unless --no-outbox-ab): a second server with EVENT_OUTBOX_ENABLED=false (no
 * event written, no sequencer), and uniform cycles alternating between the two on one database.
 */
const outboxAb = !process.argv.includes("--no-outbox-ab");
/**
 * The usage rollup A/B (on unless --no-usage-ab): uniform cycles alternating, on one database,
 * between a server with the rollup and one with USAGE_ROLLUP_ENABLED=false (writes add nothing to
 * the usage rollup, any of its levels), as the outbox A/B does, except that both are servers of their own, started
 * together and warmed alike: a fresh server spent more CPU per cycle than the main one (which has
 * run every workload before) even with less to do, which favoured "on". Target (the usage
 * issue): on/off ≥ 0.9.
 */
const usageAb = !process.argv.includes("--no-usage-ab");
const USAGE_AB_TARGET = 0.9;
/**
 * The spend-limits A/B (on unless --no-limits-ab): two more sets of ACCOUNTS accounts, funded
 * alike, on the same server and database; every account of one has an account-wide and a member
 * limit (LIMITS), never reached; uniform cycles alternate between the sets, each Reserve for
 * LIMITS_MEMBER on both, so that the limits' checking and counting is the only difference.
 */
const limitsAb = !process.argv.includes("--no-limits-ab");
const LIMITS_MEMBER = "bench-member";
/** Far above what an account is funded with (1e9): the point is the limits' cost, not their refusals. */
const LIMITS: readonly BenchSpendLimit[] = [
  { memberId: "", period: SpendPeriod.DAY, maxCredits: 1_000_000_000_000n, mode: LimitMode.HARD, timeZone: "America/New_York" },
  { memberId: LIMITS_MEMBER, period: SpendPeriod.BILLING_PERIOD, maxCredits: 1_000_000_000_000n, mode: LimitMode.HARD, timeZone: "" },
];
/** --relay: the broker relay's throughput beside the outbox's write rate (bench/relay.ts), a few seconds more. */
const relayBench = process.argv.includes("--relay");
/**
 * --ab-only: only the A/Bs (no pgbench, no workload matrix, no half-peak run), for a precise
 * comparison in a few minutes; --ab-rounds N: rounds per A/B (default: as many as the matrix's).
 */
const abOnly = process.argv.includes("--ab-only");
const abRoundsArg = process.argv.indexOf("--ab-rounds");
const NATS_URL = process.env["BENCH_NATS_URL"] ?? "nats://127.0.0.1:4222";
const BASE = process.env["BENCH_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/credit_bench";
/** The pgbench databases are named after the bench's, so that two benches on one Postgres given different BENCH_DATABASE_URLs never share one. */
const BENCH_DB = new URL(BASE).pathname.slice(1);
const PGBENCH_URL = BASE.replace(/\/[^/]*$/, `/${BENCH_DB}_pgbench`);
const PGBENCH_HOT_URL = BASE.replace(/\/[^/]*$/, `/${BENCH_DB}_pgbench_hot`);
const CLIENTS = quick ? [16] : [1, 16, 64];
/** Each comparison is ROUNDS interleaved runs of SECONDS: this machine's speed drifts by tens of per cent within minutes. */
const SECONDS = quick ? 4 : 5;
const ROUNDS = quick ? 1 : 3;
const ACCOUNTS = quick ? 1000 : 10_000;
/**
 * A/B rounds: twice the matrix's in a full run. One 5 s round of uniform cycles on this machine
 * spreads by ±20 % against the next (2026-12-02: 289–482 cycles/s within one A/B), so three
 * rounds a side left a 10 % difference inside the noise.
 */
const AB_ROUNDS = abRoundsArg >= 0 ? Number(process.argv[abRoundsArg + 1]) : quick ? ROUNDS : 2 * ROUNDS;
/** BENCH_PROFILE=<dir>: the server writes a V8 CPU profile there when it exits (open it in Chrome DevTools). */
const PROFILE_DIR = process.env["BENCH_PROFILE"];

interface Row {
  workload: string;
  clients: number;
  opsPerSec: number;
  latency: Record<string, { p50: number; p99: number; p999: number; n: number }>;
  errors: Record<string, number>;
  cpuMsPerOp: { server: number; postgres: number; redis: number; loadgen: number };
}

/** An A/B's figures from its runs: one run's cycles/s, CPU per cycle over runs, and cycles per ms over runs (the A/B ratio's terms). */
const rate = (r: Run) => (r.result.ops / r.result.elapsedMs) * 1000;
const perCycle = (rs: Run[], f: (r: Run) => number) => rs.reduce((a, r) => a + f(r), 0) / Math.max(1, rs.reduce((a, r) => a + r.result.ops, 0));
const total = (rs: Run[]) => rs.reduce((a, r) => a + r.result.ops, 0) / rs.reduce((a, r) => a + r.result.elapsedMs, 0);

function load(job: LoadJob, pids: Pids): Promise<Run> {
  return measuredLoad(job, pids, [BENCH_DB]);
}

/** Several runs of one workload as one row: throughput over their total time, latencies over all their calls. */
function summarize(workload: string, clients: number, runs: readonly Run[]): Row {
  const sum = (f: (r: Run) => number) => runs.reduce((total, r) => total + f(r), 0);
  const ops = Math.max(1, sum((r) => r.result.ops));
  const latency: Row["latency"] = {};
  const names = new Set(runs.flatMap((r) => Object.keys(r.result.latenciesMs)));
  for (const name of names) {
    const sorted = runs.flatMap((r) => r.result.latenciesMs[name] ?? []).sort((a, b) => a - b);
    latency[name] = { p50: percentile(sorted, 50), p99: percentile(sorted, 99), p999: percentile(sorted, 99.9), n: sorted.length };
  }
  const errors: Record<string, number> = {};
  for (const r of runs) for (const [code, n] of Object.entries(r.result.errors)) errors[code] = (errors[code] ?? 0) + n;
  return {
    workload,
    clients,
    opsPerSec: (sum((r) => r.result.ops) / sum((r) => r.result.elapsedMs)) * 1000,
    latency,
    errors,
    cpuMsPerOp: {
      server: sum((r) => r.serverCpuMs) / ops,
      postgres: sum((r) => r.postgresCpuMs) / ops,
      redis: sum((r) => r.redisCpuMs) / ops,
      loadgen: sum((r) => r.result.cpuMs) / ops,
    },
  };
}

/** Progress on stderr, so that stdout stays the report. */
function step(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

function fmt(n: number, digits = 2): string {
  return n.toFixed(digits);
}

async function main(): Promise<void> {
  step("fresh database, build, migrations and server");
  await recreateDatabase(BASE);
  await buildAndMigrate(BASE);
  const redis = await startRedis();
  const serverEnv = {
    DATABASE_URL: BASE,
    REDIS_URL: redis.url,
    GRPC_PORT: "0",
    GRPC_HOST: "127.0.0.1",
    METRICS_PORT: "0",
    LOG_LEVEL: "warn",
    DB_POOL_MAX: process.env["BENCH_DB_POOL_MAX"] ?? "20",
  };
  const { proc, port } = await startServer(serverEnv, PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : []);
  const pid: Pids = { server: proc.pid!, redis: redis.proc.pid! };
  const other = encoderAb
    ? await startServer({ ...serverEnv, BENCH_ANSWER_ENCODER: "protobuf-es" })
    : null;
  const outboxOff = outboxAb ? await startServer({ ...serverEnv, EVENT_OUTBOX_ENABLED: "false" }) : null;
  const rollupOn = usageAb ? await startServer(serverEnv) : null;
  const rollupOff = usageAb ? await startServer({ ...serverEnv, USAGE_ROLLUP_ENABLED: "false" }) : null;
  try {
    step(`funding ${ACCOUNTS} accounts and pgbench databases`);
    await fundAccounts(BASE, "bench-u-", ACCOUNTS, 1_000_000_000n);
    await fundAccounts(BASE, "bench-hot-", 1, 1_000_000_000_000n);
    const accounts = { prefix: "bench-u-", count: ACCOUNTS };
    const hot = { prefix: "bench-hot-", count: 1 };
    const target = `127.0.0.1:${port}`;
    // The spend-limits A/B's sets: funded like the uniform one, limits on one (all before any timed
    // run; the SetSpendLimit calls meanwhile pgbench fills its databases, the setup's longest parts).
    const limited = { prefix: "bench-lim-", count: ACCOUNTS };
    const unlimited = { prefix: "bench-nolim-", count: ACCOUNTS };
    const setUpLimits = async (): Promise<{ limits: number; seconds: number }> => {
      step(`spend-limits A/B: funding 2 × ${ACCOUNTS} accounts, ${LIMITS.length} spend limits on each of ${limited.prefix}* (beside pgbench -i)`);
      await fundAccounts(BASE, unlimited.prefix, ACCOUNTS, 1_000_000_000n);
      await fundAccounts(BASE, limited.prefix, ACCOUNTS, 1_000_000_000n);
      const t0 = performance.now();
      const limits = await setSpendLimits(target, limited.prefix, limited.count, LIMITS);
      return { limits, seconds: (performance.now() - t0) / 1000 };
    };
    const [, spendLimitsSetup] = await Promise.all([
      (async () => {
        if (abOnly) return;
        await pgbenchInit(PGBENCH_URL, Math.max(...CLIENTS));
        await pgbenchInit(PGBENCH_HOT_URL, 1);
      })(),
      limitsAb ? setUpLimits() : Promise.resolve(null),
    ]);
    const rows: Row[] = [];
    const pgbenchTps: Record<string, number> = {};
    /** CPU per pgbench tpcb transaction (uniform database), Postgres and pgbench itself apart. */
    const pgbenchCpuMsPerTx: Record<string, { postgres: number; pgbench: number }> = {};
    const job = (workload: LoadJob["workload"], accs: LoadJob["accounts"], concurrency: number, ratePerWorker = 0): LoadJob => ({
      target,
      workload,
      accounts: accs,
      concurrency,
      durationMs: SECONDS * 1000,
      ratePerWorker,
    });
    // Warm-up: JIT, pools, caches.
    await load({ ...job("cycle", accounts, 16), durationMs: 2000 }, pid);
    for (const clients of abOnly ? [] : CLIENTS) {
      step(`${clients} clients: pgbench, uniform, hot, GetBalance, no-op (${ROUNDS} × ${SECONDS}s each, interleaved)`);
      const runs: Record<string, Run[]> = { cycle: [], "cycle-hot": [], balance: [], noop: [] };
      const uniformTps: PgbenchRun[] = [];
      const hotTps: PgbenchRun[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        uniformTps.push(await pgbench(PGBENCH_URL, clients, SECONDS));
        runs["cycle"]!.push(await load(job("cycle", accounts, clients), pid));
        hotTps.push(await pgbench(PGBENCH_HOT_URL, clients, SECONDS));
        runs["cycle-hot"]!.push(await load(job("cycle", hot, clients), pid));
        runs["balance"]!.push(await load(job("balance", accounts, clients), pid));
        runs["noop"]!.push(await load(job("noop", accounts, clients), pid));
      }
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      pgbenchTps[`uniform/${clients}`] = mean(uniformTps.map((r) => r.tps));
      pgbenchTps[`hot/${clients}`] = mean(hotTps.map((r) => r.tps));
      const transactions = uniformTps.reduce((a, r) => a + r.transactions, 0);
      pgbenchCpuMsPerTx[`uniform/${clients}`] = {
        postgres: uniformTps.reduce((a, r) => a + r.postgresCpuMs, 0) / transactions,
        pgbench: uniformTps.reduce((a, r) => a + r.pgbenchCpuMs, 0) / transactions,
      };
      for (const [workload, list] of Object.entries(runs)) rows.push(summarize(workload, clients, list));
    }
    // Latency at half the peak uniform rate, offered by as many paced clients as reached the peak:
    // each then has twice the time a cycle took at the peak, so a slow answer does not lower the rate.
    if (!abOnly) {
      const best = rows.filter((r) => r.workload === "cycle").reduce((a, b) => (b.opsPerSec > a.opsPerSec ? b : a));
      const peak = best.opsPerSec;
      const halfClients = best.clients;
      const halfRuns: Run[] = [];
      for (let round = 0; round < ROUNDS; round++) halfRuns.push(await load(job("cycle", accounts, halfClients, peak / 2 / halfClients), pid));
      rows.push(summarize("cycle@half-peak", halfClients, halfRuns));
    }

    const encoderAB: Record<string, { private: number[]; toBinary: number[]; serverCpuMsPerCycle: { private: number; toBinary: number }; ratio: number }> = {};
    if (other) {
      const otherPid: Pids = { server: other.proc.pid!, redis: redis.proc.pid! };
      const otherTarget = `127.0.0.1:${other.port}`;
      await load({ ...job("cycle", accounts, 16), target: otherTarget, durationMs: 2000 }, otherPid); // its warm-up
      for (const clients of CLIENTS.filter((c) => c >= 16)) {
        step(`${clients} clients: answer encoder A/B, uniform and hot (${AB_ROUNDS} × ${SECONDS}s each, alternating)`);
        for (const [name, accs] of [["uniform", accounts], ["hot", hot]] as const) {
          const ab = { private: [] as Run[], toBinary: [] as Run[] };
          for (let round = 0; round < AB_ROUNDS; round++) {
            ab.private.push(await load(job("cycle", accs, clients), pid));
            ab.toBinary.push(await load({ ...job("cycle", accs, clients), target: otherTarget }, otherPid));
          }
          encoderAB[`${name}/${clients}`] = {
            private: ab.private.map(rate),
            toBinary: ab.toBinary.map(rate),
            serverCpuMsPerCycle: { private: perCycle(ab.private, (r) => r.serverCpuMs), toBinary: perCycle(ab.toBinary, (r) => r.serverCpuMs) },
            ratio: total(ab.toBinary) / total(ab.private),
          };
        }
      }
    }

    const outboxAB: Record<string, { on: number[]; off: number[]; serverCpuMsPerCycle: { on: number; off: number }; postgresCpuMsPerCycle: { on: number; off: number }; ratio: number }> = {};
    if (outboxOff) {
      const offPid: Pids = { server: outboxOff.proc.pid!, redis: redis.proc.pid! };
      const offTarget = `127.0.0.1:${outboxOff.port}`;
      await load({ ...job("cycle", accounts, 16), target: offTarget, durationMs: 2000 }, offPid); // its warm-up
      for (const clients of CLIENTS.filter((c) => c >= 16)) {
        step(`${clients} clients: outbox on/off A/B, uniform (${AB_ROUNDS} × ${SECONDS}s each, alternating)`);
        const ab = { on: [] as Run[], off: [] as Run[] };
        for (let round = 0; round < AB_ROUNDS; round++) {
          ab.on.push(await load(job("cycle", accounts, clients), pid));
          ab.off.push(await load({ ...job("cycle", accounts, clients), target: offTarget }, offPid));
        }
        outboxAB[`uniform/${clients}`] = {
          on: ab.on.map(rate),
          off: ab.off.map(rate),
          serverCpuMsPerCycle: { on: perCycle(ab.on, (r) => r.serverCpuMs), off: perCycle(ab.off, (r) => r.serverCpuMs) },
          postgresCpuMsPerCycle: { on: perCycle(ab.on, (r) => r.postgresCpuMs), off: perCycle(ab.off, (r) => r.postgresCpuMs) },
          ratio: total(ab.on) / total(ab.off),
        };
      }
    }

    const usageRollupAB: Record<string, { on: number[]; off: number[]; serverCpuMsPerCycle: { on: number; off: number }; postgresCpuMsPerCycle: { on: number; off: number }; ratio: number }> = {};
    if (rollupOn && rollupOff) {
      const onPid: Pids = { server: rollupOn.proc.pid!, redis: redis.proc.pid! };
      const onTarget = `127.0.0.1:${rollupOn.port}`;
      const offPid: Pids = { server: rollupOff.proc.pid!, redis: redis.proc.pid! };
      const offTarget = `127.0.0.1:${rollupOff.port}`;
      // Their warm-up, alike and interleaved (JIT, pools, caches).
      for (let i = 0; i < 2; i++) {
        await load({ ...job("cycle", accounts, 16), target: onTarget, durationMs: SECONDS * 1000 }, onPid);
        await load({ ...job("cycle", accounts, 16), target: offTarget, durationMs: SECONDS * 1000 }, offPid);
      }
      for (const clients of CLIENTS.filter((c) => c >= 16)) {
        // At least two rounds (--quick has one), so that each server goes first once.
        const rounds = Math.max(2, AB_ROUNDS);
        step(`${clients} clients: usage rollup on/off A/B, uniform (${rounds} × ${SECONDS}s each, alternating)`);
        const ab = { on: [] as Run[], off: [] as Run[] };
        for (let round = 0; round < rounds; round++) {
          // Which goes first alternates by round, so that a drift within a round favours neither.
          const on = async () => ab.on.push(await load({ ...job("cycle", accounts, clients), target: onTarget }, onPid));
          const off = async () => ab.off.push(await load({ ...job("cycle", accounts, clients), target: offTarget }, offPid));
          if (round % 2 === 0) {
            await on();
            await off();
          } else {
            await off();
            await on();
          }
        }
        usageRollupAB[`uniform/${clients}`] = {
          on: ab.on.map(rate),
          off: ab.off.map(rate),
          serverCpuMsPerCycle: { on: perCycle(ab.on, (r) => r.serverCpuMs), off: perCycle(ab.off, (r) => r.serverCpuMs) },
          postgresCpuMsPerCycle: { on: perCycle(ab.on, (r) => r.postgresCpuMs), off: perCycle(ab.off, (r) => r.postgresCpuMs) },
          ratio: total(ab.on) / total(ab.off),
        };
      }
    }

    type Errors = Record<string, number>;
    const spendLimitsAB: Record<
      string,
      {
        with: number[];
        without: number[];
        ratio: number;
        serverCpuMsPerCycle: { with: number; without: number };
        postgresCpuMsPerCycle: { with: number; without: number };
        errors: { with: Errors; without: Errors };
      }
    > = {};
    let spendLimitsCounters: Awaited<ReturnType<typeof spendCounters>> | null = null;
    if (limitsAb) {
      const withJob = (clients: number): LoadJob => ({ ...job("cycle", limited, clients), memberId: LIMITS_MEMBER });
      const withoutJob = (clients: number): LoadJob => ({ ...job("cycle", unlimited, clients), memberId: LIMITS_MEMBER });
      // Warm-up of both fresh sets (their rows into the caches), the one measured second last.
      await load({ ...withoutJob(16), durationMs: 2000 }, pid);
      await load({ ...withJob(16), durationMs: 2000 }, pid);
      for (const clients of CLIENTS.filter((c) => c >= 16)) {
        step(`${clients} clients: spend limits with/without A/B, uniform (${AB_ROUNDS} × ${SECONDS}s each, alternating)`);
        const ab = { with: [] as Run[], without: [] as Run[] };
        for (let round = 0; round < AB_ROUNDS; round++) {
          // Which goes first alternates by round, so that a drift within a round favours neither.
          if (round % 2 === 0) {
            ab.with.push(await load(withJob(clients), pid));
            ab.without.push(await load(withoutJob(clients), pid));
          } else {
            ab.without.push(await load(withoutJob(clients), pid));
            ab.with.push(await load(withJob(clients), pid));
          }
        }
        const errors = (rs: Run[]) => {
          const out: Errors = {};
          for (const r of rs) for (const [code, n] of Object.entries(r.result.errors)) out[code] = (out[code] ?? 0) + n;
          return out;
        };
        spendLimitsAB[`uniform/${clients}`] = {
          with: ab.with.map(rate),
          without: ab.without.map(rate),
          ratio: total(ab.with) / total(ab.without),
          serverCpuMsPerCycle: { with: perCycle(ab.with, (r) => r.serverCpuMs), without: perCycle(ab.without, (r) => r.serverCpuMs) },
          postgresCpuMsPerCycle: { with: perCycle(ab.with, (r) => r.postgresCpuMs), without: perCycle(ab.without, (r) => r.postgresCpuMs) },
          errors: { with: errors(ab.with), without: errors(ab.without) },
        };
      }
      // That the limits did count: how many of their counters hold captures (none would mean the A/B measured nothing).
      spendLimitsCounters = await spendCounters(BASE, limited.prefix);
    }

    let relay: RelayFigures | null = null;
    if (relayBench) {
      step(`relay: outbox write rate (uniform, 16 clients, ${SECONDS}s), then the relay publishing the feed to NATS JetStream`);
      relay = await measureRelay(BASE, NATS_URL, async () => (await load(job("cycle", accounts, 16), pid)).result, { maxEvents: quick ? 20_000 : 100_000, maxMs: 20_000 });
    }

    step("reconciling every account");
    const rssMb = peakRssMb(pid.server);
    const differences = await reconcileAll(BASE);
    const ratio = (a: number | undefined, b: number | undefined) => (a && b ? a / b : 0);
    const find = (w: string, c: number) => rows.find((r) => r.workload === w && r.clients === c)?.opsPerSec;
    const ratios: Record<string, number> = {};
    for (const c of abOnly ? [] : CLIENTS) {
      ratios[`uniform/pgbench @${c}`] = ratio(find("cycle", c), pgbenchTps[`uniform/${c}`]);
      ratios[`hot/uniform @${c}`] = ratio(find("cycle-hot", c), find("cycle", c));
      ratios[`pgbench hot/uniform @${c}`] = ratio(pgbenchTps[`hot/${c}`], pgbenchTps[`uniform/${c}`]);
      ratios[`GetBalance/no-op @${c}`] = ratio(find("balance", c), find("noop", c));
      // The efficiency gauge: what one uniform cycle costs the service (server, Postgres, Redis),
      // against what one tpcb transaction costs Postgres; the load generator and pgbench are out.
      const cycle = rows.find((r) => r.workload === "cycle" && r.clients === c)?.cpuMsPerOp;
      const cycleCpu = cycle ? cycle.server + cycle.postgres + cycle.redis : undefined;
      ratios[`cycle-cpu/pgbench-cpu @${c}`] = ratio(cycleCpu, pgbenchCpuMsPerTx[`uniform/${c}`]?.postgres);
    }
    for (const c of CLIENTS) {
      if (outboxAB[`uniform/${c}`]) ratios[`outbox on/off @${c}`] = outboxAB[`uniform/${c}`]!.ratio;
      if (usageRollupAB[`uniform/${c}`]) ratios[`usage rollup on/off @${c}`] = usageRollupAB[`uniform/${c}`]!.ratio;
      if (spendLimitsAB[`uniform/${c}`]) ratios[`spend limits with/without @${c}`] = spendLimitsAB[`uniform/${c}`]!.ratio;
    }
    const half = abOnly ? undefined : rows[rows.length - 1];
    const report = {
      quick, seconds: SECONDS, rounds: ROUNDS, accounts: ACCOUNTS, pgbenchTps, pgbenchCpuMsPerTx, rows, ratios, serverPeakRssMb: rssMb, reconcileDifferences: differences,
      abRounds: AB_ROUNDS, halfPeak: half?.latency, ...(other ? { encoderAB } : {}), ...(outboxOff ? { outboxAB } : {}),
      ...(rollupOff ? { usageRollupAB, usageRollupABTarget: USAGE_AB_TARGET } : {}),
      ...(limitsAb ? { spendLimitsAB, spendLimitsSetup, spendLimitsCounters } : {}), ...(relay ? { relay } : {}),
    };
    mkdirSync("bench/results", { recursive: true });
    writeFileSync(`bench/results/${abOnly ? "ab" : quick ? "quick" : "full"}.json`, JSON.stringify(report, null, 2));
    if (asJson) console.log(JSON.stringify(report, null, 2));
    else {
      if (!abOnly) {
        console.log(`pgbench tpcb-like TPS: ${Object.entries(pgbenchTps).map(([k, v]) => `${k}=${fmt(v, 0)}`).join("  ")}`);
        console.log(
          `pgbench CPU ms per tx, Postgres / pgbench: ${Object.entries(pgbenchCpuMsPerTx).map(([k, v]) => `${k}=${fmt(v.postgres, 3)} / ${fmt(v.pgbench, 3)}`).join("  ")}`,
        );
        console.log("| workload | clients | ops/s | p50 / p99 / p99.9 ms per RPC | errors | CPU ms/op server / pg / redis / loadgen |");
        console.log("|---|---|---|---|---|---|");
        for (const r of rows) {
          const lat = Object.entries(r.latency).map(([n, l]) => `${n} ${fmt(l.p50)} / ${fmt(l.p99)} / ${fmt(l.p999)}`).join("; ");
          const errs = Object.entries(r.errors).map(([k, v]) => `${k}×${v}`).join(" ") || "0";
          console.log(`| ${r.workload} | ${r.clients} | ${fmt(r.opsPerSec, 0)} | ${lat} | ${errs} | ${fmt(r.cpuMsPerOp.server)} / ${fmt(r.cpuMsPerOp.postgres)} / ${fmt(r.cpuMsPerOp.redis)} / ${fmt(r.cpuMsPerOp.loadgen)} |`);
        }
      }
      console.log("ratios:", Object.entries(ratios).map(([k, v]) => `${k} = ${fmt(v)}`).join(", "));
      console.log(`server peak RSS ${fmt(rssMb, 0)} MB; reconciliation differences: ${differences}`);
      for (const [k, v] of Object.entries(outboxAB)) {
        const list = (xs: number[]) => xs.map((x) => fmt(x, 0)).join("/");
        console.log(
          `outbox A/B ${k}: on ${list(v.on)} vs off ${list(v.off)} cycles/s (on/off ${fmt(v.ratio, 3)}); CPU ms per cycle server ${fmt(v.serverCpuMsPerCycle.on, 3)} vs ${fmt(v.serverCpuMsPerCycle.off, 3)}, Postgres ${fmt(v.postgresCpuMsPerCycle.on, 3)} vs ${fmt(v.postgresCpuMsPerCycle.off, 3)}`,
        );
      }
      for (const [k, v] of Object.entries(usageRollupAB)) {
        const list = (xs: number[]) => xs.map((x) => fmt(x, 0)).join("/");
        console.log(
          `usage rollup A/B ${k}: on ${list(v.on)} vs off ${list(v.off)} cycles/s (on/off ${fmt(v.ratio, 3)}, target ≥ ${USAGE_AB_TARGET}: ${v.ratio >= USAGE_AB_TARGET ? "PASS" : "FAIL"}); CPU ms per cycle server ${fmt(v.serverCpuMsPerCycle.on, 3)} vs ${fmt(v.serverCpuMsPerCycle.off, 3)}, Postgres ${fmt(v.postgresCpuMsPerCycle.on, 3)} vs ${fmt(v.postgresCpuMsPerCycle.off, 3)}`,
        );
      }
      for (const [k, v] of Object.entries(spendLimitsAB)) {
        const list = (xs: number[]) => xs.map((x) => fmt(x, 0)).join("/");
        const errs = (e: Errors) => Object.entries(e).map(([code, n]) => `${code}×${n}`).join(" ") || "0";
        console.log(
          `spend limits A/B ${k}: with ${list(v.with)} vs without ${list(v.without)} cycles/s (with/without ${fmt(v.ratio, 3)}); CPU ms per cycle server ${fmt(v.serverCpuMsPerCycle.with, 3)} vs ${fmt(v.serverCpuMsPerCycle.without, 3)}, Postgres ${fmt(v.postgresCpuMsPerCycle.with, 3)} vs ${fmt(v.postgresCpuMsPerCycle.without, 3)}; errors ${errs(v.errors.with)} vs ${errs(v.errors.without)}`,
        );
      }
      if (spendLimitsSetup && spendLimitsCounters) {
        console.log(
          `spend limits A/B setup: ${spendLimitsSetup.limits} limits (${LIMITS.length} per account on ${ACCOUNTS}: account DAY and member ${LIMITS_MEMBER} BILLING_PERIOD, HARD) set in ${fmt(spendLimitsSetup.seconds, 1)} s; after the runs ${spendLimitsCounters.counting}/${spendLimitsCounters.limits} counters have counted captures, ${spendLimitsCounters.used} credits in all`,
        );
      }
      if (relay) {
        console.log(
          `relay: outbox written ${fmt(relay.writtenPerSec, 0)} events/s (uniform cycles, 16 clients; ${relay.writtenEvents} events); relay published ${fmt(relay.publishedPerSec, 0)} events/s to JetStream (${relay.publishedEvents} events in ${fmt(relay.publishSeconds)} s, acks awaited, cursor stored per page); relay/written ${fmt(relay.publishedPerSec / Math.max(1, relay.writtenPerSec))}`,
        );
      }
      for (const [k, v] of Object.entries(encoderAB)) {
        const list = (xs: number[]) => xs.map((x) => fmt(x, 0)).join("/");
        console.log(
          `encoder A/B ${k}: private ${list(v.private)} vs toBinary ${list(v.toBinary)} cycles/s (toBinary/private ${fmt(v.ratio, 3)}); server CPU ms per cycle ${fmt(v.serverCpuMsPerCycle.private, 3)} vs ${fmt(v.serverCpuMsPerCycle.toBinary, 3)}`,
        );
      }
    }
    if (differences !== 0) {
      console.error(`reconciliation found ${differences} differences`);
      process.exitCode = 1;
    }
  } finally {
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill("SIGTERM");
    await exited; // a profile (BENCH_PROFILE) is written on exit
    for (const extra of [other, outboxOff, rollupOn, rollupOff]) {
      if (!extra) continue;
      const exited = new Promise((resolve) => extra.proc.once("exit", resolve));
      extra.proc.kill("SIGTERM");
      await exited;
    }
    redis.proc.kill("SIGTERM");
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
