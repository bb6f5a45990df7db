import { existsSync } from "node:fs";
import { z } from "zod";
import { parseTokens, type TokenEntry } from "./rpc/auth.js";

const bool = z
  .enum(["true", "false", "1", "0"])
  .transform((v) => v === "true" || v === "1");

const seconds = (fallback: number) => z.coerce.number().int().positive().default(fallback);

/** Node fires a timer longer than 2^31 - 1 ms at once, so no timer setting may exceed it. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const millis = (min: number, fallback: number) => z.coerce.number().int().min(min).max(MAX_TIMER_MS).default(fallback);

/**
 * development: authentication optional (off without AUTH_TOKENS), test clocks on — the quick start.
 * test: a shared test deployment — authentication required, test clocks on.
 * production: authentication required, test clocks refused.
 */
export type Environment = "development" | "test" | "production";

/**
 * The mode, decided by one switch: `NODE_ENV=production` (what the image and every Node deployment
 * set) means production and nothing may say otherwise; an explicit ENVIRONMENT decides otherwise;
 * with neither, the NODE_ENV a laptop or a test runner sets (unset, development, test) means
 * development, and any other NODE_ENV is refused rather than guessed.
 */
function environmentOf(explicit: Environment | undefined, nodeEnv: string | undefined, ctx: z.RefinementCtx): Environment {
  const fail = (message: string) => {
    ctx.addIssue({ code: "custom", message, path: ["ENVIRONMENT"] });
    return z.NEVER;
  };
  if (nodeEnv === "production") {
    return explicit === undefined || explicit === "production" ? "production" : fail(`ENVIRONMENT=${explicit} contradicts NODE_ENV=production`);
  }
  if (explicit !== undefined) return explicit;
  if (nodeEnv === undefined || nodeEnv === "development" || nodeEnv === "test") return "development";
  return fail(`NODE_ENV=${JSON.stringify(nodeEnv.slice(0, 40))} does not say whether this is production: set ENVIRONMENT (development, test or production)`);
}

/** AUTH_TOKENS parsed once; a value with no entry at all (",", blanks) is refused, never read as "no authentication". */
const authTokens = z.string().transform((raw, ctx): readonly TokenEntry[] => {
  try {
    return Object.freeze(parseTokens(raw));
  } catch (err) {
    ctx.addIssue({ code: "custom", message: err instanceof Error ? err.message : String(err) });
    return z.NEVER;
  }
});

/** One Redis Cluster seed node, from `REDIS_CLUSTER_NODES`. */
export interface RedisClusterNode {
  readonly host: string;
  readonly port: number;
}

const HOST_PORT = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:,[\]]+)):(\d{1,5})$/;

/**
 * `host:port,host:port,…` (IPv6 hosts in brackets). Blank means "no cluster": the single node at
 * REDIS_URL. Each entry must name a host and a port 1-65535, with no entry repeated.
 */
const clusterNodes = z.string().transform((raw, ctx): readonly RedisClusterNode[] | undefined => {
  const entries = raw.split(",").map((e) => e.trim());
  if (entries.every((e) => e === "")) return undefined;
  const nodes: RedisClusterNode[] = [];
  for (const entry of entries) {
    const match = HOST_PORT.exec(entry);
    const port = Number(match?.[3]);
    if (!match || port < 1 || port > 65535) {
      ctx.addIssue({ code: "custom", message: `"${entry}" is not host:port (port 1-65535)` });
      return z.NEVER;
    }
    const host = (match[1] ?? match[2])!;
    if (nodes.some((n) => n.host === host && n.port === port)) {
      ctx.addIssue({ code: "custom", message: `"${entry}" is listed twice` });
      return z.NEVER;
    }
    nodes.push(Object.freeze({ host, port }));
  }
  return Object.freeze(nodes);
});

// ---- Redis: the idempotency fast path's secret, AUTH and TLS -------------------------------

/**
 * Signs the fast path's values when IDEMPOTENCY_SECRET is unset, outside production only. It is
 * public (it is in this file), so it protects nothing; it is fixed rather than random so that
 * development servers sharing one Redis accept each other's values.
 */
