import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Cluster, Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { RedisIdempotencyCache } from "../../src/idempotency/redis-cache.js";
import { REDIS_HEALTH } from "../../src/service.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { startRedisCluster } from "../support/redis-cluster.js";
import { pingOnce, type RedisServerProcess, startRedisServer } from "../support/redis-server.js";

/**
 * Redis with AUTH (a password, an ACL user) and TLS, single node and cluster, each a redis-server
 * of this file's own: the service reaches it with REDIS_URL's credentials or REDIS_USERNAME /
 * REDIS_PASSWORD / REDIS_TLS / REDIS_TLS_CA_FILE, and its keys land there.
 */

const PASSWORD = "auth-test-password";
/** An ACL user allowed only what the fast path sends, on its own keys. */
const ACL_USER = ["--user", "credit", "on", ">credit-pw", "~credit:idem:*", "+set", "+get", "+del", "+eval", "+ping", "+info"];

let certDir: string;
let ca: string;
let tlsArgs: string[];

beforeAll(() => {
  // One self-signed certificate for 127.0.0.1: the server's, and the CA the clients trust.
  certDir = mkdtempSync(path.join(tmpdir(), "credit-redis-tls-"));
  ca = path.join(certDir, "cert.pem");
  const key = path.join(certDir, "key.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", ca, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], {
    stdio: "ignore",
  });
  tlsArgs = ["--tls-cert-file", ca, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"];
});
afterAll(() => {
  rmSync(certDir, { recursive: true, force: true });
});

/** Starts the service with `env`, runs one AdjustCredits, and returns the Redis key it should have used. */
async function withService<T>(env: Record<string, string>, check: (t: TestService, redisKey: string) => Promise<T>): Promise<T> {
  const t = await startTestService(env);
  try {
    const accountId = newAccountId("auth");
    const key = newKey("adjust");
    await t.admin.adjustCredits({ accountId, amount: 5n, reason: "redis auth", idempotencyKey: key });
    return await check(t, RedisIdempotencyCache.key(accountId, key));
  } finally {
    await t.stop();
  }
}

const redisHealth = async (t: TestService) =>
  (await createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${t.service.port}` })).check({ service: REDIS_HEALTH })).status;

describe("a single Redis with requirepass and an ACL user", () => {
  let server: RedisServerProcess;
  let admin: Redis;
  beforeAll(async () => {
    server = await startRedisServer({ args: ["--requirepass", PASSWORD, ...ACL_USER], ready: (port) => pingOnce({ port, password: PASSWORD }) });
    admin = new Redis({ host: "127.0.0.1", port: server.port, password: PASSWORD });
  });
  afterAll(async () => {
    admin?.disconnect();
    await server?.stop();
  });

  it.each([
    ["the password in REDIS_URL", () => ({ REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${server.port}` })],
    ["REDIS_PASSWORD", () => ({ REDIS_URL: server.url, REDIS_PASSWORD: PASSWORD })],
    ["an ACL user in REDIS_URL", () => ({ REDIS_URL: `redis://credit:credit-pw@127.0.0.1:${server.port}` })],
    ["REDIS_USERNAME and REDIS_PASSWORD (an ACL user limited to credit:idem:* and SET GET DEL EVAL PING INFO)", () => ({ REDIS_URL: server.url, REDIS_USERNAME: "credit", REDIS_PASSWORD: "credit-pw" })],
  ])("with %s, the fast path stores its responses there", async (_, env) => {
    await withService(env(), async (t, redisKey) => {
      expect(await redisHealth(t)).toBe(HealthCheckResponse_ServingStatus.SERVING);
      expect((await admin.get(redisKey))?.startsWith("D|")).toBe(true);
    });
  });

  it("with a wrong password, credit.redis is NOT_SERVING and calls are answered from Postgres alone", async () => {
    await withService({ REDIS_URL: server.url, REDIS_PASSWORD: "wrong" }, async (t, redisKey) => {
      expect(await redisHealth(t)).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
      expect(await admin.exists(redisKey)).toBe(0);
    });
  });
});

describe("a single Redis over TLS (and a password)", () => {
  let server: RedisServerProcess;
  let admin: Redis;
  beforeAll(async () => {
    const tls = () => ({ ca: readFileSync(ca) });
    server = await startRedisServer({ tls: true, args: [...tlsArgs, "--requirepass", PASSWORD], ready: (port) => pingOnce({ port, password: PASSWORD, tls: tls() }) });
    admin = new Redis({ host: "127.0.0.1", port: server.port, password: PASSWORD, tls: tls() });
  });
  afterAll(async () => {
    admin?.disconnect();
    await server?.stop();
  });

  it.each([
    ["a rediss:// REDIS_URL and REDIS_TLS_CA_FILE", () => ({ REDIS_URL: `rediss://:${PASSWORD}@127.0.0.1:${server.port}`, REDIS_TLS_CA_FILE: ca })],
    ["REDIS_TLS=true, REDIS_TLS_CA_FILE and REDIS_PASSWORD", () => ({ REDIS_URL: server.url, REDIS_TLS: "true", REDIS_TLS_CA_FILE: ca, REDIS_PASSWORD: PASSWORD })],
  ])("with %s, the fast path stores its responses there", async (_, env) => {
    await withService(env(), async (t, redisKey) => {
      expect(await redisHealth(t)).toBe(HealthCheckResponse_ServingStatus.SERVING);
      expect((await admin.get(redisKey))?.startsWith("D|")).toBe(true);
    });
  });

  it("without the CA to trust, the server's certificate is refused: credit.redis NOT_SERVING, calls answered from Postgres", async () => {
    await withService({ REDIS_URL: `rediss://:${PASSWORD}@127.0.0.1:${server.port}` }, async (t, redisKey) => {
      expect(await redisHealth(t)).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
      expect(await admin.exists(redisKey)).toBe(0);
    });
  });
});

describe("a Redis Cluster with requirepass and TLS on every node", () => {
  it("REDIS_CLUSTER_NODES with REDIS_PASSWORD, REDIS_TLS and REDIS_TLS_CA_FILE: the keys land in the cluster", async () => {
    const cluster = await startRedisCluster(3, {
      tls: true,
      serverArgs: [...tlsArgs, "--requirepass", PASSWORD, "--masterauth", PASSWORD],
      cliArgs: ["--tls", "--cacert", ca, "-a", PASSWORD, "--no-auth-warning"],
    });
    const inspect = new Cluster([...cluster.startupNodes], { redisOptions: { password: PASSWORD, tls: { ca: readFileSync(ca) } } });
    try {
      await withService(
        { REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_URL: "redis://127.0.0.1:1", REDIS_PASSWORD: PASSWORD, REDIS_TLS: "true", REDIS_TLS_CA_FILE: ca },
        async (t, redisKey) => {
          expect(await redisHealth(t)).toBe(HealthCheckResponse_ServingStatus.SERVING);
          expect((await inspect.get(redisKey))?.startsWith("D|")).toBe(true);
        },
      );
    } finally {
      inspect.disconnect();
      await cluster.stop();
    }
  });
});
