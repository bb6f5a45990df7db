import { describe, expect, it } from "vitest";
import { DEVELOPMENT_IDEMPOTENCY_SECRET, parseConfig } from "../../src/config.js";
import { redisSecurity } from "../../src/idempotency/redis-client.js";

const PRODUCTION = { ENVIRONMENT: "production", AUTH_TOKENS: "runner:runner:" + "a".repeat(64) };
const SECRET = "0123456789abcdef0123456789abcdef";

describe("IDEMPOTENCY_SECRET", () => {
  it("defaults outside production to the fixed development secret, so development servers sharing Redis accept each other's values", () => {
    expect(parseConfig({}).IDEMPOTENCY_SECRET).toBe(DEVELOPMENT_IDEMPOTENCY_SECRET);
    // ENVIRONMENT=test requires authentication (only development runs without tokens).
    expect(parseConfig({ ENVIRONMENT: "test", AUTH_TOKENS: PRODUCTION.AUTH_TOKENS }).IDEMPOTENCY_SECRET).toBe(DEVELOPMENT_IDEMPOTENCY_SECRET);
  });

  it("is required in production, and the development secret is refused there", () => {
    expect(() => parseConfig(PRODUCTION)).toThrow(/invalid configuration: .*IDEMPOTENCY_SECRET: production requires IDEMPOTENCY_SECRET/);
    expect(() => parseConfig({ ...PRODUCTION, IDEMPOTENCY_SECRET: DEVELOPMENT_IDEMPOTENCY_SECRET })).toThrow(/IDEMPOTENCY_SECRET/);
    expect(parseConfig({ ...PRODUCTION, IDEMPOTENCY_SECRET: SECRET }).IDEMPOTENCY_SECRET).toBe(SECRET);
  });

  it("must be at least 32 characters, in any environment", () => {
    expect(() => parseConfig({ IDEMPOTENCY_SECRET: SECRET.slice(1) })).toThrow(/invalid configuration: .*IDEMPOTENCY_SECRET: must be at least 32 characters/);
    expect(() => parseConfig({ ...PRODUCTION, IDEMPOTENCY_SECRET: SECRET.slice(1) })).toThrow(/IDEMPOTENCY_SECRET/);
  });
});

describe("Redis AUTH and TLS", () => {
  it("are off by default", () => {
    expect(redisSecurity(parseConfig({}))).toEqual({});
  });

  it("REDIS_USERNAME, REDIS_PASSWORD and REDIS_TLS become the options of every connection; a CA file is read", () => {
    expect(redisSecurity(parseConfig({ REDIS_USERNAME: "credit", REDIS_PASSWORD: "pw", REDIS_TLS: "true" }))).toEqual({ username: "credit", password: "pw", tls: {} });
    const withCa = redisSecurity(parseConfig({ REDIS_TLS: "true", REDIS_TLS_CA_FILE: "package.json" }));
    expect(withCa.tls?.ca?.toString()).toContain('"name": "credit-service"');
  });

  it("refuses credentials both in REDIS_URL and in REDIS_USERNAME / REDIS_PASSWORD", () => {
    expect(() => parseConfig({ REDIS_URL: "redis://:pw@127.0.0.1:6379", REDIS_PASSWORD: "other" })).toThrow(/invalid configuration: .*REDIS_PASSWORD: give Redis credentials/);
    expect(() => parseConfig({ REDIS_URL: "redis://u:pw@127.0.0.1:6379", REDIS_USERNAME: "other" })).toThrow(/REDIS_PASSWORD: give Redis credentials/);
    expect(parseConfig({ REDIS_URL: "redis://u:pw@127.0.0.1:6379" }).REDIS_URL).toBe("redis://u:pw@127.0.0.1:6379");
  });

  it("refuses a CA file without TLS; a rediss:// URL turns TLS on for the single node, but not for a cluster", () => {
    expect(() => parseConfig({ REDIS_TLS_CA_FILE: "ca.pem" })).toThrow(/invalid configuration: .*REDIS_TLS_CA_FILE: REDIS_TLS_CA_FILE needs REDIS_TLS=true/);
    expect(parseConfig({ REDIS_URL: "rediss://127.0.0.1:6380", REDIS_TLS_CA_FILE: "ca.pem" }).REDIS_TLS_CA_FILE).toBe("ca.pem");
    expect(() => parseConfig({ REDIS_URL: "rediss://127.0.0.1:6380", REDIS_CLUSTER_NODES: "127.0.0.1:7000", REDIS_TLS_CA_FILE: "ca.pem" })).toThrow(/REDIS_TLS_CA_FILE/);
    expect(parseConfig({ REDIS_CLUSTER_NODES: "127.0.0.1:7000", REDIS_TLS: "true", REDIS_TLS_CA_FILE: "ca.pem" }).REDIS_TLS).toBe(true);
  });

  it("refuses REDIS_TLS that is not a boolean", () => {
    expect(() => parseConfig({ REDIS_TLS: "yes" })).toThrow(/invalid configuration: .*REDIS_TLS/);
  });
});
