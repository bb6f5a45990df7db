import { createServer, type Server } from "node:http";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** How old a gauge read from the database may grow before a scrape reads it again. */
export const DB_GAUGE_MAX_AGE_MS = 2_000;

/** The service's Prometheus metrics, on their own registry. */
export class Metrics {
  readonly registry = new Registry();
  readonly rpcHandled = new Counter({
    name: "grpc_server_handled_total",
    help: "RPCs completed, by method and status code.",
    labelNames: ["service", "method", "code"],
    registers: [this.registry],
  });
  readonly rpcSeconds = new Histogram({
    name: "grpc_server_handling_seconds",
    help: "RPC latency, by method and status code.",
    labelNames: ["service", "method", "code"],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly sweeps = new Counter({
    name: "credit_sweeper_runs_total",
    help: "Sweeper runs, by outcome.",
    labelNames: ["outcome"],
    registers: [this.registry],
  });
  readonly sweptAccounts = new Counter({
    name: "credit_sweeper_accounts_settled_total",
    help: "Accounts whose due work (overdue holds, expiries, period roll-overs) a sweep applied.",
    registers: [this.registry],
  });
  readonly redisFallbacks = new Counter({
    name: "credit_idempotency_redis_fallback_total",
    help: "Idempotency lookups answered from Postgres alone because Redis failed.",
    registers: [this.registry],
  });
  readonly redisUp = new Gauge({
    name: "credit_redis_up",
    help: "1 while the Redis idempotency fast path answers, 0 while it is degraded.",
    registers: [this.registry],
  });
  readonly writeBatchSize = new Histogram({
    name: "credit_write_batch_commands",
    help: "Commands per ledger transaction (group commit: concurrent commands share one).",
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [this.registry],
  });
  readonly balanceCacheLookups = new Counter({
    name: "credit_balance_cache_lookups_total",
    help: "GetBalance lookups in the balance cache, by result (hit: answered without Postgres).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly postgresUp = new Gauge({
    name: "credit_postgres_up",
    help: "1 while the ledger database answers the health probe.",
    registers: [this.registry],
  });

  readonly relayPublished = new Counter({
    name: "credit_event_relay_published_total",
    help: "Events the broker relay had acknowledged, by outcome (stored: new in the stream; duplicate: dropped by the broker as a redelivery of its event_id).",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    this.redisUp.set(1);
  }

  /** A gauge whose value is read from memory at scrape time. */
  gauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /**
   * A gauge read from the database. Scrapes never cost a query each: one read serves every scrape
   * for DB_GAUGE_MAX_AGE_MS, only one runs at a time, and a scrape waits for a due read at most
   * DB_GAUGE_WAIT_MS before it shows the last value (NaN before the first; a failed read keeps it).
   */
  dbGauge(name: string, help: string, read: () => Promise<number>): void {
    const cached = new CachedRead(read, DB_GAUGE_MAX_AGE_MS);
    new Gauge({
      name,
      help,
      registers: [this.registry],
      async collect() {
        this.set(await cached.get(DB_GAUGE_WAIT_MS));
      },
    });
  }
}

/** The longest a scrape waits for a database gauge's read. */
const DB_GAUGE_WAIT_MS = 1_000;

/** The last value of an expensive read, read again at most every `maxAgeMs` and never twice at once. */
class CachedRead {
  private value = Number.NaN;
  private startedAt = Number.NEGATIVE_INFINITY;
  private pending: Promise<void> | null = null;

  constructor(
    private readonly read: () => Promise<number>,
    private readonly maxAgeMs: number,
  ) {}

  async get(waitMs: number): Promise<number> {
    if (this.pending === null && performance.now() - this.startedAt >= this.maxAgeMs) {
      this.startedAt = performance.now();
      this.pending = this.read().then(
        (value) => {
          this.value = value;
        },
        () => {}, // the last value stands; credit_postgres_up reports the outage
      );
      void this.pending.finally(() => {
        this.pending = null;
      });
    }
    if (this.pending !== null) await waitAtMost(this.pending, waitMs);
    return this.value;
  }
}

async function waitAtMost(work: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** The least time between two renderings of /metrics: what a flood of scrapes can cost (a few ms of CPU each). */
const RENDER_GAP_MS = 100;

/**
 * Runs `work` for callers, one run at a time and runs at least `gapMs` apart; each caller gets a
 * run that started after it called, shared with everyone who called while it waited. So a scrape
 * still sees everything that happened before it was sent, and a flood costs one run per gap.
 */
function coalesced<T>(work: () => Promise<T>, gapMs: number): () => Promise<T> {
  let next: Promise<T> | null = null;
  let previous: Promise<unknown> = Promise.resolve();
  let startedAt = Number.NEGATIVE_INFINITY;
  const start = async (): Promise<T> => {
    await previous;
    const wait = startedAt + gapMs - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    next = null; // callers from now on wait for the run after this one
    startedAt = performance.now();
    const run = work();
    previous = run.catch(() => {});
    return run;
  };
  return () => (next ??= start());
}

/** Serves /metrics (Prometheus text format) on its own port. */
export async function startMetricsServer(metrics: Metrics, host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const render = coalesced(() => metrics.registry.metrics(), RENDER_GAP_MS);
  const server: Server = createServer((req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    render().then(
      (body) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(body),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
