import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CreditService, WatchBalanceRequestSchema } from "../src/gen/credit/v1/credit_service_pb.js";
import { encodeMessage } from "../src/rpc/binary-encoder.js";
import { framed, startWatchers } from "./watchers.js";
import { peakRssMb, percentile, PostgresCpuMeter, processCpuMs } from "./proc.js";
import { buildAndMigrate, fundAccounts, recreateDatabase, startServer } from "./setup.js";
import { arg } from "./args.js";

/**
 * npm run bench:watch [-- --streams N] [--accounts N] [--seconds N] [--writers N] [--heap MB] [--semi MB] [--quick]
 * WatchBalance under write load: one built server process (dist/main.js, the container's heap flags)
 * on a fresh database; `streams` watchers spread evenly over `accounts` accounts, 100 per
 * connection, opened by a worker thread speaking HTTP/2 (bench/watch-clients.ts); `writers` loops run Reserve → Commit cycles on random accounts (one cycle per
 * account at a time, so each write's sequence is known). Reported: cycles/s without watchers
 * and with them, commit-to-watcher latency (a write's answer received → each watcher of its
 * account holding a state at least that new; 0 when the watcher had it first), the server's peak
 * resident set. Needs the local Postgres and a Redis (REDIS_URL, default 127.0.0.1:6379).
 */