export const DEVELOPMENT_IDEMPOTENCY_SECRET = "credit-service development idempotency secret: public, never for production";

const redisSettings = {
  /** HMAC key of every value the fast path stores in Redis (at least 32 characters); required in production. */
  IDEMPOTENCY_SECRET: z.string().min(32, "must be at least 32 characters").default(DEVELOPMENT_IDEMPOTENCY_SECRET),
  /** AUTH for the single node (with REDIS_URL's own credentials, set one or the other) and for every cluster node. */
  REDIS_USERNAME: z.string().min(1).optional(),
  REDIS_PASSWORD: z.string().min(1).optional(),
  /** TLS to Redis (every cluster node too); a `rediss://` REDIS_URL turns it on for the single node as well. */
  REDIS_TLS: bool.default(false),
  /** A CA file to trust for Redis TLS (a private CA); unset: the system's CAs. */
  REDIS_TLS_CA_FILE: z.string().min(1).optional(),
};

interface RedisSettings {
  readonly ENVIRONMENT: string;
  readonly REDIS_URL: string;
  readonly REDIS_CLUSTER_NODES?: readonly RedisClusterNode[] | undefined;
  readonly IDEMPOTENCY_SECRET: string;
  readonly REDIS_USERNAME?: string | undefined;
  readonly REDIS_PASSWORD?: string | undefined;
  readonly REDIS_TLS: boolean;
  readonly REDIS_TLS_CA_FILE?: string | undefined;
}

function checkRedisSettings(c: RedisSettings, ctx: z.RefinementCtx): void {
  if (c.ENVIRONMENT === "production" && c.IDEMPOTENCY_SECRET === DEVELOPMENT_IDEMPOTENCY_SECRET) {
    ctx.addIssue({ code: "custom", path: ["IDEMPOTENCY_SECRET"], message: "production requires IDEMPOTENCY_SECRET (at least 32 characters, e.g. openssl rand -hex 32)" });
  }
  if (!URL.canParse(c.REDIS_URL)) return; // REDIS_URL's own check names it
  const url = new URL(c.REDIS_URL);
  if ((url.username !== "" && c.REDIS_USERNAME !== undefined) || (url.password !== "" && c.REDIS_PASSWORD !== undefined)) {
    ctx.addIssue({ code: "custom", path: ["REDIS_PASSWORD"], message: "give Redis credentials in REDIS_URL or in REDIS_USERNAME / REDIS_PASSWORD, not both" });
  }
  const singleNodeTls = c.REDIS_CLUSTER_NODES === undefined && url.protocol === "rediss:";
  if (c.REDIS_TLS_CA_FILE !== undefined && !c.REDIS_TLS && !singleNodeTls) {
    ctx.addIssue({ code: "custom", path: ["REDIS_TLS_CA_FILE"], message: "REDIS_TLS_CA_FILE needs REDIS_TLS=true (or a rediss:// REDIS_URL)" });
  }
}

// ----------------------------------------------------------------------------------------------

const databaseUrl = z.url({ protocol: /^postgres(ql)?$/ }).default("postgres://postgres@127.0.0.1:5432/credit");

