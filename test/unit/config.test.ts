import { afterEach, describe, expect, it, vi } from "vitest";
import { configWarnings, loadDatabaseUrl, parseConfig } from "../../src/config.js";
import { sha256 } from "../../src/rpc/auth.js";

const TOKENS = `ops:admin:${sha256("ops-token").toString("hex")}`;
/** Production also requires the fast path's key (docs/decisions.md, Idempotency). */
const SECRET = { IDEMPOTENCY_SECRET: "s".repeat(32) };

describe("configuration", () => {
  it("defaults to the addresses in the API contract", () => {
    const config = parseConfig({});
    expect(config.DATABASE_URL).toBe("postgres://postgres@127.0.0.1:5432/credit");
    expect(config.REDIS_URL).toBe("redis://127.0.0.1:6379");
    expect(config.GRPC_PORT).toBe(50051);
    expect(config.DB_MIGRATE).toBe(true);
    expect(config.HOLD_DEFAULT_TTL_SECONDS).toBe(900);
    expect(config.HOLD_MAX_TTL_SECONDS).toBe(86_400);
    expect(config.IDEMPOTENCY_TTL_SECONDS).toBe(86_400);
  });

  it("accepts port 0 (any free port) and reads booleans", () => {
    const config = parseConfig({ GRPC_PORT: "0", DB_MIGRATE: "false", SWEEPER_ENABLED: "0" });
    expect(config.GRPC_PORT).toBe(0);
    expect(config.DB_MIGRATE).toBe(false);
    expect(config.SWEEPER_ENABLED).toBe(false);
  });

  it("groups ledger writes by default, across accounts, two transactions at a time", () => {
    const config = parseConfig({});
    expect([config.DB_WRITE_CONCURRENCY, config.DB_MAX_BATCH, config.DB_BATCH_ACROSS_ACCOUNTS, config.DB_BATCH_STAGGER_FROM]).toEqual([2, 64, true, 16]);
    expect(parseConfig({ DB_BATCH_STAGGER_FROM: "0" }).DB_BATCH_STAGGER_FROM).toBe(0);
    expect(parseConfig({ DB_BATCH_ACROSS_ACCOUNTS: "false" }).DB_BATCH_ACROSS_ACCOUNTS).toBe(false);
  });

  it("is frozen once parsed", () => {
    const config = parseConfig({});
    expect(Object.isFrozen(config)).toBe(true);
  });

  it.each([
    ["GRPC_PORT", "70000"],
    ["GRPC_PORT", "http"],
    ["DATABASE_URL", "mysql://localhost/credit"],
    ["REDIS_URL", "not a url"],
    ["DB_MIGRATE", "yes"],
    ["IDEMPOTENCY_TTL_SECONDS", "3600"],
    ["LOG_LEVEL", "loud"],
    ["DB_POOL_MAX", "1"],
    ["DB_WRITE_CONCURRENCY", "0"],
    ["DB_MAX_BATCH", "1000"],
    ["DB_BATCH_ACROSS_ACCOUNTS", "sometimes"],
    ["DB_BATCH_STAGGER_FROM", "-1"],
  ])("refuses %s=%s with a message naming the variable", (name, value) => {
    expect(() => parseConfig({ [name]: value })).toThrow(new RegExp(`invalid configuration: .*${name}`));
  });

  describe("REDIS_CLUSTER_NODES", () => {
    it("is absent by default, and blank means the single node at REDIS_URL", () => {
      expect(parseConfig({}).REDIS_CLUSTER_NODES).toBeUndefined();
      expect(parseConfig({ REDIS_CLUSTER_NODES: "" }).REDIS_CLUSTER_NODES).toBeUndefined();
      expect(parseConfig({ REDIS_CLUSTER_NODES: "  " }).REDIS_CLUSTER_NODES).toBeUndefined();
      expect(parseConfig({ REDIS_CLUSTER_NODES: " , " }).REDIS_CLUSTER_NODES).toBeUndefined();
    });

    it("reads a comma-separated host:port list, trimmed, with IPv6 hosts in brackets", () => {
      const config = parseConfig({ REDIS_CLUSTER_NODES: "127.0.0.1:7000, redis-1.internal:7001 ,[::1]:7002" });
      expect(config.REDIS_CLUSTER_NODES).toEqual([
        { host: "127.0.0.1", port: 7000 },
        { host: "redis-1.internal", port: 7001 },
        { host: "::1", port: 7002 },
      ]);
      expect(parseConfig({ REDIS_CLUSTER_NODES: "redis:6379" }).REDIS_CLUSTER_NODES).toEqual([{ host: "redis", port: 6379 }]);
    });

    it.each([
      ["no port", "127.0.0.1"],
      ["an empty port", "127.0.0.1:"],
      ["an empty host", ":7000"],
      ["port 0", "127.0.0.1:0"],
      ["a port above 65535", "127.0.0.1:65536"],
      ["a port that is not a number", "127.0.0.1:http"],
      ["a URL", "redis://127.0.0.1:7000"],
      ["an empty entry", "127.0.0.1:7000,,127.0.0.1:7001"],
      ["a trailing comma", "127.0.0.1:7000,"],
      ["spaces instead of commas", "127.0.0.1:7000 127.0.0.1:7001"],
      ["an unbracketed IPv6 address", "::1:7000"],
      ["a node listed twice", "127.0.0.1:7000,127.0.0.1:7000"],
    ])("refuses %s (%s) with a message naming the variable", (_what, value) => {
      expect(() => parseConfig({ REDIS_CLUSTER_NODES: value })).toThrow(/invalid configuration: .*REDIS_CLUSTER_NODES/);
    });
  });

  it("refuses a default hold TTL above the maximum", () => {
    expect(() => parseConfig({ HOLD_DEFAULT_TTL_SECONDS: "7200", HOLD_MAX_TTL_SECONDS: "3600" })).toThrow(/HOLD_DEFAULT_TTL_SECONDS/);
  });

  describe("the production switch", () => {
    it("NODE_ENV=production, alone, means production: without AUTH_TOKENS it is refused", () => {
      expect(() => parseConfig({ NODE_ENV: "production" })).toThrow(/invalid configuration: AUTH_TOKENS: production requires authentication/);
      // Every production requirement follows the switch, the fast path's key included.
      expect(() => parseConfig({ NODE_ENV: "production", AUTH_TOKENS: TOKENS })).toThrow(/IDEMPOTENCY_SECRET: production requires/);
      const config = parseConfig({ NODE_ENV: "production", AUTH_TOKENS: TOKENS, ...SECRET });
      expect(config.ENVIRONMENT).toBe("production");
    });

    it("NODE_ENV=production cannot be contradicted by ENVIRONMENT", () => {
      for (const mode of ["development", "test"]) {
        expect(() => parseConfig({ NODE_ENV: "production", ENVIRONMENT: mode, AUTH_TOKENS: TOKENS, ...SECRET })).toThrow(
          new RegExp(`ENVIRONMENT: ENVIRONMENT=${mode} contradicts NODE_ENV=production`),
        );
      }
      expect(parseConfig({ NODE_ENV: "production", ENVIRONMENT: "production", AUTH_TOKENS: TOKENS, ...SECRET }).ENVIRONMENT).toBe("production");
    });

    it("without either, and with the NODE_ENV a test runner or a laptop sets, the mode is development", () => {
      expect(parseConfig({}).ENVIRONMENT).toBe("development");
      for (const nodeEnv of ["development", "test", process.env["NODE_ENV"] ?? "test"]) {
        const config = parseConfig({ NODE_ENV: nodeEnv });
        expect([config.ENVIRONMENT, config.AUTH_TOKENS]).toEqual(["development", undefined]);
      }
    });

    it("an unfamiliar NODE_ENV decides nothing: ENVIRONMENT must say which mode", () => {
      expect(() => parseConfig({ NODE_ENV: "staging" })).toThrow(/ENVIRONMENT: NODE_ENV="staging" does not say .*set ENVIRONMENT/);
      expect(() => parseConfig({ NODE_ENV: "prod" })).toThrow(/ENVIRONMENT/);
      expect(parseConfig({ NODE_ENV: "staging", ENVIRONMENT: "test", AUTH_TOKENS: TOKENS }).ENVIRONMENT).toBe("test");
    });

    it("only development runs without AUTH_TOKENS: test and production refuse to start without", () => {
      expect(parseConfig({ ENVIRONMENT: "development" }).AUTH_TOKENS).toBeUndefined();
      expect(() => parseConfig({ ENVIRONMENT: "test" })).toThrow(/AUTH_TOKENS: test requires authentication/);
      expect(() => parseConfig({ ENVIRONMENT: "production" })).toThrow(/AUTH_TOKENS: production requires authentication/);
      expect(parseConfig({ ENVIRONMENT: "test", AUTH_TOKENS: TOKENS }).ENVIRONMENT).toBe("test");
    });

    it.each([
      ["a comma", ","],
      ["blanks and commas", " , ,"],
      ["blanks", "   "],
      ["a tab", "\t"],
    ])("AUTH_TOKENS that holds no token (%s) is refused in every mode", (_what, value) => {
      for (const env of [{}, { ENVIRONMENT: "test" }, { NODE_ENV: "production" }]) {
        expect(() => parseConfig({ ...env, AUTH_TOKENS: value })).toThrow(/invalid configuration: .*AUTH_TOKENS: AUTH_TOKENS holds no token/);
      }
    });

    it("reads AUTH_TOKENS into the principals and their hashes", () => {
      const tokens = parseConfig({ AUTH_TOKENS: ` ${TOKENS} ,billing:billing:${sha256("b").toString("hex")}` }).AUTH_TOKENS;
      expect(tokens?.map((t) => [t.name, t.role, t.sha256.toString("hex")])).toEqual([
        ["ops", "admin", sha256("ops-token").toString("hex")],
        ["billing", "billing", sha256("b").toString("hex")],
      ]);
    });

    describe("the migration step", () => {
      afterEach(() => {
        vi.unstubAllEnvs();
      });

      it("reads DATABASE_URL alone: a production migration job needs no AUTH_TOKENS or IDEMPOTENCY_SECRET", () => {
        vi.stubEnv("NODE_ENV", "production");
        vi.stubEnv("AUTH_TOKENS", undefined);
        vi.stubEnv("IDEMPOTENCY_SECRET", undefined);
        vi.stubEnv("DATABASE_URL", "postgres://migrator@db.internal:5432/credit");
        expect(() => parseConfig(process.env)).toThrow(/AUTH_TOKENS/);
        expect(loadDatabaseUrl()).toBe("postgres://migrator@db.internal:5432/credit");
        vi.stubEnv("DATABASE_URL", "mysql://db.internal/credit");
        expect(() => loadDatabaseUrl()).toThrow(/invalid configuration: DATABASE_URL/);
      });
    });

    it("warns at start when production or test runs without TLS, and when authentication is off", () => {
      expect(configWarnings(parseConfig({ NODE_ENV: "production", AUTH_TOKENS: TOKENS, ...SECRET }))).toEqual([expect.stringMatching(/without TLS.*plaintext/)]);
      expect(configWarnings(parseConfig({ ENVIRONMENT: "test", AUTH_TOKENS: TOKENS }))).toEqual([expect.stringMatching(/without TLS.*plaintext/)]);
      expect(configWarnings(parseConfig({ NODE_ENV: "production", AUTH_TOKENS: TOKENS, ...SECRET, TLS_CERT_FILE: "s.crt", TLS_KEY_FILE: "s.key" }))).toEqual([]);
      expect(configWarnings(parseConfig({}))).toEqual([expect.stringMatching(/authentication is off/)]);
      expect(configWarnings(parseConfig({ AUTH_TOKENS: TOKENS }))).toEqual([]);
    });
  });

  describe("connection limits", () => {
    it("are on by default", () => {
      const c = parseConfig({});
      expect({
        connections: c.GRPC_MAX_CONNECTIONS,
        streams: c.GRPC_MAX_CONCURRENT_STREAMS,
        streamingCalls: c.GRPC_MAX_STREAMING_CALLS,
        watchersPerAccount: c.WATCH_MAX_PER_ACCOUNT,
        handshake: c.GRPC_HANDSHAKE_TIMEOUT_MS,
        idle: c.GRPC_CONNECTION_IDLE_MS,
        age: c.GRPC_CONNECTION_MAX_AGE_MS,
        grace: c.GRPC_CONNECTION_AGE_GRACE_MS,
        keepalive: c.GRPC_TCP_KEEPALIVE_MS,
        keepaliveTimeout: c.GRPC_TCP_KEEPALIVE_TIMEOUT_MS,
      }).toEqual({ connections: 1000, streams: 100, streamingCalls: 1000, watchersPerAccount: 100, handshake: 10_000, idle: 300_000, age: 1_800_000, grace: 60_000, keepalive: 120_000, keepaliveTimeout: 30_000 });
    });

    it("0 turns the idle, age and keepalive timers off", () => {
      const c = parseConfig({ GRPC_CONNECTION_IDLE_MS: "0", GRPC_CONNECTION_MAX_AGE_MS: "0", GRPC_TCP_KEEPALIVE_MS: "0" });
      expect([c.GRPC_CONNECTION_IDLE_MS, c.GRPC_CONNECTION_MAX_AGE_MS, c.GRPC_TCP_KEEPALIVE_MS]).toEqual([0, 0, 0]);
    });

    it.each([
      ["GRPC_MAX_CONNECTIONS", "0"],
      ["GRPC_MAX_CONCURRENT_STREAMS", "0"],
      ["GRPC_MAX_CONCURRENT_STREAMS", "1.5"],
      ["GRPC_MAX_STREAMING_CALLS", "0"],
      ["WATCH_MAX_PER_ACCOUNT", "0"],
      ["GRPC_HANDSHAKE_TIMEOUT_MS", "0"],
      ["GRPC_CONNECTION_IDLE_MS", "-1"],
      // Node timers fire at once past 2^31 - 1 ms: a typo of a few zeros must not close every connection at once.
      ["GRPC_CONNECTION_MAX_AGE_MS", "3000000000"],
      ["GRPC_CONNECTION_AGE_GRACE_MS", "soon"],
      ["GRPC_TCP_KEEPALIVE_MS", "-5"],
      ["GRPC_TCP_KEEPALIVE_MS", "500"],
      ["GRPC_TCP_KEEPALIVE_TIMEOUT_MS", "500"],
    ])("refuses %s=%s", (name, value) => {
      expect(() => parseConfig({ [name]: value })).toThrow(new RegExp(`invalid configuration: .*${name}`));
    });
  });
});