const quick = process.argv.includes("--quick");
const STREAMS = arg("streams", quick ? 2000 : 10_000);
const ACCOUNTS = arg("accounts", quick ? 200 : 1000);
const SECONDS = arg("seconds", quick ? 10 : 30);
const WRITERS = arg("writers", 32);
const PER_CONNECTION = 100;
const DATABASE_URL = process.env["BENCH_WATCH_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/credit_bench_watch";
const PREFIX = "watch-bench-";
/** Keys unique to this run: Redis outlives the database the run recreates. */
const RUN = randomUUID();

/** One account: the sequence its last answered write made. */
interface Account {
  readonly id: string;
  readonly index: number;
  sequence: bigint;
  busy: boolean;
}

async function main(): Promise<void> {
  await recreateDatabase(DATABASE_URL);
  await buildAndMigrate(DATABASE_URL);
  await fundAccounts(DATABASE_URL, PREFIX, ACCOUNTS, 10n ** 12n);

  // --heap N, --semi N: the server's old-space and semi-space caps in MB instead of the container's (SERVER_NODE_FLAGS; the later flag wins).
  // BENCH_CPU_PROF=dir: a CPU profile of the server, written there when it stops.
  const heap = arg("heap", 0);
  const semi = arg("semi", 0);
  const profile = process.env["BENCH_CPU_PROF"];
  const { proc: server, port } = await startServer(
    {
      DATABASE_URL,
      GRPC_PORT: "0",
      METRICS_ENABLED: "false",
      LOG_LEVEL: "warn",
      SWEEPER_ENABLED: "false",
      GRPC_MAX_STREAMING_CALLS: String(STREAMS + 100),
      GRPC_MAX_CONNECTIONS: String(Math.ceil(STREAMS / PER_CONNECTION) + 100),
      GRPC_CONNECTION_IDLE_MS: "0",
      GRPC_CONNECTION_MAX_AGE_MS: "0",
    },
    [...(heap > 0 ? [`--max-old-space-size=${heap}`] : []), ...(semi > 0 ? [`--max-semi-space-size=${semi}`] : []), ...(profile ? ["--cpu-prof", `--cpu-prof-dir=${profile}`] : [])],
  );
  process.on("exit", () => server.kill("SIGKILL"));
  const baseUrl = `http://127.0.0.1:${port}`;
  const writer = createClient(CreditService, createGrpcTransport({ baseUrl }));
  const accounts: Account[] = Array.from({ length: ACCOUNTS }, (_, i) => ({ id: `${PREFIX}${i + 1}`, index: i, sequence: 0n, busy: false }));

  /** Each account's writes answered in the measured window: the sequence each made and when (absolute ms). */
  const answers: { sequence: number; at: number }[][] = accounts.map(() => []);
  let measuring = false;
  /** CPU ms per cycle of the server, of this process (the clients: writers and watchers) and of Postgres. */
  let cpu = "";
  const cycles = async (seconds: number): Promise<number> => {
    const end = performance.now() + seconds * 1000;
    let done = 0;
    const before = [processCpuMs(server.pid!), processCpuMs(process.pid)];
    const postgres = new PostgresCpuMeter([new URL(DATABASE_URL).pathname.slice(1)]);
    const loop = async () => {
      while (performance.now() < end) {
        const free = accounts.filter((a) => !a.busy);
        const index = Math.floor(Math.random() * free.length);
        const account = free[index]!;
        account.busy = true;
        try {
          // Each answered write is the account's next change record: its sequence is known.
          const r = await writer.reserve({ accountId: account.id, idempotencyKey: `r-${RUN}-${account.id}-${account.sequence}`, cost: { case: "amount", value: 7n } });
          account.sequence += 1n;
          answered(account);
          const id = r.reservation!.reservationId;
          await writer.commit({ reservationId: id, idempotencyKey: `c-${id}`, actual: { case: "amount", value: 5n } });
          account.sequence += 1n;
          answered(account);
          done += 1;
        } finally {
          account.busy = false;
        }
      }
    };
    await Promise.all(Array.from({ length: WRITERS }, loop));
    const after = [processCpuMs(server.pid!) - before[0]!, processCpuMs(process.pid) - before[1]!, postgres.stop()];
    const per = after.map((v) => (v / Math.max(1, done)).toFixed(2));
    cpu = `CPU ms per cycle: server ${per[0]}, clients ${per[1]}, postgres ${per[2]}`;
    return done / seconds;
  };
  const answered = (account: Account) => {
    if (measuring) answers[account.index]!.push({ sequence: Number(account.sequence), at: performance.timeOrigin + performance.now() });
  };

  // Warm up, then the write rate with no watcher.
  await cycles(3);
  const without = await cycles(SECONDS);
  console.log(`without watchers: ${without.toFixed(0)} cycles/s; ${cpu}; server peak RSS ${peakRssMb(server.pid!).toFixed(0)} MB`);

  // The watchers: STREAMS over the accounts, PER_CONNECTION per connection, in a worker thread.
  const requests = accounts.map((a) => framed(encodeMessage(WatchBalanceRequestSchema, create(WatchBalanceRequestSchema, { accountId: a.id }))));
  const { opened, dump, close } = startWatchers({ authority: baseUrl, requests, streams: STREAMS, perConnection: PER_CONNECTION });
  const openMs = await opened;
  console.log(`${STREAMS} watchers over ${ACCOUNTS} accounts open in ${(openMs / 1000).toFixed(1)} s; server peak RSS ${peakRssMb(server.pid!).toFixed(0)} MB`);

  await dump([], 0); // what the watchers got while opening is not measured
  measuring = true;
  const withWatchers = await cycles(SECONDS);
  measuring = false;
  console.log(`with watchers: ${withWatchers.toFixed(0)} cycles/s (${(withWatchers / without).toFixed(2)} × without); ${cpu}`);
  // Every watcher's records, once each has its account's last write (or 5 s later).
  const got = await dump(accounts.map((a) => Number(a.sequence)), 5000);
  const latencies: number[] = [];
  let unreached = 0;
  let first = 0;
  const messages = got.sequences.reduce((n, s) => n + s.length, 0);
  for (let w = 0; w < STREAMS; w++) {
    const sequences = got.sequences[w]!;
    const times = got.times[w]!;
    let j = 0;
    // A write's latency for this watcher: from its answer to the first message at least as new (0 if that came first).
    for (const answer of answers[w % ACCOUNTS]!) {
      while (j < sequences.length && sequences[j]! < answer.sequence) j++;
      if (j === sequences.length) unreached += 1;
      else {
        if (times[j]! <= answer.at) first += 1;
        latencies.push(Math.max(0, times[j]! - answer.at));
      }
    }
  }
  const sorted = latencies.sort((a, b) => a - b);
  console.log(
    `commit-to-watcher latency over ${sorted.length} deliveries: p50 ${percentile(sorted, 50).toFixed(1)} ms, p99 ${percentile(sorted, 99).toFixed(1)} ms, max ${(sorted.at(-1) ?? 0).toFixed(1)} ms (${((first / Math.max(1, sorted.length)) * 100).toFixed(1)} % held by the watcher before the writer had its answer); ${unreached} not delivered within 5 s of the end`,
  );
  console.log(`messages received: ${messages} (${(messages / (withWatchers * SECONDS)).toFixed(1)} per cycle, ${(messages / STREAMS).toFixed(1)} per watcher)`);
  console.log(`server peak RSS ${peakRssMb(server.pid!).toFixed(0)} MB`);
  close();
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
  process.exit(0);
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
