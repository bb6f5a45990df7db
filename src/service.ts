import { createApplyStage } from "./app/apply.js";
import { randomUUID } from "node:crypto";
import type { MikroORM } from "@mikro-orm/postgresql";
import type { Logger } from "pino";
import type { AppDeps } from "./app/deps.js";
import { type SweepReport, sweepOnce, startSweeper, type Sweeper } from "./app/sweeper.js";
import { type Config, DEVELOPMENT_IDEMPOTENCY_SECRET } from "./config.js";
import type { Clock } from "./domain/clock.js";
import { DEFAULT_TOP_UP_PACKS } from "./domain/top-up-packs.js";
import { CreditAdminService } from "./gen/credit/v1/admin_service_pb.js";
import { CreditService } from "./gen/credit/v1/credit_service_pb.js";
import { CreditEventService } from "./gen/credit/v1/event_service_pb.js";
import { RedisIdempotencyCache } from "./idempotency/redis-cache.js";
import { createRedisConnection, waitReady } from "./idempotency/redis-client.js";
import { adminHandlers } from "./rpc/admin-handlers.js";
import { getBalanceEncoding, watchBalanceResponse } from "./rpc/balance-encoding.js";
import { creditHandlers } from "./rpc/credit-handlers.js";
import { eventHandlers } from "./rpc/event-handlers.js";
import { encodeEvent, feedEventBytes } from "./rpc/event-encoding.js";
import { EventRelay } from "./app/event-relay.js";
import { eventCursor, eventId, formatCursor } from "./app/events.js";
import { PostgresRelayLeases, relayLag } from "./store/relay-lease.js";
import { EventFeed } from "./app/event-feed.js";
import { PostgresEventOutbox } from "./store/event-outbox.js";
import { ANSWERS } from "./rpc/answers.js";
import { implement } from "./rpc/grpc-adapter.js";
import { planAdminHandlers, planHandlers } from "./rpc/plan-handlers.js";
import { startGrpcServer, tlsOptions } from "./rpc/server.js";
import type { HealthReporter } from "./rpc/health.js";
import { createCallInterceptor } from "./rpc/interceptor.js";
import { DB_GAUGE_MAX_AGE_MS, Metrics, startMetricsServer } from "./observability/metrics.js";
import { openDatabase } from "./store/database.js";
import { BalanceCache } from "./app/balance-cache.js";
import { BalanceWatch } from "./app/balance-watch.js";
import { PostgresChangeFeed } from "./store/change-feed.js";
import { createPool, listenerClient, poolBackends } from "./store/pg.js";
import type pg from "pg";
import { PostgresLedgerStore } from "./store/ledger-store.js";
import { PostgresPlanStore } from "./store/plan-store.js";
import { loadPlanCatalog } from "./catalog/load.js";
import { loadRateCard } from "./catalog/rate-card.js";
import { pricingAdminHandlers, pricingHandlers } from "./rpc/pricing-handlers.js";
import { PostgresAccountPricing, PostgresRateCards } from "./store/rate-card-store.js";

/** The health name under which Redis (the idempotency fast path) reports its degradation. */
export const REDIS_HEALTH = "credit.redis";

export interface RunningService {
  readonly port: number;
  /** Where /metrics is served; null when metrics are off. */
  readonly metricsPort: number | null;
  readonly store: PostgresLedgerStore;
  /** The WatchBalance hub: accounts watched, watchers, reads made for them. */
  readonly watch: Pick<BalanceWatch, "accounts" | "watchers" | "reads">;
  /** Runs one sweep now (tests and operators), independent of the background timer. */
  sweep(): Promise<SweepReport>;
  /** Graceful stop: NOT_SERVING, stop accepting, finish in-flight calls, stop the sweeper, close pools. */
  stop(): Promise<void>;
}

