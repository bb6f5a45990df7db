import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus, Health } from "../../src/gen/grpc/health/v1/health_pb.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { TcpProxy } from "../support/tcp-proxy.js";

const target = new URL(TEST_DATABASE_URL);
const proxy = new TcpProxy(target.hostname, Number(target.port || 5432));
let t: TestService;

async function until<T>(probe: () => Promise<T>, done: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (done(value) || performance.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  const port = await proxy.start();
  const viaProxy = new URL(TEST_DATABASE_URL);
  viaProxy.port = String(port);
  t = await startTestService({ DATABASE_URL: viaProxy.toString(), HEALTH_PROBE_INTERVAL_MS: "200" });
});
afterAll(async () => {
  await t.stop();
  await proxy.stop();
});

describe("while Postgres is unreachable", () => {
  it("health says NOT_SERVING, calls fail UNAVAILABLE, and both recover when it is back", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${t.service.port}` }));
    const accountId = newAccountId();
    await t.admin.adjustCredits({ accountId, amount: 100n, reason: "outage test", idempotencyKey: newKey() });
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);

    const port = proxy.port;
    await proxy.stop();
    const down = await until(() => health.check({}), (r) => r.status === HealthCheckResponse_ServingStatus.NOT_SERVING);
    expect(down.status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);

    const calls = [
      t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 5n } }),
      t.credit.getBalance({ accountId }),
    ];
    for (const result of await Promise.allSettled(calls)) {
      expect(result.status).toBe("rejected");
      const err = ConnectError.from((result as PromiseRejectedResult).reason);
      expect(err.code).toBe(Code.Unavailable);
    }

    await proxy.start(port);
    const up = await until(() => health.check({}), (r) => r.status === HealthCheckResponse_ServingStatus.SERVING);
    expect(up.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const balance = await until(
      () => t.credit.getBalance({ accountId }).catch(() => null),
      (r) => r !== null,
    );
    // Nothing the failed calls attempted was applied.
    expect(balance?.balance?.available).toBe(100n);
    expect(balance?.balance?.held).toBe(0n);
  });
});
