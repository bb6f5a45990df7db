import { randomBytes, randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type CreditClients, createCreditClients, ReleaseReason } from "../../src/client/index.js";
import { parseConfig } from "../../src/config.js";
import { FakeClock } from "../../src/domain/clock.js";
import { sha256 } from "../../src/rpc/auth.js";
import { type RunningService, startService } from "../../src/service.js";
import { TEST_DATABASE_URL, TEST_REDIS_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, TEST_EPOCH, type TestService } from "../support/harness.js";
import { counterOf, sampleOf, scrape } from "../support/prometheus.js";
import { DB_GAUGE_MAX_AGE_MS } from "../../src/observability/metrics.js";

/**
 * Operators see the service through /metrics (Prometheus) and one JSON log line per call. The
 * numbers must move by exactly what the calls did; the logs must say who called what, with which
 * outcome, under the request id the caller sent — and never contain a token.
 */

const CREDIT = "credit.v1.CreditService";
const ADMIN = "credit.v1.CreditAdminService";
const rpc = (service: string, method: string, code: string) => ({ service, method, code });

async function codeOf(call: Promise<unknown>): Promise<Code> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err).code;
  }
  return expect.unreachable("the call succeeded but should have failed");
}

describe("metrics", () => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService();
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("/metrics answers in Prometheus text format on METRICS_PORT, other paths are 404", async () => {
    const res = await fetch(`http://127.0.0.1:${t.service.metricsPort}/metrics`);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(await res.text()).toContain("# TYPE grpc_server_handled_total counter");
    expect((await fetch(`http://127.0.0.1:${t.service.metricsPort}/other`)).status).toBe(404);
  });

  it("grpc_server_handled_total and the latency histogram move by exactly the calls made, per method and code", async () => {
    const accountId = newAccountId("obs");
    await t.admin.adjustCredits({ accountId, amount: 500n, reason: "metrics", idempotencyKey: newKey() });
    const before = await scrape(t.service.metricsPort);

    for (let i = 0; i < 3; i += 1) await t.credit.getBalance({ accountId });
    for (let i = 0; i < 2; i += 1) expect(await codeOf(t.credit.getBalance({ accountId: newAccountId("obs-ghost") }))).toBe(Code.NotFound);
    expect(await codeOf(t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: -5n } }))).toBe(Code.InvalidArgument);
    await t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 5n } });

    const after = await scrape(t.service.metricsPort);
    const expected: [Record<string, string>, number][] = [
      [rpc(CREDIT, "GetBalance", "OK"), 3],
      [rpc(CREDIT, "GetBalance", "NOT_FOUND"), 2],
      [rpc(CREDIT, "Reserve", "INVALID_ARGUMENT"), 1],
      [rpc(CREDIT, "Reserve", "OK"), 1],
      [rpc(ADMIN, "AdjustCredits", "OK"), 0],
      [rpc(CREDIT, "Commit", "OK"), 0],
    ];
    for (const [labels, delta] of expected) {
      const handled = counterOf(after, "grpc_server_handled_total", labels) - counterOf(before, "grpc_server_handled_total", labels);
      const timed = counterOf(after, "grpc_server_handling_seconds_count", labels) - counterOf(before, "grpc_server_handling_seconds_count", labels);
      expect({ ...labels, handled, timed }).toEqual({ ...labels, handled: delta, timed: delta });
    }
    const sumBefore = counterOf(before, "grpc_server_handling_seconds_sum", rpc(CREDIT, "GetBalance", "OK"));
    expect(counterOf(after, "grpc_server_handling_seconds_sum", rpc(CREDIT, "GetBalance", "OK"))).toBeGreaterThan(sumBefore);
    // Every observation lands in the +Inf bucket.
    expect(sampleOf(after, "grpc_server_handling_seconds_bucket", { ...rpc(CREDIT, "GetBalance", "NOT_FOUND"), le: "+Inf" })).toBe(
      counterOf(after, "grpc_server_handling_seconds_count", rpc(CREDIT, "GetBalance", "NOT_FOUND")),
    );
  });

  it("credit_holds_pending counts an open hold and drops when it is released (within its refresh interval)", async () => {
    const accountId = newAccountId("obs-hold");
    await t.admin.adjustCredits({ accountId, amount: 100n, reason: "metrics", idempotencyKey: newKey() });
    const pending = async () => sampleOf(await scrape(t.service.metricsPort), "credit_holds_pending");
    const within = { timeout: DB_GAUGE_MAX_AGE_MS * 3, interval: 100 };
    // Other tests' holds stay open in this database: the count moves from wherever it is.
    const before = await t.service.store.countHeld();
    await vi.waitFor(async () => expect(await pending()).toBe(before), within);

    const held = await t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 30n } });
    await vi.waitFor(async () => expect(await pending()).toBe(before + 1), within);

    await t.credit.release({ reservationId: held.reservation!.reservationId, idempotencyKey: newKey(), reason: ReleaseReason.CANCELLED });
    await vi.waitFor(async () => expect(await pending()).toBe(before), within);
  });

  it("a flood of concurrent scrapes counts open holds at most once per refresh interval, one count at a time", async () => {
    // A counting wrapper around the real store method (which still queries Postgres).
    const store = t.service.store;
    const countHeld = store.countHeld;
    let calls = 0;
    let running = 0;
    let mostAtOnce = 0;
    store.countHeld = async function (this: typeof store) {
      calls += 1;
      running += 1;
      mostAtOnce = Math.max(mostAtOnce, running);
      try {
        return await countHeld.call(this);
      } finally {
        running -= 1;
      }
    };
    try {
      const started = performance.now();
      const notFound = rpc(CREDIT, "GetBalance", "NOT_FOUND");
      for (let round = 0; round < 5; round += 1) {
        // Scrapes share renderings, yet each still sees every call answered before it was sent.
        const before = counterOf(await scrape(t.service.metricsPort), "grpc_server_handled_total", notFound);
        expect(await codeOf(t.credit.getBalance({ accountId: newAccountId("obs-ghost") }))).toBe(Code.NotFound);
        const texts = await Promise.all(Array.from({ length: 40 }, () => scrape(t.service.metricsPort)));
        for (const text of texts) {
          expect(sampleOf(text, "credit_holds_pending")).not.toBeNull();
          expect(counterOf(text, "grpc_server_handled_total", notFound)).toBe(before + 1);
        }
      }
      const intervals = Math.floor((performance.now() - started) / DB_GAUGE_MAX_AGE_MS);
      expect(calls).toBeLessThanOrEqual(1 + intervals);
      expect(mostAtOnce).toBeLessThanOrEqual(1);
    } finally {
      store.countHeld = countHeld;
    }
  });

  it("credit_postgres_up and credit_redis_up are 1 while both answer", async () => {
    const text = await scrape(t.service.metricsPort);
    expect(sampleOf(text, "credit_postgres_up")).toBe(1);
    expect(sampleOf(text, "credit_redis_up")).toBe(1);
    expect(sampleOf(text, "credit_db_pool_connections_in_use")).not.toBeNull();
  });

  it("credit_idempotency_redis_fallback_total stays put while Redis answers", async () => {
    const before = counterOf(await scrape(t.service.metricsPort), "credit_idempotency_redis_fallback_total");
    await t.admin.adjustCredits({ accountId: newAccountId("obs"), amount: 10n, reason: "metrics", idempotencyKey: newKey() });
    expect(counterOf(await scrape(t.service.metricsPort), "credit_idempotency_redis_fallback_total")).toBe(before);
  });
});

