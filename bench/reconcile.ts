import { execFile } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import pg from "pg";
import { createCreditClients } from "../src/client/index.js";
import type { LoadJob, LoadResult } from "./load.js";
import { percentile, processCpuMs } from "./proc.js";
import { buildAndMigrate, fundAccounts, recreateDatabase, startServer } from "./setup.js";
import { INSERT_SETTLED_RESERVATIONS } from "../test/support/settled-holds.js";
import { dayOf } from "../src/domain/usage.js";
import { toPositional } from "../src/store/pg.js";
import { CLOSE_USAGE_DAYS, REBUILD_ACCOUNT_USAGE } from "../src/store/usage-rollup.js";
import { arg } from "./args.js";

/**
 * npm run bench:reconcile [-- --holds 200000] [-- --rounds 3] [-- --seconds 4]
 *
 * Reconcile of one account with many settled holds, on the built server started as bench/run.ts
 * starts it. The account is made by SQL (like fundAccounts: one ADJUSTMENT bucket, then `--holds`
 * committed reservations of 5 credits, each with its HOLD 5, CAPTURE 4 and RELEASE 1 entries), so
 * it reconciles to zero differences. Then, in interleaved rounds: Reconcile alone (its time), and
 * uniform Reserve → Commit/Release cycles on 1,000 other accounts with and without Reconcile
 * called back to back on the big account meanwhile (their latency: the server must stay free).
 */
const execFileAsync = promisify(execFile);


const HOLDS = arg("holds", 200_000);
const ROUNDS = arg("rounds", 3);
const SECONDS = arg("seconds", 4);
const CLIENTS = 16;
const ACCOUNTS = 1000;
const BIG = "bench-reconcile-big";
const BASE = process.env["BENCH_RECONCILE_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/credit_bench_reconcile";

function step(message: string): void {
  process.stderr.write(`bench:reconcile: ${message}\n`);
}

/** One account with `holds` committed reservations and the entries that explain them. */
async function bigAccount(url: string, accountId: string, holds: number): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const granted = 10n * BigInt(holds);
  await client.query("begin");
  await client.query(`insert into accounts (account_id, created_at) values ($1, now())`, [accountId]);
  const { rows } = await client.query<{ bucket_id: string }>(
    `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
     values ($1, gen_random_uuid(), 'ADJUSTMENT', $2, $3, 0, now() - interval '1 day', null, 'adjustment:bench', now()) returning bucket_id`,
    [accountId, granted.toString(), (granted - 4n * BigInt(holds)).toString()],
  );
  const bucketId = rows[0]!.bucket_id;
  await client.query(
    `insert into ledger_entries (account_id, kind, bucket_id, amount, caller, metadata, created_at) values ($1, 'ADJUST', $2, $3, 'bench', '{}', now())`,
    [accountId, bucketId, granted.toString()],
  );
  await client.query(
    INSERT_SETTLED_RESERVATIONS,
    [accountId, holds],
  );
  await client.query(
    `insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, caller, metadata, created_at)
     select r.account_id, k.kind, $2, r.reservation_id, k.amount, 'bench', '{}', r.created_at
       from reservations r cross join (values ('HOLD', 5), ('CAPTURE', 4), ('RELEASE', 1)) as k(kind, amount)
      where r.account_id = $1 order by r.created_at, k.amount desc`,
    [accountId, bucketId],
  );
  // The usage rollup the service would have written with those entries, its days before today closed as the sweeper closes them.
  for (const sql of REBUILD_ACCOUNT_USAGE) await client.query(sql, [accountId]);
  const now = new Date();
  await client.query(toPositional(CLOSE_USAGE_DAYS), [now, dayOf(now), 100_000]);
  await client.query("commit");
  // Statistics, as autovacuum would gather after such a load (this machine runs without it).
  await client.query("analyze accounts, buckets, reservations, ledger_entries");
  await client.end();
}

/**
 * CPU milliseconds used so far by each Postgres backend of the database: the machine is shared,
 * so what one Reconcile costs is read from its own processes rather than from the clock alone.
 */
async function backendCpuMs(admin: pg.Client): Promise<Map<number, number>> {
  const { rows } = await admin.query<{ pid: number }>(`select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`);
  return new Map(rows.map((r) => [r.pid, processCpuMs(r.pid)]));
}

function cpuSince(before: Map<number, number>, after: Map<number, number>): number {
  let sum = 0;
  for (const [pid, ms] of after) sum += ms - (before.get(pid) ?? 0);
  return sum;
}

async function load(job: LoadJob): Promise<LoadResult> {
  const { stdout } = await execFileAsync(process.execPath, ["--import", "tsx", "bench/load.ts", JSON.stringify(job)], { maxBuffer: 1 << 28 });
  return JSON.parse(stdout) as LoadResult;
}

function latencyOf(results: readonly LoadResult[]): { p50: number; p99: number; max: number; n: number } {
  const sorted = results.flatMap((r) => Object.values(r.latenciesMs).flat()).sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? 0, n: sorted.length };
}

