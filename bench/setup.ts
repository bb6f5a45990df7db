import { execFile, spawn, type ChildProcess } from "node:child_process";
import { readdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import pg from "pg";
import { createCreditClients, type LimitMode, type SpendPeriod } from "../src/client/index.js";
import { freePort } from "../test/support/redis-server.js";
import { childrenCpuMs, PostgresCpuMeter } from "./proc.js";

const run = promisify(execFile);

export function pgBin(tool: string): string {
  const version = readdirSync("/etc/postgresql")[0];
  return `/usr/lib/postgresql/${version}/bin/${tool}`;
}

export async function recreateDatabase(url: string): Promise<void> {
  const admin = new URL(url);
  const name = admin.pathname.slice(1);
  admin.pathname = "/postgres";
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  await client.query(`drop database if exists "${name}" with (force)`);
  await client.query(`create database "${name}"`);
  await client.end();
}

/**
 * The server's V8 heap limits in production (the Dockerfile's CMD uses the same): the old
 * generation capped at 128 MB keeps the resident set around 150 MB under load, where V8 would
 * otherwise let garbage grow it past 200 MB; the live heap is far below the cap. Semi-spaces
 * capped at 16 MB: V8 (Node 24) grows them to 32 MB under load, and a young generation larger
 * than the old generation's headroom (about 45 MB at 35 MB live) makes V8 start marking again as
 * soon as a mark-compact ends (docs/decisions.md, "Heap cap"). (8 MB semi-spaces saved another
 * 20 MB but cost GetBalance about 20 % in scavenges.) Scavenges on the main thread alone: on two
 * cores shared with Postgres, a parallel scavenge waited for helper threads that had no core and
 * took up to 5–8 ms (docs/decisions.md, "Heap cap").
 */
export const SERVER_NODE_FLAGS = ["--max-old-space-size=128", "--max-semi-space-size=16", "--no-parallel-scavenge"];

/** The container's environment beside those flags (Dockerfile): two malloc arenas (docs/decisions.md, "Heap cap"). */
export const SERVER_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2" };

/** Builds dist/ and applies migrations, as a deployment does before starting servers. */
export async function buildAndMigrate(databaseUrl: string): Promise<void> {
  await run("npm", ["run", "build"], { maxBuffer: 1 << 24 });
  await run(process.execPath, ["dist/migrate.js"], { env: { ...process.env, DATABASE_URL: databaseUrl }, maxBuffer: 1 << 24 });
}

/** Starts the built service (dist/main.js) as its own process; resolves when it logs its port. */
export function startServer(env: Record<string, string>, nodeArgs: readonly string[] = []): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(process.execPath, [...SERVER_NODE_FLAGS, ...nodeArgs, "dist/main.js"], {
    env: { ...process.env, ...SERVER_ENV, DB_MIGRATE: "false", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on("line", (line) => {
      try {
        const entry = JSON.parse(line) as { msg?: string; port?: number };
        if (entry.msg === "credit service listening") resolve({ proc, port: entry.port! });
      } catch {
        // not a log line
      }
    });
    proc.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
}

/**
 * Funds `count` accounts with one large ADJUSTMENT bucket each, in one set-based statement per
 * table, with the matching ledger entries so that reconciliation holds from the start.
 */
export async function fundAccounts(url: string, prefix: string, count: number, credits: bigint): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query("begin");
  await client.query(`insert into accounts (account_id, created_at) select $1 || g, now() from generate_series(1, $2) g`, [prefix, count]);
  await client.query(
    `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
     select $1 || g, gen_random_uuid(), 'ADJUSTMENT', $3, $3, 0, now() - interval '1 minute', null, 'adjustment:bench', now()
       from generate_series(1, $2) g`,
    [prefix, count, credits.toString()],
  );
  await client.query(
    `insert into ledger_entries (account_id, kind, bucket_id, amount, caller, metadata, created_at)
     select account_id, 'ADJUST', bucket_id, granted, 'bench', '{}', now() from buckets where account_id like $1 || '%'`,
    [prefix],
  );
  await client.query("commit");
  await client.end();
}

/** One spend limit that setSpendLimits gives every account of a set (SetSpendLimit's fields but the account and key). */
export interface BenchSpendLimit {
  readonly memberId: string;
  readonly period: SpendPeriod;
  readonly maxCredits: bigint;
  readonly mode: LimitMode;
  readonly timeZone: string;
}

/**
 * Gives accounts `${prefix}1` … `${prefix}${count}` each of `limits` through the admin API
 * (SetSpendLimit, as the dashboard does: the limit's backfill, its change record and event
 * included), `inFlight` accounts at a time, one account's limits one after the other (they would
 * only queue on its lock). The idempotency keys are derived from account, member and period, so
 * a repeated setup replays rather than sets again. Any refusal throws: the A/B must not run on a
 * set that lacks its limits. Returns the number of limits set.
 */
export async function setSpendLimits(target: string, prefix: string, count: number, limits: readonly BenchSpendLimit[], inFlight = 32): Promise<number> {
  const { admin } = createCreditClients({ baseUrl: `http://${target}`, caller: "bench", defaultTimeoutMs: 60_000 });
  let next = 1;
  let set = 0;
  const worker = async () => {
    while (next <= count) {
      const accountId = `${prefix}${next++}`;
      for (const limit of limits) {
        await admin.setSpendLimit({ accountId, ...limit, idempotencyKey: `bench-limit:${accountId}:${limit.memberId}:${limit.period}` });
        set += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker));
  return set;
}

/** The spend limits of accounts whose id starts with `prefix`: how many, how many have counted a capture, and their counters' sum. */
export async function spendCounters(url: string, prefix: string): Promise<{ limits: number; counting: number; used: string }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query(
      `select count(*)::int as limits, (count(*) filter (where used > 0))::int as counting, coalesce(sum(used), 0)::text as used
         from spend_limits where account_id like $1 || '%'`,
      [prefix],
    );
    return rows[0] as { limits: number; counting: number; used: string };
  } finally {
    await client.end();
  }
}

export async function pgbenchInit(url: string, scale: number): Promise<void> {
  await recreateDatabase(url);
  await run(pgBin("pgbench"), ["-i", "-q", "-s", String(scale), url], { maxBuffer: 1 << 24 });
}

export interface PgbenchRun {
  /** Transactions per second, excluding connection time. */
  readonly tps: number;
  readonly transactions: number;
  /** CPU of pgbench itself, and of Postgres for its database (PostgresCpuMeter), in ms. */
  readonly pgbenchCpuMs: number;
  readonly postgresCpuMs: number;
}

/** pgbench's built-in tpcb-like script, with the CPU it and Postgres spent. */
export async function pgbench(url: string, clients: number, seconds: number): Promise<PgbenchRun> {
  const meter = new PostgresCpuMeter([new URL(url).pathname.slice(1)]);
  const own0 = childrenCpuMs();
  let stdout: string;
  let postgresCpuMs: number;
  try {
    ({ stdout } = await run(pgBin("pgbench"), ["-n", "-b", "tpcb-like", "-c", String(clients), "-j", "2", "-T", String(seconds), url], {
      maxBuffer: 1 << 24,
    }));
  } finally {
    postgresCpuMs = meter.stop();
  }
  const pgbenchCpuMs = childrenCpuMs() - own0;
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
  const done = /number of transactions actually processed: (\d+)/.exec(stdout);
  if (!tps || !done) throw new Error(`cannot read pgbench output: ${stdout}`);
  return { tps: Number(tps[1]), transactions: Number(done[1]), pgbenchCpuMs, postgresCpuMs };
}

/**
 * The bench's own Redis (`BENCH_REDIS_PORT`, else a free port), nothing on disk, so that its CPU
 * can be measured and the bench never shares a Redis with other work on the machine.
 */
export async function startRedis(): Promise<{ proc: ChildProcess; url: string }> {
  const port = Number(process.env["BENCH_REDIS_PORT"] ?? (await freePort()));
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on("line", (line) => {
      if (/Ready to accept connections/.test(line)) resolve();
    });
    proc.on("exit", (code) => reject(new Error(`redis-server on port ${port} exited with ${code}`)));
  });
  return { proc, url: `redis://127.0.0.1:${port}` };
}


