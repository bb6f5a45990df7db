import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import type { IdempotencyClaim, IdempotencyScope } from "../../src/app/ports.js";
import { REDIS_BREAKER, RedisIdempotencyCache } from "../../src/idempotency/redis-cache.js";
import { createRedisClient, createRedisClusterClient, probeRedis, waitReady } from "../../src/idempotency/redis-client.js";
import { REDIS_HEALTH } from "../../src/service.js";
import { newAccountId, startTestService, type TestService } from "../support/harness.js";
import { sampleOf, scrape } from "../support/prometheus.js";
import { startRedisCluster } from "../support/redis-cluster.js";
import { commandCalls, pingOnce, type RedisServerProcess, startRedisServer } from "../support/redis-server.js";
import { TcpProxy } from "../support/tcp-proxy.js";

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
    expect(await keyCommands()).toBeLessThanOrEqual(before + REDIS_BREAKER.failureThreshold);

    await until("credit.redis SERVING", async () => (await redisHealth()) === HealthCheckResponse_ServingStatus.SERVING);
    expect(sampleOf(await scrape(t.service.metricsPort), "credit_redis_up")).toBe(1);
    await t.admin.adjustCredits({ accountId, amount: 1n, reason: "hung redis", idempotencyKey: "hung-after" });
    expect((await inspect.get(RedisIdempotencyCache.key(accountId, "hung-after")))?.startsWith("D|")).toBe(true);
    const balance = await t.credit.getBalance({ accountId });
    expect(balance.balance!.available).toBe(11n); // each call applied once
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});

describe("the cache's circuit breaker", () => {
  const SECRET = "breaker-test-secret-0123456789abcdef";
  const scope: IdempotencyScope = { kind: "account", id: newAccountId("breaker") };
  const claim = (i: number): IdempotencyClaim => ({ key: `breaker-${i}`, method: "Reserve", requestHash: Buffer.alloc(32, i) });
  const response = new Uint8Array([1, 2, 3]);

  /** A cache of its own on `url`, recording each time it gives Redis up (false) or finds it again (true). */
  async function cacheOn(url: string) {
    const client = createRedisClient(url);
    client.on("error", () => undefined);
    const changes: boolean[] = [];
    const cache = new RedisIdempotencyCache(client, { ttlMs: 60_000, lockMs: 10_000, now: Date.now, secret: SECRET, onAvailability: (up) => changes.push(up) });
    expect(await waitReady(client, 5_000)).toBe(true);
    return { client, cache, changes };
  }

  it("opens after three failed commands in a row; open, begin/complete/abandon send Redis nothing; the probe closes it once Redis answers", async () => {
    const { cache, changes } = await cacheOn(server.url);
    try {
      expect((await cache.begin(scope, claim(0))).kind).toBe("claimed");
      const before = await keyCommands();
      server.pause();
      try {
        // Each of these waits for the 500 ms command timeout: begin, its complete, the next begin.
        expect((await cache.begin(scope, claim(1))).kind).toBe("unavailable");
        await cache.complete(scope, claim(1), response);
        expect([cache.available, changes]).toEqual([true, []]);
        expect((await cache.begin(scope, claim(2))).kind).toBe("unavailable");
        expect([cache.available, changes]).toEqual([false, [false]]);
        for (let i = 3; i < 23; i++) {
          expect((await cache.begin(scope, claim(i))).kind).toBe("unavailable");
          await cache.complete(scope, claim(i), response);
          await cache.abandon(scope, claim(i), "token");
        }
        expect(cache.available).toBe(false);
      } finally {
        server.resume();
      }
      await until("the breaker closing", async () => cache.available);
      expect(changes).toEqual([false, true]);
      expect(await keyCommands()).toBe(before + 3); // the three that opened it, nothing since
      expect((await cache.begin(scope, claim(30))).kind).toBe("claimed");
    } finally {
      await cache.close();
    }
  });

  it("opens at the first failure when the connection is down (refused), and closes once Redis can be reached again", async () => {
    const proxy = new TcpProxy("127.0.0.1", server.port);
    const port = await proxy.start();
    const { client, cache, changes } = await cacheOn(`redis://127.0.0.1:${port}`);
    try {
      await proxy.stop();
      await until("the client noticing", async () => client.status !== "ready");
      expect((await cache.begin(scope, claim(40))).kind).toBe("unavailable");
      expect([cache.available, changes]).toEqual([false, [false]]);
      await proxy.start(port);
      await until("the breaker closing", async () => cache.available);
      expect(changes).toEqual([false, true]);
      expect((await cache.begin(scope, claim(41))).kind).toBe("claimed");
    } finally {
      await cache.close();
      await proxy.stop();
    }
  });
});

describe("the breaker on a Redis Cluster", () => {
  it("the probe needs every node serving slots: one hung or killed keeps the breaker open through several probes; a hung one that answers again closes it", async () => {
    const cluster = await startRedisCluster();
    const client = createRedisClusterClient(cluster.startupNodes);
    client.on("error", () => undefined);
    const changes: boolean[] = [];
    const cache = new RedisIdempotencyCache(client, { ttlMs: 60_000, lockMs: 10_000, now: Date.now, secret: "cluster-breaker-secret-0123456789ab", onAvailability: (up) => changes.push(up) });
    const [hung, healthy] = cluster.ports as [number, number, number];
    const pings = async () => (await commandCalls(`redis://127.0.0.1:${healthy}`))["ping"] ?? 0;
    try {
      expect(await waitReady(client, 10_000)).toBe(true);
      await until("a connection to every master", async () => client.nodes("master").length === 3);
      await expect(probeRedis(client, 250)).resolves.toBeUndefined();
      cluster.pause(hung);
      try {
        await expect(probeRedis(client, 250)).rejects.toThrow(/did not answer PING/);
        cache.assumeDown(new Error("a master is hung"));
        const before = await pings();
        await until("two probes reaching a healthy master, or the breaker closing", async () => cache.available || (await pings()) >= before + 2);
        expect([cache.available, changes]).toEqual([false, [false]]);
      } finally {
        cluster.resume(hung);
      }
      await until("the breaker closing", async () => cache.available);
      expect(changes).toEqual([false, true]);

      // Killed: the client drops its connection, but its slots still name it.
      const onDead: IdempotencyScope[] = [];
      for (let i = 0; onDead.length < 3; i++) {
        const scope: IdempotencyScope = { kind: "account", id: `dead-${i}` };
        const slot = Number(await client.cluster("KEYSLOT", RedisIdempotencyCache.keyOf(scope, "k")));
        if (client.slots[slot]?.[0] === `127.0.0.1:${hung}`) onDead.push(scope);
      }
      await cluster.kill(hung);
      for (const scope of onDead) expect((await cache.begin(scope, { key: "k", method: "Reserve", requestHash: Buffer.alloc(32) })).kind).toBe("unavailable");
      expect([cache.available, changes]).toEqual([false, [false, true, false]]);
      const before = await pings();
      await until("two probes reaching a live master, or the breaker closing", async () => cache.available || (await pings()) >= before + 2);
      expect(cache.available).toBe(false);
    } finally {
      await cache.close();
      await cluster.stop();
    }
  });
});
