import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { REDIS_HEALTH } from "../../src/service.js";
import { TEST_REDIS_URL } from "../support/env.js";
import { startTestService, type TestService } from "../support/harness.js";
import { TcpProxy } from "../support/tcp-proxy.js";

const target = new URL(TEST_REDIS_URL);
const proxy = new TcpProxy(target.hostname, Number(target.port || 6379));
let t: TestService;

beforeAll(async () => {
  const port = await proxy.start();
  t = await startTestService({ REDIS_URL: `redis://127.0.0.1:${port}` });
});
afterAll(async () => {
  await t.stop();
  await proxy.stop();
});

describe("health while Redis is away", () => {
  it(`reports ${REDIS_HEALTH} NOT_SERVING while the server itself stays SERVING, and SERVING again when Redis is back`, async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${t.service.port}` }));
    expect((await health.check({ service: REDIS_HEALTH })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const port = proxy.port;
    await proxy.stop();
    // The degradation is noticed on the next idempotency lookup.
    await t.admin.adjustCredits({ accountId: "redis-health", amount: 1n, reason: "probe", idempotencyKey: "redis-health-1" });
    expect((await health.check({ service: REDIS_HEALTH })).status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    await proxy.start(port);
    let status = HealthCheckResponse_ServingStatus.NOT_SERVING;
    for (let i = 0; i < 100 && status !== HealthCheckResponse_ServingStatus.SERVING; i += 1) {
      await t.admin.adjustCredits({ accountId: "redis-health", amount: 1n, reason: "probe", idempotencyKey: `redis-health-back-${i}` }).catch(() => undefined);
      status = (await health.check({ service: REDIS_HEALTH })).status;
      if (status !== HealthCheckResponse_ServingStatus.SERVING) await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });
});