/**
 * Set-based reconciliation of the whole bench database: every bucket's granted, remaining and
 * held against its entries, every reservation's open holds against its entries, and every spend
 * limit's counter against the captures of its scope's holds that started in its period (as the
 * Reconcile RPC checks it, src/store/reconcile-scan.ts RECONCILE_SPEND). Returns the number of
 * rows that differ.
 */
export async function reconcileAll(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const buckets = await client.query(`
    with s as (
      select account_id, bucket_id,
        sum(amount) filter (where kind in ('GRANT', 'ADJUST')) as granted,
        coalesce(sum(amount) filter (where kind in ('CAPTURE', 'EXPIRE')), 0) as spent,
        coalesce(sum(amount) filter (where kind = 'HOLD'), 0) as holds,
        coalesce(sum(amount) filter (where kind in ('RELEASE', 'CAPTURE')), 0) as unholds
      from ledger_entries group by account_id, bucket_id)
    select count(*)::int as n from buckets b join s using (account_id, bucket_id)
     where b.granted <> s.granted or b.remaining <> s.granted - s.spent or b.held <> s.holds - s.unholds`);
  const reservations = await client.query(`
    with s as (
      select account_id, reservation_id,
        coalesce(sum(amount) filter (where kind = 'HOLD'), 0) - coalesce(sum(amount) filter (where kind in ('RELEASE', 'CAPTURE')), 0) as open,
        coalesce(sum(amount) filter (where kind = 'CAPTURE'), 0) as captured
      from ledger_entries where reservation_id is not null group by account_id, reservation_id),
    r as (
      select account_id, reservation_id, captured_amount,
        coalesce((select sum((a ->> 'amount')::bigint) from jsonb_array_elements(allocations) a), 0) as open
      from reservations)
    select count(*)::int as n from r join s using (account_id, reservation_id) where r.open <> s.open or r.captured_amount <> s.captured`);
  // A limit's captures: its account's holds of its member (any member, for the account-wide
  // limit "") created at or after its period start, joined to their CAPTURE entries.
  const spend = await client.query(`
    with s as (
      select l.account_id, l.member_id, l.period, l.used, coalesce(sum(e.amount), 0) as captured
        from spend_limits l
        left join reservations r
          on r.account_id = l.account_id and r.created_at >= l.period_start and (l.member_id = '' or r.member_id = l.member_id)
        left join ledger_entries e
          on e.account_id = r.account_id and e.reservation_id = r.reservation_id and e.kind = 'CAPTURE'
       group by l.account_id, l.member_id, l.period, l.used)
    select count(*)::int as n from s where used <> captured`);
  await client.end();
  return (buckets.rows[0] as { n: number }).n + (reservations.rows[0] as { n: number }).n + (spend.rows[0] as { n: number }).n;
}
