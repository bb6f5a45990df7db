import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";

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
});
