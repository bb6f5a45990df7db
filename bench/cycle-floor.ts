import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { type sendUnaryData, Server, ServerCredentials, type ServerUnaryCall, type ServiceDefinition, status } from "@grpc/grpc-js";
import pg from "pg";
import { CommitRequestSchema, ReleaseRequestSchema, ReserveRequestSchema, ReserveResponseSchema } from "../src/gen/credit/v1/credit_service_pb.js";
import { ReservationSchema } from "../src/gen/credit/v1/types_pb.js";
import { arg } from "./args.js";
import type { LoadJob } from "./load.js";
import { measuredLoad, type Run } from "./measured-load.js";
import { buildAndMigrate, fundAccounts, pgbench, pgbenchInit, type PgbenchRun, recreateDatabase, SERVER_ENV, SERVER_NODE_FLAGS, startRedis, startServer } from "./setup.js";

/**
 * npm run bench:cycle-floor [-- --rounds N] [--seconds N] [--accounts N] [--no-service]
 *
 * The floor under issue 14's gauge, `cycle-cpu/pgbench-cpu` = (server + Postgres + Redis CPU per
 * uniform Reserve→Commit cycle) / (Postgres CPU per pgbench tpcb transaction): what the same
 * cycles cost when the server does nothing but carry them. A bare grpc-js server (this file with
 * --serve, its own process, the container's heap flags) answers Reserve, Commit and Release at
 * the service's paths, reading only the fields it needs off the wire, and makes each call one
 * autocommitted statement on a pg pool: Reserve holds the credits on the account and inserts the
 * hold; Commit settles the hold, charges the account and inserts one ledger entry; Release
 * returns the hold. No idempotency, no Redis, no buckets, no events, no rollup, no batching: two
 * durable transactions per cycle and nothing else. The load generator is bench/run.ts's own
 * (bench/load.ts, the same cycles at 16 and 64 clients), and pgbench tpcb-like runs between them,
 * as in bench/run.ts. Unless --no-service, the service itself (built, migrated, its own Redis)
 * runs the same cycles in the same rounds, so that the two ratios are read side by side.
 */

const ROUNDS = arg("rounds", 3);
const SECONDS = arg("seconds", 5);
const ACCOUNTS = arg("accounts", 10_000);
const CLIENTS = [16, 64];
const withService = !process.argv.includes("--no-service");
const BASE = process.env["BENCH_FLOOR_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/credit_bench_floor";
const FLOOR_DB = new URL(BASE).pathname.slice(1);
const SERVICE_URL = BASE.replace(/\/[^/]*$/, `/${FLOOR_DB}_service`);
const PGBENCH_URL = BASE.replace(/\/[^/]*$/, `/${FLOOR_DB}_pgbench`);
const PREFIX = "floor-";

const SCHEMA = [
  `create table floor_accounts (account_id text primary key, balance bigint not null check (balance >= 0), held bigint not null default 0 check (held >= 0 and held <= balance))`,
  `create table floor_holds (reservation_id uuid primary key, account_id text not null, amount bigint not null, state text not null default 'HELD')`,
  `create table floor_entries (entry_id bigserial primary key, account_id text not null, reservation_id uuid not null, amount bigint not null)`,
];

/** Each call's one statement (autocommit: one durable transaction), prepared by name. */
const RESERVE = {
  name: "floor_reserve",
  text: `with a as (update floor_accounts set held = held + $2 where account_id = $1 and balance - held >= $2 returning account_id)
         insert into floor_holds (reservation_id, account_id, amount) select gen_random_uuid(), account_id, $2 from a returning reservation_id::text`,
};
const COMMIT = {
  name: "floor_commit",
  text: `with h as (update floor_holds set state = 'COMMITTED' where reservation_id = $1 and state = 'HELD' returning account_id, amount),
           a as (update floor_accounts f set held = f.held - h.amount, balance = f.balance - least($2::bigint, h.amount) from h where f.account_id = h.account_id returning f.account_id)
         insert into floor_entries (account_id, reservation_id, amount) select account_id, $1, $2 from a returning 1`,
};
const RELEASE = {
  name: "floor_release",
  text: `with h as (update floor_holds set state = 'RELEASED' where reservation_id = $1 and state = 'HELD' returning account_id, amount)
         update floor_accounts f set held = f.held - h.amount from h where f.account_id = h.account_id returning 1`,
};

/** The fields a request carries that the floor reads (field number → string or int64 as text). */
function fieldsOf(bytes: Buffer, wanted: readonly number[]): Map<number, string> {
  const out = new Map<number, string>();
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (!wanted.includes(field)) r.skip(wire);
    else if (wire === WireType.Varint) out.set(field, r.int64().toString());
    else out.set(field, r.string());
  }
  return out;
}