describe("metrics without Redis", () => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService({ REDIS_URL: "redis://127.0.0.1:1" });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("credit_idempotency_redis_fallback_total increases with each keyed call answered from Postgres alone", async () => {
    const accountId = newAccountId("obs-noredis");
    const first = counterOf(await scrape(t.service.metricsPort), "credit_idempotency_redis_fallback_total");
    const granted = await t.admin.adjustCredits({ accountId, amount: 10n, reason: "no redis", idempotencyKey: newKey() });
    expect(granted.balance?.available).toBe(10n);
    const second = counterOf(await scrape(t.service.metricsPort), "credit_idempotency_redis_fallback_total");
    expect(second).toBeGreaterThan(first);
    await t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 3n } });
    const text = await scrape(t.service.metricsPort);
    expect(counterOf(text, "credit_idempotency_redis_fallback_total")).toBeGreaterThan(second);
    expect(sampleOf(text, "credit_redis_up")).toBe(0);
    expect(sampleOf(text, "credit_postgres_up")).toBe(1);
  });
});

describe("one JSON log line per call", () => {
  const captured: string[] = [];
  const ADMIN_TOKEN = randomBytes(24).toString("base64url");
  const RUNNER_TOKEN = randomBytes(24).toString("base64url");
  const WRONG_TOKEN = randomBytes(24).toString("base64url");
  const AUTH_TOKENS = `ops-admin:admin:${sha256(ADMIN_TOKEN).toString("hex")},gpu-runner:runner:${sha256(RUNNER_TOKEN).toString("hex")}`;
  let service: RunningService;
  let admin: CreditClients;
  let runner: CreditClients;
  let wrong: CreditClients;

  beforeAll(async () => {
    const config = parseConfig({
      DATABASE_URL: TEST_DATABASE_URL,
      REDIS_URL: TEST_REDIS_URL,
      GRPC_HOST: "127.0.0.1",
      GRPC_PORT: "0",
      DB_MIGRATE: "false",
      SWEEPER_ENABLED: "false",
      SHUTDOWN_GRACE_MS: "2000",
      METRICS_HOST: "127.0.0.1",
      METRICS_PORT: "0",
      AUTH_TOKENS,
    });
    const log = pino({ level: "info" }, { write: (line: string) => void captured.push(line) });
    service = await startService(config, new FakeClock(TEST_EPOCH), log);
    const baseUrl = `http://127.0.0.1:${service.port}`;
    const options = { baseUrl, caller: "x-caller-spoof", retry: { maxAttempts: 1 } };
    admin = createCreditClients({ ...options, token: ADMIN_TOKEN });
    runner = createCreditClients({ ...options, token: RUNNER_TOKEN });
    wrong = createCreditClients({ ...options, token: WRONG_TOKEN });
  });
  afterAll(async () => {
    await service?.stop();
  });

  /** The captured lines, each parsed as JSON (a line that is not JSON fails the test). */
  function records(): Record<string, unknown>[] {
    return captured
      .join("")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  const linesFor = (requestId: string) => records().filter((r) => r["msg"] === "rpc" && r["requestId"] === requestId);
  const withId = (requestId: string) => ({ headers: { "x-request-id": requestId } });

  it("an OK call logs method, the principal as caller, code, duration, the sent request id and the account", async () => {
    const accountId = newAccountId("obs-log");
    const requestId = `req-${randomUUID()}`;
    await admin.admin.adjustCredits({ accountId, amount: 50n, reason: "logging", idempotencyKey: newKey() }, withId(requestId));
    const lines = linesFor(requestId);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ method: `${ADMIN}/AdjustCredits`, caller: "ops-admin", code: "OK", requestId, account: accountId, level: 30 });
    expect(typeof lines[0]!["durationMs"]).toBe("number");
    expect(lines[0]!["durationMs"] as number).toBeGreaterThanOrEqual(0);
  });

  it("a failing call logs its code and the account it was about", async () => {
    const ghost = newAccountId("obs-ghost");
    const requestId = `req-${randomUUID()}`;
    expect(await codeOf(runner.credit.getBalance({ accountId: ghost }, withId(requestId)))).toBe(Code.NotFound);
    expect(linesFor(requestId)).toEqual([
      expect.objectContaining({ method: `${CREDIT}/GetBalance`, caller: "gpu-runner", code: "NOT_FOUND", requestId, account: ghost }),
    ]);
  });

  it("a call about a reservation logs the reservation id as its subject", async () => {
    const accountId = newAccountId("obs-log");
    await admin.admin.adjustCredits({ accountId, amount: 50n, reason: "logging", idempotencyKey: newKey() });
    const held = await runner.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 5n } });
    const reservationId = held.reservation!.reservationId;
    const requestId = `req-${randomUUID()}`;
    await runner.credit.getReservation({ reservationId }, withId(requestId));
    expect(linesFor(requestId)).toEqual([expect.objectContaining({ method: `${CREDIT}/GetReservation`, code: "OK", account: reservationId })]);
  });

  it("a forbidden call logs PERMISSION_DENIED with the principal as caller", async () => {
    const requestId = `req-${randomUUID()}`;
    expect(await codeOf(runner.admin.reconcile({ accountId: newAccountId("obs") }, withId(requestId)))).toBe(Code.PermissionDenied);
    expect(linesFor(requestId)).toEqual([expect.objectContaining({ method: `${ADMIN}/Reconcile`, caller: "gpu-runner", code: "PERMISSION_DENIED", requestId })]);
  });

  it("a call with a wrong token logs UNAUTHENTICATED with an anonymous caller", async () => {
    const requestId = `req-${randomUUID()}`;
    expect(await codeOf(wrong.credit.listPlans({}, withId(requestId)))).toBe(Code.Unauthenticated);
    expect(linesFor(requestId)).toEqual([expect.objectContaining({ method: `${CREDIT}/ListPlans`, caller: "anonymous", code: "UNAUTHENTICATED", requestId })]);
  });

  it("a call without a usable x-request-id gets a generated one", async () => {
    const before = records().length;
    await admin.credit.listPlans({});
    await admin.credit.getRateCard({}, withId("has spaces, not an id"));
    const fresh = records()
      .slice(before)
      .filter((r) => r["msg"] === "rpc");
    expect(fresh.map((r) => r["method"])).toEqual([`${CREDIT}/ListPlans`, `${CREDIT}/GetRateCard`]);
    for (const r of fresh) expect(r["requestId"]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  it("refused calls are counted in the metrics under their codes", async () => {
    const before = await scrape(service.metricsPort);
    await codeOf(wrong.credit.listPlans({}));
    await codeOf(runner.admin.reconcile({ accountId: newAccountId("obs") }));
    const after = await scrape(service.metricsPort);
    const delta = (labels: Record<string, string>) =>
      counterOf(after, "grpc_server_handled_total", labels) - counterOf(before, "grpc_server_handled_total", labels);
    expect(delta(rpc(CREDIT, "ListPlans", "UNAUTHENTICATED"))).toBe(1);
    expect(delta(rpc(ADMIN, "Reconcile", "PERMISSION_DENIED"))).toBe(1);
  });

  it("no token, right or wrong, nor its hash, ever appears in the log output", () => {
    const all = captured.join("");
    expect(records().filter((r) => r["msg"] === "rpc").length).toBeGreaterThanOrEqual(8);
    for (const secret of [ADMIN_TOKEN, RUNNER_TOKEN, WRONG_TOKEN]) {
      expect(all).not.toContain(secret);
      expect(all).not.toContain(sha256(secret).toString("hex"));
    }
    expect(all).not.toMatch(/bearer/i);
    expect(all).not.toContain("x-caller-spoof");
  });
});