/** Every variable the service reads, with its default. README.md lists them for operators. */
const schema = z
  .object({
    /** See Environment; unset, NODE_ENV decides (environmentOf). */
    ENVIRONMENT: z.enum(["development", "test", "production"]).optional(),
    /** Read only to decide ENVIRONMENT: `production` implies it. */
    NODE_ENV: z.string().optional(),
    /** A plan catalog file to use instead of the checked-in src/catalog/plans.json. */
    PLAN_CATALOG_PATH: z.string().min(1).optional(),
    /** A rate card file to use instead of the checked-in src/catalog/rate-card.json. */
    RATE_CARD_PATH: z.string().min(1).optional(),
    DATABASE_URL: databaseUrl,
    REDIS_URL: z.url({ protocol: /^rediss?$/ }).default("redis://127.0.0.1:6379"),
    /** Comma-separated `host:port` seed nodes of a Redis Cluster; unset = the single node at REDIS_URL. */
    REDIS_CLUSTER_NODES: clusterNodes.optional(),
    ...redisSettings,
    GRPC_HOST: z.string().min(1).default("0.0.0.0"),
    GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50051),
    GRPC_MAX_MESSAGE_BYTES: z.coerce.number().int().min(1024).max(16 * 1024 * 1024).default(64 * 1024),
    // Connections: what a client may hold before it has authenticated anything (src/rpc/server.ts,
    // docs/decisions.md "Connections"). 0 turns the idle, age and keepalive timers off.
    /** Connections open at once; one more is closed as soon as it is accepted. */
    GRPC_MAX_CONNECTIONS: z.coerce.number().int().min(1).max(1_000_000).default(1000),
    /** Calls (HTTP/2 streams) open at once on one connection; clients queue the rest. */
    GRPC_MAX_CONCURRENT_STREAMS: z.coerce.number().int().min(1).max(MAX_TIMER_MS).default(100),
    /** Streaming calls (health Watch, WatchBalance) open at once on the whole server; one more is refused (RESOURCE_EXHAUSTED). */
    GRPC_MAX_STREAMING_CALLS: z.coerce.number().int().min(1).max(1_000_000).default(1000),
    /** WatchBalance streams of one account open at once on one server; one more is refused (RESOURCE_EXHAUSTED). */
    WATCH_MAX_PER_ACCOUNT: z.coerce.number().int().min(1).max(1_000_000).default(100),
    /** A watched account is read (and sent) at most once this often: a change after a quiet spell at once, closer changes once at the window's end; 0: every change at once. */
    WATCH_COALESCE_MS: z.coerce.number().int().min(0).max(1000).default(20),
    /** For the TLS handshake, for the HTTP/2 preface, and for a peer to close its side of a connection the server closed; then the socket is cut. */
    GRPC_HANDSHAKE_TIMEOUT_MS: millis(100, 10_000),
    /** A connection without an open call for this long is closed (GOAWAY). */
    GRPC_CONNECTION_IDLE_MS: millis(0, 5 * 60_000),
    /** A connection is told to go away (GOAWAY) after this long, ±10 %; its open calls get the grace. */
    GRPC_CONNECTION_MAX_AGE_MS: millis(0, 30 * 60_000),
    GRPC_CONNECTION_AGE_GRACE_MS: millis(0, 60_000),
    /** TCP keepalive: a connection silent this long is probed, and dropped when the probes go unanswered for the timeout. */
    GRPC_TCP_KEEPALIVE_MS: millis(0, 2 * 60_000).refine((ms) => ms === 0 || ms >= 1000, "0 (off) or at least 1000: the kernel counts whole seconds"),
    GRPC_TCP_KEEPALIVE_TIMEOUT_MS: millis(3000, 30_000),
    DB_MIGRATE: bool.default(true),
    /** Connections of the ledger's pool (the ORM side — plans, rate cards, entry listing — keeps a pool of its own, at most 4). */
    DB_POOL_MAX: z.coerce.number().int().min(2).max(200).default(10),
    /** Ledger write transactions that may run at once; concurrent commands share one (group commit). */
    DB_WRITE_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(2),
    /** The most commands one ledger transaction takes. */
    DB_MAX_BATCH: z.coerce.number().int().min(1).max(256).default(64),
    /** false: a ledger transaction takes one account's commands only (a sharded database: one shard per transaction). */
    DB_BATCH_ACROSS_ACCOUNTS: bool.default(true),
    /** Ledger transactions take turns, and twice this many commands waiting at once split into two; 0: off (docs/performance-log.md, changes 18–19). */
    DB_BATCH_STAGGER_FROM: z.coerce.number().int().min(0).max(256).default(16),
    /** GetBalance answers kept per server (accounts); 0: every GetBalance reads Postgres. */
    BALANCE_CACHE_ENTRIES: z.coerce.number().int().min(0).max(10_000_000).default(50_000),
    /** A kept answer is read again after this long, even if no change was announced. */
    BALANCE_CACHE_MAX_AGE_SECONDS: z.coerce.number().int().min(1).max(3600).default(300),
    HOLD_DEFAULT_TTL_SECONDS: seconds(15 * 60),
    HOLD_MAX_TTL_SECONDS: seconds(24 * 60 * 60),
    IDEMPOTENCY_TTL_SECONDS: z.coerce.number().int().min(24 * 60 * 60).default(24 * 60 * 60),
    IDEMPOTENCY_LOCK_SECONDS: seconds(10),
    SWEEPER_ENABLED: bool.default(true),
    SWEEPER_INTERVAL_MS: z.coerce.number().int().min(100).default(5000),
    SWEEPER_BATCH_SIZE: z.coerce.number().int().min(1).max(10_000).default(200),
    /** false: no event is written with the changes (a bench-only switch for the outbox's A/B; docs/events.md). */
    EVENT_OUTBOX_ENABLED: bool.default(true),
    /** false: writes add nothing to the usage rollup GetUsage and ForecastBalance read (a bench-only switch for the rollup's A/B). */
    USAGE_ROLLUP_ENABLED: bool.default(true),
    /** Events are kept this long, then pruned by the sweeper; an older cursor is refused as CURSOR_EXPIRED. */
    EVENT_RETENTION_DAYS: z.coerce.number().int().min(1).max(3650).default(30),
    /** The sequencer runs after every change the feed announces, and at least this often. */
    EVENT_SEQUENCER_INTERVAL_MS: z.coerce.number().int().min(10).max(60_000).default(1000),
    /** Balance alert for accounts with a plan and no alert of their own: this percent of the plan's monthly allowance; 0: none. */
    BALANCE_ALERT_DEFAULT_PERCENT: z.coerce.number().int().min(0).max(100).default(10),
    /** CREDITS_EXPIRING is told this many days before a top-up or adjustment bucket expires with credits unused; 0: never. */
    EXPIRY_NOTICE_DAYS: z.coerce.number().int().min(0).max(365).default(7),
    /** Failed auto top-up payments in a row that disable the rule until it is set again. */
    AUTO_TOP_UP_MAX_FAILURES: z.coerce.number().int().min(1).max(100).default(3),
    /** An auto top-up request unanswered this long expires: the rule re-arms (a late completion still grants). */
    AUTO_TOP_UP_REQUEST_TIMEOUT_SECONDS: z.coerce.number().int().min(1).max(30 * 24 * 60 * 60).default(60 * 60),
    /**
     * The broker relay (app/event-relay.ts): unset = off. A NATS server with JetStream, e.g.
     * nats://127.0.0.1:4222; several comma-separated for a cluster. TLS is used when the server
     * offers or requires it (the client upgrades the connection after the server's INFO).
     */
    EVENTS_BROKER_URL: z
      .string()
      .regex(/^nats:\/\/[^\s,]+(,nats:\/\/[^\s,]+)*$/, "nats://host:port, comma-separated for several")
      .optional(),
    /** The JetStream stream the relay publishes to (created, or its subjects and duplicate window updated, at start). */
    EVENTS_BROKER_STREAM: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "letters, digits, '-' and '_' (at most 64)").default("CREDIT_EVENTS"),
    /** Subjects are `<prefix>.<kind>.<account>`; the stream takes `<prefix>.>`. */
    EVENTS_BROKER_SUBJECT_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, "dot-separated tokens of letters, digits, '-' and '_'")
      .default("credit.events"),
    /** The stream's duplicate window: a redelivery of an event_id within it is dropped by the broker. */
    EVENTS_BROKER_DUPLICATE_WINDOW_SECONDS: z.coerce.number().int().min(1).max(7 * 24 * 60 * 60).default(600),
    /** Events published per round (all in flight at once, acknowledgements awaited in order). */
    EVENTS_BROKER_BATCH: z.coerce.number().int().min(1).max(10_000).default(1000),
    /** A server that is not the relay tries to take the relay's lock this often. */
    EVENTS_BROKER_LEASE_RETRY_MS: millis(100, 1000),
    HEALTH_PROBE_INTERVAL_MS: z.coerce.number().int().min(100).default(2000),
    SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).default(10_000),
    /** Comma-separated `name:role:sha256hex`; unset turns authentication off (development only). */
    AUTH_TOKENS: authTokens.optional(),
    AUTH_OPEN_REFLECTION: bool.default(true),
    AUTH_OPEN_HEALTH: bool.default(true),
    TLS_CERT_FILE: z.string().min(1).optional(),
    TLS_KEY_FILE: z.string().min(1).optional(),
    /** Set to require client certificates signed by this CA (mutual TLS). */
    TLS_CLIENT_CA_FILE: z.string().min(1).optional(),
    METRICS_ENABLED: bool.default(true),
    METRICS_HOST: z.string().min(1).default("0.0.0.0"),
    METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
    LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  })
  .transform(({ NODE_ENV, ...c }, ctx) => ({ ...c, ENVIRONMENT: environmentOf(c.ENVIRONMENT, NODE_ENV, ctx) }))
  .superRefine((c, ctx) => {
    if (c.ENVIRONMENT !== "development" && c.AUTH_TOKENS === undefined) {
      ctx.addIssue({ code: "custom", message: `${c.ENVIRONMENT} requires authentication: set AUTH_TOKENS (only ENVIRONMENT=development runs without)`, path: ["AUTH_TOKENS"] });
    }
  })
  .refine((c) => (c.TLS_CERT_FILE === undefined) === (c.TLS_KEY_FILE === undefined), {
    message: "TLS_CERT_FILE and TLS_KEY_FILE go together",
    path: ["TLS_CERT_FILE"],
  })
  .refine((c) => c.TLS_CLIENT_CA_FILE === undefined || c.TLS_CERT_FILE !== undefined, {
    message: "mutual TLS (TLS_CLIENT_CA_FILE) needs TLS_CERT_FILE and TLS_KEY_FILE",
    path: ["TLS_CLIENT_CA_FILE"],
  })
  .refine((c) => c.HOLD_DEFAULT_TTL_SECONDS <= c.HOLD_MAX_TTL_SECONDS, {
    message: "HOLD_DEFAULT_TTL_SECONDS must not exceed HOLD_MAX_TTL_SECONDS",
    path: ["HOLD_DEFAULT_TTL_SECONDS"],
  })
  .refine((c) => c.EVENTS_BROKER_URL === undefined || c.EVENT_OUTBOX_ENABLED, {
    message: "the broker relay publishes the outbox: it needs EVENT_OUTBOX_ENABLED=true",
    path: ["EVENTS_BROKER_URL"],
  })
  .superRefine(checkRedisSettings);