/** ReserveResponse { reservation { reservation_id } }: all the load generator reads of it. */
function reserveResponse(reservationId: string): Buffer {
  const w = new BinaryWriter();
  w.tag(ReserveResponseSchema.field.reservation.number, WireType.LengthDelimited).fork();
  w.tag(ReservationSchema.field.reservationId.number, WireType.LengthDelimited).string(reservationId);
  w.join();
  return Buffer.from(w.finish());
}

function serve(): void {
  const pool = new pg.Pool({ connectionString: BASE, max: arg("pool", 20) });
  const unary = (path: string) => ({
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  });
  const definition: ServiceDefinition = {
    reserve: unary("/credit.v1.CreditService/Reserve"),
    commit: unary("/credit.v1.CreditService/Commit"),
    release: unary("/credit.v1.CreditService/Release"),
  };
  type Handler = (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => void;
  const handle =
    (run: (request: Buffer) => Promise<Buffer | null>): Handler =>
    (call, callback) =>
      run(call.request).then(
        (answer) => (answer ? callback(null, answer) : callback({ code: status.FAILED_PRECONDITION, details: "no such account, hold or credits" })),
        (err: unknown) => callback({ code: status.INTERNAL, details: String(err) }),
      );
  const accountField = ReserveRequestSchema.field.accountId.number;
  const costField = ReserveRequestSchema.field.amount.number;
  const heldField = CommitRequestSchema.field.reservationId.number;
  const actualField = CommitRequestSchema.field.amount.number;
  const releasedField = ReleaseRequestSchema.field.reservationId.number;
  const server = new Server();
  server.addService(definition, {
    reserve: handle(async (request) => {
      const f = fieldsOf(request, [accountField, costField]);
      const { rows } = await pool.query<{ reservation_id: string }>({ ...RESERVE, values: [f.get(accountField), f.get(costField) ?? "0"] });
      return rows[0] ? reserveResponse(rows[0].reservation_id) : null;
    }),
    commit: handle(async (request) => {
      const f = fieldsOf(request, [heldField, actualField]);
      const { rowCount } = await pool.query({ ...COMMIT, values: [f.get(heldField), f.get(actualField) ?? "0"] });
      return rowCount ? Buffer.alloc(0) : null;
    }),
    release: handle(async (request) => {
      const f = fieldsOf(request, [releasedField]);
      const { rowCount } = await pool.query({ ...RELEASE, values: [f.get(releasedField)] });
      return rowCount ? Buffer.alloc(0) : null;
    }),
  } as Record<string, Handler>);
  server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    process.send!({ type: "listening", port });
  });
}

function startFloor(): Promise<{ pid: number; port: number; stop: () => void }> {
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, "--import", "tsx", fileURLToPath(import.meta.url), "--serve"], {
    env: { ...process.env, ...SERVER_ENV, BENCH_FLOOR_DATABASE_URL: BASE },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  process.on("exit", () => child.kill("SIGKILL"));
  return new Promise((resolve, reject) => {
    child.once("message", (m: { type: string; port: number }) => resolve({ pid: child.pid!, port: m.port, stop: () => child.kill("SIGTERM") }));
    child.once("exit", (code) => reject(new Error(`floor server exited with ${code}`)));
  });
}

async function setUpFloor(): Promise<void> {
  await recreateDatabase(BASE);
  const client = new pg.Client({ connectionString: BASE });
  await client.connect();
  try {
    for (const sql of SCHEMA) await client.query(sql);
    await client.query(`insert into floor_accounts (account_id, balance) select $1 || g, 1000000000 from generate_series(1, $2) g`, [PREFIX, ACCOUNTS]);
    await client.query("analyze");
  } finally {
    await client.end();
  }
}

/** The errors of a set of runs, by method and code (a floor that refuses calls measures nothing). */
function errors(runs: readonly Run[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of runs) for (const [k, n] of Object.entries(r.result.errors)) out[k] = (out[k] ?? 0) + n;
  return out;
}

function step(message: string): void {
  process.stderr.write(`bench:cycle-floor: ${message}\n`);
}

