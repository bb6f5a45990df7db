import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CreditService } from "../src/gen/credit/v1/credit_service_pb.js";
import { peakRssMb, percentile, PostgresCpuMeter, processCpuMs } from "./proc.js";
import { fundAccounts, recreateDatabase, SERVER_NODE_FLAGS } from "./setup.js";

/**
 * npm run bench:watch [-- --streams N] [--accounts N] [--seconds N] [--writers N] [--heap MB] [--quick]
 * WatchBalance under write load: one server process (src/main.ts, the container's heap flags)
 * on a fresh database; `streams` watchers spread evenly over `accounts` accounts, 100 per
 * connection; `writers` loops run Reserve → Commit cycles on random accounts (one cycle per
 * account at a time, so each write's sequence is known). Reported: cycles/s without watchers
 * and with them, commit-to-watcher latency (a write's answer received → each watcher of its
 * account holding a state at least that new; 0 when the watcher had it first), the server's peak
 * resident set. Needs the local Postgres and a Redis (REDIS_URL, default 127.0.0.1:6379).
 */

function arg(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
}

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

interface Pending {
  readonly sequence: bigint;
  readonly answeredAt: number;
}

/** One account: the sequence its last answered write made, and where each of its watchers is. */
interface Account {
  readonly id: string;
  sequence: bigint;
  busy: boolean;
  readonly watchers: { seen: bigint; pending: Pending[] }[];
}

async function main(): Promise<void> {
  await recreateDatabase(DATABASE_URL);
  await new Promise<void>((resolve, reject) => {
    const migrate = spawn(process.execPath, ["--import", "tsx", "src/migrate.ts"], { env: { ...process.env, DATABASE_URL }, stdio: "inherit" });
    migrate.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`migrate exited ${code}`))));
  });
  await fundAccounts(DATABASE_URL, PREFIX, ACCOUNTS, 10n ** 12n);

  // --heap N: the server's old-space cap in MB instead of the container's (SERVER_NODE_FLAGS).
  const heap = arg("heap", 0);
  const flags = heap > 0 ? SERVER_NODE_FLAGS.map((f) => (f.startsWith("--max-old-space-size=") ? `--max-old-space-size=${heap}` : f)) : SERVER_NODE_FLAGS;
  const server = spawn(process.execPath, [...flags, "--import", "tsx", "src/main.ts"], {
    env: {
      ...process.env,
      DATABASE_URL,
      DB_MIGRATE: "false",
      GRPC_PORT: "0",
      METRICS_ENABLED: "false",
      LOG_LEVEL: "warn",
      SWEEPER_ENABLED: "false",
      GRPC_MAX_STREAMING_CALLS: String(STREAMS + 100),
      GRPC_MAX_CONNECTIONS: String(Math.ceil(STREAMS / PER_CONNECTION) + 100),
      GRPC_CONNECTION_IDLE_MS: "0",
      GRPC_CONNECTION_MAX_AGE_MS: "0",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  process.on("exit", () => server.kill("SIGKILL"));
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: server.stdout! }).on("line", (line) => {
      try {
        const entry = JSON.parse(line) as { msg?: string; port?: number };
        if (entry.msg === "credit service listening") resolve(entry.port!);
      } catch {
        // not a log line
      }
    });
    server.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const writer = createClient(CreditService, createGrpcTransport({ baseUrl }));
  const accounts: Account[] = Array.from({ length: ACCOUNTS }, (_, i) => ({ id: `${PREFIX}${i + 1}`, sequence: 0n, busy: false, watchers: [] }));

  const latencies: number[] = [];
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
        const account = free[Math.floor(Math.random() * free.length)]!;
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
  /** A write was answered: watchers already past it count 0, the others wait for it. */
  const answered = (account: Account) => {
    const now = performance.now();
    for (const w of account.watchers) {
      if (w.seen >= account.sequence) latencies.push(0);
      else w.pending.push({ sequence: account.sequence, answeredAt: now });
    }
  };

  // Warm up, then the write rate with no watcher.
  await cycles(3);
  const without = await cycles(SECONDS);
  console.log(`without watchers: ${without.toFixed(0)} cycles/s; ${cpu}`);

  // The watchers: STREAMS over the accounts, PER_CONNECTION per connection.
  const clients: Client<typeof CreditService>[] = [];
  for (let i = 0; i < Math.ceil(STREAMS / PER_CONNECTION); i++) clients.push(createClient(CreditService, createGrpcTransport({ baseUrl })));
  const abort = new AbortController();
  const firsts: Promise<void>[] = [];
  for (let i = 0; i < STREAMS; i++) {
    const account = accounts[i % ACCOUNTS]!;
    const watcher = { seen: -1n, pending: [] as Pending[] };
    account.watchers.push(watcher);
    let first!: () => void;
    firsts.push(new Promise<void>((r) => (first = r)));
    void (async () => {
      try {
        for await (const m of clients[Math.floor(i / PER_CONNECTION)]!.watchBalance({ accountId: account.id }, { signal: abort.signal, timeoutMs: 0 })) {
          const now = performance.now();
          watcher.seen = m.sequence;
          while (watcher.pending.length > 0 && watcher.pending[0]!.sequence <= m.sequence) latencies.push(now - watcher.pending.shift()!.answeredAt);
          first();
        }
      } catch (err) {
        if (!abort.signal.aborted) console.log(`a watcher ended: ${String(err)}`);
      }
    })();
  }
  const t0 = performance.now();
  await Promise.all(firsts);
  console.log(`${STREAMS} watchers over ${ACCOUNTS} accounts open in ${((performance.now() - t0) / 1000).toFixed(1)} s; server peak RSS ${peakRssMb(server.pid!).toFixed(0)} MB`);

  latencies.length = 0;
  const withWatchers = await cycles(SECONDS);
  const sorted = latencies.sort((a, b) => a - b);
  const unreached = accounts.reduce((n, a) => n + a.watchers.reduce((m, w) => m + w.pending.length, 0), 0);
  console.log(`with watchers: ${withWatchers.toFixed(0)} cycles/s (${(withWatchers / without).toFixed(2)} × without); ${cpu}`);
  console.log(
    `commit-to-watcher latency over ${sorted.length} deliveries: p50 ${percentile(sorted, 50).toFixed(1)} ms, p99 ${percentile(sorted, 99).toFixed(1)} ms, max ${(sorted.at(-1) ?? 0).toFixed(1)} ms; ${unreached} still on their way at the end`,
  );
  console.log(`server peak RSS ${peakRssMb(server.pid!).toFixed(0)} MB`);
  abort.abort();
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
  process.exit(0);
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