/** Wires config, stores, use cases and the gRPC server together and starts them. */
export async function startService(config: Config, clock: Clock, log: Logger): Promise<RunningService> {
  // A broken catalog stops the start with a message naming the entry, before anything connects.
  const catalog = loadPlanCatalog(config.PLAN_CATALOG_PATH);
  const rateCard = loadRateCard(config.RATE_CARD_PATH);
  const orm = await openDatabase({
    url: config.DATABASE_URL,
    poolMax: Math.min(4, config.DB_POOL_MAX),
    migrate: config.DB_MIGRATE,
    onDriverWarning: (message) => log.warn({ driver: "mikro-orm" }, message),
  });
  const pool = createPool({ url: config.DATABASE_URL, max: config.DB_POOL_MAX, onIdleError: (err) => log.warn({ err: err.message }, "idle ledger connection failed") });
  // Reconcile's own connection: a long read of one account never takes a connection the hot path's
  // batches wait for, and one Reconcile at a time (the store's gate) takes one Postgres backend at most.
  const reconcilePool = createPool({
    url: config.DATABASE_URL,
    max: 1,
    applicationName: "credit-service-reconcile",
    onIdleError: (err) => log.warn({ err: err.message }, "idle reconcile connection failed"),
  });
  const changes = new PostgresChangeFeed({
    connect: () => listenerClient(config.DATABASE_URL),
    isOwnBackend: poolBackends(pool),
    retryMs: 1000,
    checkMs: 2000,
    checkTimeoutMs: 1000,
    onState: (live, err) => {
      if (live) log.info("listening for ledger changes: balance cache on");
      else log.warn({ err: err instanceof Error ? err.message : String(err) }, "ledger change feed lost: balance cache off until it is back");
    },
  });
  // Not awaited: until the feed listens GetBalance reads Postgres, and it keeps retrying. With the
  // balance cache off it starts with the first WatchBalance, which learns of changes through it.
  let listening = false;
  const listen = () => {
    if (listening) return;
    listening = true;
    void changes.start();
  };
  if (config.BALANCE_CACHE_ENTRIES > 0) listen();
  try {
    return await startOnDatabase(config, clock, log, orm, pool, reconcilePool, changes, listen, catalog, rateCard);
  } catch (err) {
    // A refused start leaves no connection behind.
    await changes.stop();
    await pool.end();
    await reconcilePool.end();
    await orm.close(true);
    throw err;
  }
}