export type Config = Readonly<z.infer<typeof schema>>;

/** What an operator should hear about at start: a configuration that runs, but exposed. */
export function configWarnings(c: Config): string[] {
  const warnings: string[] = [];
  if (c.AUTH_TOKENS === undefined) warnings.push("authentication is off (development without AUTH_TOKENS): every caller may call every method");
  else if (c.ENVIRONMENT !== "development" && c.TLS_CERT_FILE === undefined) {
    warnings.push(`${c.ENVIRONMENT} without TLS (TLS_CERT_FILE): bearer tokens cross the network in plaintext unless a proxy on this host terminates TLS`);
  }
  return warnings;
}

function parseWith<T extends z.ZodType>(schema: T, env: Record<string, string | undefined>): z.infer<T> {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const parsed = schema.safeParse(present);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new Error(`invalid configuration: ${problems}`);
  }
  return parsed.data;
}

/** Parses and validates the environment once; throws one error naming every bad variable. */
export function parseConfig(env: Record<string, string | undefined>): Config {
  return Object.freeze(parseWith(schema, env));
}

function readEnv(): NodeJS.ProcessEnv {
  if (existsSync(".env")) process.loadEnvFile(".env");
  return process.env;
}

/** The only reader of process.env (and of a `.env` file in the working directory, if present). */
export function loadConfig(): Config {
  return parseConfig(readEnv());
}

/**
 * DATABASE_URL alone, for the migration step: it serves no call and touches no Redis, so a
 * production migration job (NODE_ENV=production, no AUTH_TOKENS or IDEMPOTENCY_SECRET) must not be
 * refused for them.
 */
export function loadDatabaseUrl(): string {
  return parseWith(z.object({ DATABASE_URL: databaseUrl }), readEnv()).DATABASE_URL;
}
