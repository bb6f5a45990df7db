import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { RedisIdempotencyCache } from "../../src/idempotency/redis-cache.js";
import { REDIS_HEALTH } from "../../src/service.js";
import { newAccountId, startTestService, type TestService } from "../support/harness.js";
import { sampleOf, scrape } from "../support/prometheus.js";
import { commandCalls, pingOnce, type RedisServerProcess, startRedisServer } from "../support/redis-server.js";

/**
 * A hung Redis — SIGSTOP: connections stay open and nothing answers, so every command waits for
 * its timeout — must not slow every call down: after a few timeouts the service skips Redis
 * (Postgres alone, as when Redis refuses connections) and finds it again by itself.
 */

let server: RedisServerProcess;
let t: TestService;
let inspect: Redis;

beforeAll(async () => {
  server = await startRedisServer();
  t = await startTestService({ REDIS_URL: server.url });
  inspect = new Redis(server.url);
});
afterAll(async () => {
  inspect?.disconnect();
  await t?.stop();
  await server?.stop();
});

/** Commands that carry idempotency keys, as Redis counted them. */
async function keyCommands(): Promise<number> {
  const calls = await commandCalls(server.url);
  return (calls["set"] ?? 0) + (calls["get"] ?? 0) + (calls["eval"] ?? 0) + (calls["evalsha"] ?? 0);
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("the service with Redis hung (SIGSTOP)", () => {
  it("sends Redis at most three commands, answers every call from Postgres, reports credit.redis NOT_SERVING, and uses Redis again once it answers", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${t.service.port}` }));
    const redisHealth = async () => (await health.check({ service: REDIS_HEALTH })).status;
    expect(await redisHealth()).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const accountId = newAccountId("hung");
    const before = await keyCommands();

    server.pause();
    try {
      for (let i = 0; i < 10; i++) {
        await t.admin.adjustCredits({ accountId, amount: 1n, reason: "hung redis", idempotencyKey: `hung-${i}` });
      }
      expect(await redisHealth()).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
      expect(sampleOf(await scrape(t.service.metricsPort), "credit_redis_up")).toBe(0);
      expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      server.resume();
    }
    // Redis now runs what was sent to it while it was stopped, then counts it.
    await until("Redis answering", () => pingOnce({ port: server.port }).then(() => true, () => false));
    expect(await keyCommands()).toBeLessThanOrEqual(before + 3);

    await until("credit.redis SERVING", async () => (await redisHealth()) === HealthCheckResponse_ServingStatus.SERVING);
    expect(sampleOf(await scrape(t.service.metricsPort), "credit_redis_up")).toBe(1);
    await t.admin.adjustCredits({ accountId, amount: 1n, reason: "hung redis", idempotencyKey: "hung-after" });
    expect((await inspect.get(RedisIdempotencyCache.key(accountId, "hung-after")))?.startsWith("D|")).toBe(true);
    const balance = await t.credit.getBalance({ accountId });
    expect(balance.balance!.available).toBe(11n); // each call applied once
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});