async function startOnDatabase(
  config: Config,
  clock: Clock,
  log: Logger,
  orm: MikroORM,
  pool: pg.Pool,
  reconcilePool: pg.Pool,
  changes: PostgresChangeFeed,
  listen: () => void,
  catalog: ReturnType<typeof loadPlanCatalog>,
  rateCard: ReturnType<typeof loadRateCard>,
): Promise<RunningService> {
  const metrics = new Metrics();
  const alerts = { defaultPercent: config.BALANCE_ALERT_DEFAULT_PERCENT };
  const autoTopUp = { maxFailures: config.AUTO_TOP_UP_MAX_FAILURES, requestTimeoutMs: config.AUTO_TOP_UP_REQUEST_TIMEOUT_SECONDS * 1000 };
  const expiryNoticeMs = config.EXPIRY_NOTICE_DAYS * 24 * 60 * 60 * 1000;
  const store = new PostgresLedgerStore(pool, orm, randomUUID, {
    changes,
    reconcilePool,
    writeConcurrency: config.DB_WRITE_CONCURRENCY,
    maxBatch: config.DB_MAX_BATCH,
    batchAcrossAccounts: config.DB_BATCH_ACROSS_ACCOUNTS,
    staggerFrom: config.DB_BATCH_STAGGER_FROM,
    onBatch: (size) => metrics.writeBatchSize.observe(size),
    apply: createApplyStage(ANSWERS, { events: config.EVENT_OUTBOX_ENABLED ? encodeEvent : null, alerts, expiryNoticeMs, usage: config.USAGE_ROLLUP_ENABLED, autoTopUp }),
    expiryNoticeMs,
  });
  const plans = new PostgresPlanStore(orm);
  const added = await plans.syncCatalog(catalog, clock.now());
  if (added > 0) log.info({ added }, "plan catalog updated");
  const rateCards = await PostgresRateCards.register(orm, rateCard.card, rateCard.json, clock.now());

  const redis = createRedisConnection(config); // REDIS_CLUSTER_NODES set: a Redis Cluster client
  redis.on("error", (err: Error) => log.debug({ err: err.message }, "redis connection error"));
  let health: HealthReporter | null = null;
  if (config.IDEMPOTENCY_SECRET === DEVELOPMENT_IDEMPOTENCY_SECRET) log.info("IDEMPOTENCY_SECRET unset: Redis values are signed with the public development secret");
  const cache = new RedisIdempotencyCache(redis, {
    ttlMs: config.IDEMPOTENCY_TTL_SECONDS * 1000,
    lockMs: config.IDEMPOTENCY_LOCK_SECONDS * 1000,
    secret: config.IDEMPOTENCY_SECRET,
    now: () => clock.now().getTime(),
    onAvailability: (available, err) => {
      metrics.redisUp.set(available ? 1 : 0);
      health?.setComponent(REDIS_HEALTH, available ? "SERVING" : "NOT_SERVING");
      if (available) log.info("redis is back: idempotency fast path restored");
      else log.warn({ err: err instanceof Error ? err.message : String(err) }, "redis unavailable: idempotency served from Postgres alone");
    },
    onFallback: () => metrics.redisFallbacks.inc(),
    onUntrusted: (redisKey) => log.warn({ redisKey }, "idempotency value in Redis failed its check (forged, tampered, another secret, or a claim past its deadline): ignored, Postgres decides"),
  });
  if (!(await waitReady(redis, 2000))) cache.assumeDown(new Error("redis not reachable at start"));

  const deps: AppDeps = {
    store,
    cache,
    balances: new BalanceCache(changes, {
      maxEntries: config.BALANCE_CACHE_ENTRIES,
      maxAgeMs: config.BALANCE_CACHE_MAX_AGE_SECONDS * 1000,
      encode: getBalanceEncoding.body,
      onLookup: (hit) => metrics.balanceCacheLookups.inc({ result: hit ? "hit" : "miss" }),
    }),
    clock,
    newId: randomUUID,
    topUpPacks: new Map(DEFAULT_TOP_UP_PACKS.map((p) => [p.packId, p])),
    plans,
    rateCards,
    pricing: new PostgresAccountPricing(orm),
    testClocksEnabled: config.ENVIRONMENT !== "production",
    alerts,
    autoTopUp,
  };
  // The event feed: this server numbers committed batches as changes are announced (any server may; one at a time).
  const outbox = new PostgresEventOutbox(pool);
  const events = new EventFeed(outbox, changes, {
    intervalMs: config.EVENT_SEQUENCER_INTERVAL_MS,
    busyRetryMs: 20,
    wakeEveryMs: 20,
    passDelayMs: 5,
    onError: (err) => log.warn({ err: err instanceof Error ? err.message : String(err) }, "event sequencer pass failed"),
  });
  if (config.EVENT_OUTBOX_ENABLED) events.start();
  const watch = new BalanceWatch(deps, changes, {
    encoding: getBalanceEncoding,
    encode: watchBalanceResponse,
    retryMs: 1000,
    maxPerAccount: config.WATCH_MAX_PER_ACCOUNT,
    coalesceMs: config.WATCH_COALESCE_MS,
    startFeed: listen,
    onReadError: (accountId, err) => log.warn({ account: accountId, err: err.message }, "watched account could not be read: retrying"),
  });
  const relay = config.EVENTS_BROKER_URL === undefined ? null : await startRelay(config, log, metrics, outbox, events);
  const limits = { defaultTtlMs: config.HOLD_DEFAULT_TTL_SECONDS * 1000, maxTtlMs: config.HOLD_MAX_TTL_SECONDS * 1000 };
  const server = await startGrpcServer(
    [
      implement(CreditService, { ...creditHandlers(deps, limits, watch), ...planHandlers(deps), ...pricingHandlers(deps) }),
      implement(CreditAdminService, { ...adminHandlers(deps), ...planAdminHandlers(deps), ...pricingAdminHandlers(deps) }),
      implement(CreditEventService, eventHandlers(outbox, events)),
    ],
    {
      host: config.GRPC_HOST,
      port: config.GRPC_PORT,
      maxMessageBytes: config.GRPC_MAX_MESSAGE_BYTES,
      tls: tlsOptions({ certFile: config.TLS_CERT_FILE, keyFile: config.TLS_KEY_FILE, clientCaFile: config.TLS_CLIENT_CA_FILE }),
      limits: {
        maxConnections: config.GRPC_MAX_CONNECTIONS,
        maxConcurrentStreams: config.GRPC_MAX_CONCURRENT_STREAMS,
        maxStreamingCalls: config.GRPC_MAX_STREAMING_CALLS,
        handshakeTimeoutMs: config.GRPC_HANDSHAKE_TIMEOUT_MS,
        idleMs: config.GRPC_CONNECTION_IDLE_MS,
        maxAgeMs: config.GRPC_CONNECTION_MAX_AGE_MS,
        maxAgeGraceMs: config.GRPC_CONNECTION_AGE_GRACE_MS,
        tcpKeepaliveMs: config.GRPC_TCP_KEEPALIVE_MS,
        tcpKeepaliveTimeoutMs: config.GRPC_TCP_KEEPALIVE_TIMEOUT_MS,
      },
      callInterceptor: (streams) =>
        createCallInterceptor({
          tokens: config.AUTH_TOKENS ?? null,
          openReflection: config.AUTH_OPEN_REFLECTION,
          openHealth: config.AUTH_OPEN_HEALTH,
          log,
          metrics,
          streams,
        }),
    },
    log,
  );
  health = server.health;
  health.setComponent(REDIS_HEALTH, cache.available ? "SERVING" : "NOT_SERVING");
  if (config.BALANCE_CACHE_ENTRIES > 0) {
    metrics.gauge("credit_change_feed_up", "1 while this server listens for ledger changes (the balance cache is used only then).", () => (changes.live ? 1 : 0));
  }
  metrics.gauge("credit_watched_accounts", "Accounts with a WatchBalance stream open on this server (each read once per change).", () => watch.accounts);
  metrics.gauge("credit_grpc_connections", "Open gRPC connections (GRPC_MAX_CONNECTIONS caps them).", () => server.connections);
  metrics.gauge("credit_grpc_streaming_calls", "Open streaming calls, Watch (GRPC_MAX_STREAMING_CALLS caps them).", () => server.streamingCalls);
  metrics.dbGauge("credit_holds_pending", `Reservations currently HELD (counted at most every ${DB_GAUGE_MAX_AGE_MS / 1000} s, however often scraped).`, () => store.countHeld());
  metrics.gauge("credit_db_pool_connections_in_use", "Postgres connections checked out of the pool.", () => pool.totalCount - pool.idleCount);
  if (relay !== null) {
    metrics.gauge("credit_event_relay_leader", "1 while this server's relay holds the lease and publishes the event feed to the broker.", () => (relay.leader ? 1 : 0));
    metrics.dbGauge("credit_event_relay_lag", "Feed positions (write transactions) between the feed's head and the broker relay's stored cursor.", () => relayLag(pool, config.EVENTS_BROKER_STREAM));
  }
  const metricsServer = config.METRICS_ENABLED ? await startMetricsServer(metrics, config.METRICS_HOST, config.METRICS_PORT) : null;

  const probe = async () => {
    const status = await Promise.race([
      store.ping().then(() => "SERVING" as const),
      new Promise<"NOT_SERVING">((resolve) => setTimeout(() => resolve("NOT_SERVING"), config.HEALTH_PROBE_INTERVAL_MS)),
    ]).catch(() => "NOT_SERVING" as const);
    metrics.postgresUp.set(status === "SERVING" ? 1 : 0);
    if (server.health.set(status)) (status === "SERVING" ? log.info : log.warn).call(log, { health: status }, "health changed");
  };
  await probe();
  const probeTimer = setInterval(() => void probe(), config.HEALTH_PROBE_INTERVAL_MS);

  const sweepOptions = {
    intervalMs: config.SWEEPER_INTERVAL_MS,
    batchSize: config.SWEEPER_BATCH_SIZE,
    retentionMs: config.IDEMPOTENCY_TTL_SECONDS * 1000,
    events: config.EVENT_OUTBOX_ENABLED ? { outbox, retentionMs: config.EVENT_RETENTION_DAYS * 24 * 60 * 60 * 1000 } : undefined,
  };
  let sweeper: Sweeper | null = null;
  if (config.SWEEPER_ENABLED) {
    sweeper = startSweeper(
      store,
      clock,
      sweepOptions,
      (report) => {
        metrics.sweeps.inc({ outcome: report instanceof Error ? "failed" : "ok" });
        if (report instanceof Error) log.warn({ err: report.message }, "sweep failed");
        else {
          metrics.sweptAccounts.inc(report.accountsSettled);
          if (report.accountsSettled + report.operationsPruned + report.usageDaysClosed > 0) log.info(report, "sweep");
        }
      },
    );
  }

  return {
    port: server.port,
    metricsPort: metricsServer?.port ?? null,
    store,
    watch,
    sweep: () => sweepOnce(store, clock.now(), sweepOptions),
    async stop() {
      clearInterval(probeTimer);
      // Watch streams never end by themselves: they end now, UNAVAILABLE, so their clients
      // reconnect to another server while this one drains its unary calls.
      watch.close({ reason: "SHUTTING_DOWN", message: "the server is shutting down: reconnect", metadata: {} });
      // Event streams too (UNAVAILABLE, SHUTTING_DOWN): their consumers resume from their cursor elsewhere.
      events.stop();
      // The relay lets go of its lease at once, so another server takes over within its retry.
      await relay?.stop();
      await server.shutdown(config.SHUTDOWN_GRACE_MS);
      await sweeper?.stop();
      await metricsServer?.close();
      await cache.close();
      await changes.stop();
      await pool.end();
      await reconcilePool.end();
      await orm.close(true);
    },
  };
}