async function main(): Promise<void> {
  step(`fresh database, build, migrations; ${ACCOUNTS} accounts and one with ${HOLDS} settled holds`);
  await recreateDatabase(BASE);
  await buildAndMigrate(BASE);
  await fundAccounts(BASE, "bench-u-", ACCOUNTS, 1_000_000_000n);
  const t0 = performance.now();
  await bigAccount(BASE, BIG, HOLDS);
  step(`big account made in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const { proc, port } = await startServer({ DATABASE_URL: BASE, GRPC_PORT: "0", GRPC_HOST: "127.0.0.1", METRICS_PORT: "0", LOG_LEVEL: "warn" });
  const { admin } = createCreditClients({ baseUrl: `http://127.0.0.1:${port}`, caller: "bench", defaultTimeoutMs: 600_000, retry: { maxAttempts: 1 } });
  const job: LoadJob = { target: `127.0.0.1:${port}`, workload: "cycle", accounts: { prefix: "bench-u-", count: ACCOUNTS }, concurrency: CLIENTS, durationMs: SECONDS * 1000, ratePerWorker: 0 };
  const db = new pg.Client({ connectionString: BASE });
  await db.connect();
  const reconcileOnce = async (): Promise<number> => {
    const started = performance.now();
    const { differences, consistent } = await admin.reconcile({ accountId: BIG });
    if (!consistent || differences.length > 0) throw new Error(`the big account reconciled with ${differences.length} differences`);
    return performance.now() - started;
  };
  /** Reconcile alone: its time, and the CPU the server and Postgres spent on it. */
  const reconcileAlone = async () => {
    const server0 = processCpuMs(proc.pid!);
    const pg0 = await backendCpuMs(db);
    const ms = await reconcileOnce();
    return { ms, serverCpuMs: processCpuMs(proc.pid!) - server0, postgresCpuMs: cpuSince(pg0, await backendCpuMs(db)) };
  };
  try {
    await load({ ...job, durationMs: 2000 }); // warm-up: JIT, pools, caches
    const alone: { ms: number; serverCpuMs: number; postgresCpuMs: number }[] = [];
    const quiet: LoadResult[] = [];
    const busy: LoadResult[] = [];
    const during: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      step(`round ${round + 1}/${ROUNDS}: Reconcile alone, cycles without it, cycles with it back to back`);
      alone.push(await reconcileAlone());
      quiet.push(await load(job));
      let running = true;
      const loop = (async () => {
        while (running) during.push(await reconcileOnce());
      })();
      busy.push(await load(job));
      running = false;
      await loop;
    }
    const sorted = [...alone].sort((a, b) => a.ms - b.ms);
    const median = sorted[Math.floor(sorted.length / 2)]!;
    const report = {
      holds: HOLDS,
      rounds: ROUNDS,
      seconds: SECONDS,
      clients: CLIENTS,
      reconcileAloneMs: { min: sorted[0]!.ms, median: median.ms, max: sorted[sorted.length - 1]!.ms },
      reconcileAloneCpuMs: alone.map((a) => ({ server: a.serverCpuMs, postgres: a.postgresCpuMs })),
      reconcilesDuringLoad: during.length,
      reconcileDuringLoadMedianMs: [...during].sort((a, b) => a - b)[Math.floor(during.length / 2)] ?? 0,
      cyclesWithout: { opsPerSec: quiet.reduce((s, r) => s + r.ops, 0) / (quiet.reduce((s, r) => s + r.elapsedMs, 0) / 1000), latencyMs: latencyOf(quiet) },
      cyclesWith: { opsPerSec: busy.reduce((s, r) => s + r.ops, 0) / (busy.reduce((s, r) => s + r.elapsedMs, 0) / 1000), latencyMs: latencyOf(busy) },
      errors: [...quiet, ...busy].reduce((n, r) => n + Object.values(r.errors).reduce((a, b) => a + b, 0), 0),
    };
    mkdirSync("bench/results", { recursive: true });
    writeFileSync("bench/results/reconcile.json", JSON.stringify(report, null, 2));
    const f = (n: number) => n.toFixed(1);
    const l = (x: { p50: number; p99: number; max: number }) => `p50 ${f(x.p50)} / p99 ${f(x.p99)} / max ${f(x.max)} ms`;
    console.log(`Reconcile of ${HOLDS} settled holds alone: min ${f(report.reconcileAloneMs.min)} / median ${f(report.reconcileAloneMs.median)} / max ${f(report.reconcileAloneMs.max)} ms`);
    console.log(`  CPU per Reconcile, server / Postgres: ${alone.map((a) => `${a.serverCpuMs} / ${a.postgresCpuMs} ms`).join(", ")}`);
    console.log(`${report.reconcilesDuringLoad} Reconciles back to back during the loaded rounds (median ${f(report.reconcileDuringLoadMedianMs)} ms)`);
    console.log(`other accounts' cycles, ${CLIENTS} clients, without Reconcile: ${f(report.cyclesWithout.opsPerSec)} /s, ${l(report.cyclesWithout.latencyMs)}`);
    console.log(`                                      with Reconcile running: ${f(report.cyclesWith.opsPerSec)} /s, ${l(report.cyclesWith.latencyMs)}`);
    console.log(`p99 difference: ${f(report.cyclesWith.latencyMs.p99 - report.cyclesWithout.latencyMs.p99)} ms; errors: ${report.errors}`);
    if (report.errors > 0) process.exitCode = 1;
  } finally {
    await db.end();
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill("SIGTERM");
    await exited;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
