import { createServer, type Server } from "node:http";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

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

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    this.redisUp.set(1);
  }

  /** A gauge whose value is read at scrape time. */
  gauge(name: string, help: string, read: () => Promise<number> | number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      async collect() {
        this.set(await read());
      },
    });
  }
}

/** Serves /metrics (Prometheus text format) on its own port. */
export async function startMetricsServer(metrics: Metrics, host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    metrics.registry.metrics().then(
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