async function main(): Promise<void> {
  step(`databases ${FLOOR_DB}${withService ? `, ${FLOOR_DB}_service` : ""} and ${FLOOR_DB}_pgbench`);
  await setUpFloor();
  await pgbenchInit(PGBENCH_URL, Math.max(...CLIENTS));
  const stops: (() => void)[] = [];
  let service: { pid: number; redis: number; target: string } | null = null;
  if (withService) {
    await recreateDatabase(SERVICE_URL);
    await buildAndMigrate(SERVICE_URL);
    const redis = await startRedis();
    stops.push(() => redis.proc.kill("SIGTERM"));
    const { proc, port } = await startServer({ DATABASE_URL: SERVICE_URL, REDIS_URL: redis.url, GRPC_PORT: "0", GRPC_HOST: "127.0.0.1", METRICS_PORT: "0", LOG_LEVEL: "warn", DB_POOL_MAX: "20" });
    stops.push(() => proc.kill("SIGTERM"));
    await fundAccounts(SERVICE_URL, PREFIX, ACCOUNTS, 1_000_000_000n);
    service = { pid: proc.pid!, redis: redis.proc.pid!, target: `127.0.0.1:${port}` };
  }
  const floor = await startFloor();
  stops.push(floor.stop);
  try {
    const job = (target: string, concurrency: number, durationMs = SECONDS * 1000): LoadJob => ({
      target,
      workload: "cycle",
      accounts: { prefix: PREFIX, count: ACCOUNTS },
      concurrency,
      durationMs,
      ratePerWorker: 0,
    });
    const floorRun = (clients: number, ms?: number) => measuredLoad(job(`127.0.0.1:${floor.port}`, clients, ms), { server: floor.pid }, [FLOOR_DB]);
    const serviceRun = (clients: number, ms?: number) =>
      measuredLoad(job(service!.target, clients, ms), { server: service!.pid, redis: service!.redis }, [`${FLOOR_DB}_service`]);
    step("warm-up (JIT, pools, prepared statements)");
    await floorRun(16, 2000);
    if (service) await serviceRun(16, 2000);
    const report: Record<string, unknown> = {};
    for (const clients of CLIENTS) {
      step(`${clients} clients: pgbench, floor${service ? ", service" : ""} (${ROUNDS} × ${SECONDS} s each, interleaved)`);
      const runs = { pgbench: [] as PgbenchRun[], floor: [] as Run[], service: [] as Run[] };
      for (let round = 0; round < ROUNDS; round++) {
        runs.pgbench.push(await pgbench(PGBENCH_URL, clients, SECONDS));
        runs.floor.push(await floorRun(clients));
        if (service) runs.service.push(await serviceRun(clients));
      }
      const tx = runs.pgbench.reduce((a, r) => a + r.transactions, 0);
      const pgbenchCpu = runs.pgbench.reduce((a, r) => a + r.postgresCpuMs, 0) / tx;
      const figures = (rs: Run[]) => {
        const cycles = rs.reduce((a, r) => a + r.result.ops, 0);
        const per = (f: (r: Run) => number) => rs.reduce((a, r) => a + f(r), 0) / cycles;
        const server = per((r) => r.serverCpuMs);
        const postgres = per((r) => r.postgresCpuMs);
        const redis = per((r) => r.redisCpuMs);
        const seconds = rs.reduce((a, r) => a + r.result.elapsedMs, 0) / 1000;
        return { cyclesPerSec: cycles / seconds, cpuMsPerCycle: { server, postgres, redis }, ratio: (server + postgres + redis) / pgbenchCpu, errors: errors(rs) };
      };
      const row = {
        pgbench: { tps: runs.pgbench.reduce((a, r) => a + r.tps, 0) / ROUNDS, postgresCpuMsPerTx: pgbenchCpu },
        floor: figures(runs.floor),
        ...(service ? { service: figures(runs.service) } : {}),
      };
      report[`@${clients}`] = row;
      const line = (name: string, f: ReturnType<typeof figures>) =>
        `  ${name.padEnd(8)} ${f.cyclesPerSec.toFixed(0)} cycles/s; CPU ms per cycle server ${f.cpuMsPerCycle.server.toFixed(3)}, Postgres ${f.cpuMsPerCycle.postgres.toFixed(3)}, Redis ${f.cpuMsPerCycle.redis.toFixed(3)}; cycle-cpu/pgbench-cpu ${f.ratio.toFixed(2)}; errors ${JSON.stringify(f.errors)}`;
      console.log(`@${clients} clients: pgbench ${row.pgbench.tps.toFixed(0)} TPS, Postgres ${pgbenchCpu.toFixed(3)} ms per transaction`);
      console.log(line("floor", row.floor));
      if (row.service) console.log(line("service", row.service));
    }
    console.log(JSON.stringify({ rounds: ROUNDS, seconds: SECONDS, accounts: ACCOUNTS, ...report }));
  } finally {
    for (const stop of stops) stop();
  }
}

if (process.argv.includes("--serve")) serve();
else
  void main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
