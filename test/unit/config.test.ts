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
  ])("refuses %s=%s with a message naming the variable", (name, value) => {
    expect(() => parseConfig({ [name]: value })).toThrow(new RegExp(`invalid configuration: .*${name}`));
  });

  it("refuses a default hold TTL above the maximum", () => {
    expect(() => parseConfig({ HOLD_DEFAULT_TTL_SECONDS: "7200", HOLD_MAX_TTL_SECONDS: "3600" })).toThrow(/HOLD_DEFAULT_TTL_SECONDS/);
  });
});