/**
 * The broker relay (docs/events.md "Broker relay"): every server runs one; the lease holder
 * publishes. The NATS client is loaded only here, when a broker is configured: it costs a
 * server about 13 MB of resident memory that a server without a relay need not carry.
 */
async function startRelay(config: Config, log: Logger, metrics: Metrics, outbox: PostgresEventOutbox, feed: EventFeed): Promise<EventRelay> {
  const { NatsEventBroker } = await import("./broker/nats-broker.js");
  const stream = config.EVENTS_BROKER_STREAM;
  const broker = new NatsEventBroker({
    url: config.EVENTS_BROKER_URL!,
    stream,
    subjectPrefix: config.EVENTS_BROKER_SUBJECT_PREFIX,
    duplicateWindowMs: config.EVENTS_BROKER_DUPLICATE_WINDOW_SECONDS * 1000,
    ackTimeoutMs: 2000,
    encode: (event) => feedEventBytes({ ...event, eventId: eventId(event), cursor: formatCursor(eventCursor(event)) }),
    onConnection: (state) => {
      if (state === "disconnect" || state === "reconnect" || state === "close") log.info({ broker: state }, "event broker connection");
    },
  });
  const leases = new PostgresRelayLeases({
    url: config.DATABASE_URL,
    stream,
    checkMs: 1000,
    checkTimeoutMs: 2000,
    onLost: (err) => log.warn({ err: err instanceof Error ? err.message : String(err) }, "event relay lost its lease: publishing stopped"),
  });
  const relay = new EventRelay(outbox, feed, leases, broker, {
    batch: config.EVENTS_BROKER_BATCH,
    retryMs: config.EVENTS_BROKER_LEASE_RETRY_MS,
    brokerRetryMs: 250,
    idleMs: 1000,
    onLeader: (leader) => log.info({ stream, leader }, leader ? "event relay is the leader: publishing the feed to the broker" : "event relay is no longer the leader"),
    onPublished: (outcome, count) => metrics.relayPublished.inc({ outcome }, count),
    onResume: (stored, held) =>
      log.info({ stored: stored === null ? null : formatCursor(stored), held: formatCursor(held) }, "event relay: the stream already holds events past the stored cursor; resuming after them"),
    onError: (err, what) => log.warn({ err: err instanceof Error ? err.message : String(err) }, what),
    onRecovered: () => log.info({ stream }, "event relay: publishing to the broker again"),
  });
  relay.start();
  return relay;
}
