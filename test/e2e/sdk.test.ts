import { create, fromBinary } from "@bufbuild/protobuf";
import { Client as GrpcClient, credentials, Metadata, Server, ServerCredentials, type ServiceDefinition, status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { Code, ConnectError, type CreditClientOptions, createCreditClients, LedgerEntryKind, ReserveRequestSchema } from "../../src/client/index.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { handled, scrape } from "../support/prometheus.js";
import { TcpProxy } from "../support/tcp-proxy.js";

/**
 * The client SDK: one idempotency key per logical call (generated when the caller leaves it
 * empty, kept when given, the same on every retry), retries on UNAVAILABLE and ABORTED only,
 * and a deadline over the whole logical call, retries included.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const CREDIT = "credit.v1.CreditService";
const RESERVE_PATH = `/${CREDIT}/Reserve`;

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t?.stop();
});

function sdk(baseUrl: string, options: Partial<CreditClientOptions> = {}) {
  return createCreditClients({ baseUrl, caller: "sdk-test", ...options });
}

async function fund(accountId: string, amount = 1000n): Promise<void> {
  await t.admin.adjustCredits({ accountId, amount, reason: "sdk test funding", idempotencyKey: newKey("fund") });
}

async function holdEntries(accountId: string) {
  return (await t.admin.listLedgerEntries({ accountId, kinds: [LedgerEntryKind.HOLD], pageSize: 1000 })).entries;
}

async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  return expect.unreachable("the call succeeded but should have failed");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A gRPC front for Reserve in front of the real server. It records every attempt's idempotency
 * key and answers the first `failures` attempts with `code`; with `applyFirst` those attempts are
 * still forwarded and applied by the server, only their response is replaced (a lost response).
 */
class FlakyFront {
  readonly keys: string[] = [];
  failures = 0;
  code: status = status.UNAVAILABLE;
  applyFirst = false;
  port = 0;
  private readonly server = new Server();
  private readonly upstream: GrpcClient;

  constructor(upstreamPort: number) {
    this.upstream = new GrpcClient(`127.0.0.1:${upstreamPort}`, credentials.createInsecure());
    const raw = (b: Buffer) => b;
    const definition = {
      reserve: {
        path: RESERVE_PATH,
        requestStream: false,
        responseStream: false,
        requestSerialize: raw,
        requestDeserialize: raw,
        responseSerialize: raw,
        responseDeserialize: raw,
        originalName: "Reserve",
      },
    } as ServiceDefinition;
    this.server.addService(definition, {
      reserve: (call: { request: Buffer }, callback: (err: { code: status; details: string } | null, res?: Buffer) => void) => {
        this.keys.push(fromBinary(ReserveRequestSchema, call.request).idempotencyKey);
        const fail = this.failures > 0;
        if (fail) this.failures -= 1;
        if (fail && !this.applyFirst) {
          callback({ code: this.code, details: "injected failure" });
          return;
        }
        const metadata = new Metadata();
        metadata.set("x-caller", "sdk-test");
        this.upstream.makeUnaryRequest(RESERVE_PATH, raw, raw, call.request, metadata, (err, res) => {
          if (fail) callback({ code: this.code, details: "injected failure after the server applied the call" });
          else if (err) callback({ code: err.code, details: err.details });
          else callback(null, res);
        });
      },
    });
  }

  async start(): Promise<void> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  stop(): void {
    this.server.forceShutdown();
    this.upstream.close();
  }
}

describe("retries through an outage", () => {
  let proxy: TcpProxy;
  beforeAll(async () => {
    proxy = new TcpProxy("127.0.0.1", t.service.port);
    await proxy.start();
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it("a Reserve started while the server is unreachable succeeds once it is back, holding exactly once under a generated UUID key", async () => {
    const accountId = newAccountId("sdk-outage");
    await fund(accountId);
    const port = proxy.port;
    await proxy.stop();
    const client = sdk(`http://127.0.0.1:${port}`, { retry: { maxAttempts: 8, initialBackoffMs: 100 } });
    const before = await scrape(t.service.metricsPort);

    const reserving = client.credit.reserve({ accountId, idempotencyKey: "", cost: { case: "amount", value: 75n } });
    await sleep(300);
    await proxy.start(port);
    const reserved = await reserving;

    expect(reserved.reservation?.heldAmount).toBe(75n);
    const holds = await holdEntries(accountId);
    expect(holds).toHaveLength(1);
    expect(holds[0]!.idempotencyKey).toMatch(UUID);
    expect(holds[0]!.reservationId).toBe(reserved.reservation!.reservationId);
    expect((await t.credit.getBalance({ accountId })).balance?.held).toBe(75n);
    // The failed attempts never reached the server: it handled exactly one Reserve.
    expect(handled(await scrape(t.service.metricsPort), CREDIT, "Reserve", "OK") - handled(before, CREDIT, "Reserve", "OK")).toBe(1);
  });

  it("billing's CompleteAutoTopUp sent during an outage is retried until the server answers, and grants once", async () => {
    const accountId = newAccountId("sdk-atu");
    await fund(accountId, 100n);
    // SetAutoTopUp through the SDK with no key of its own: one is generated; the account is low, so request 1 is out.
    const direct = sdk(`http://127.0.0.1:${t.service.port}`);
    const set = await direct.admin.setAutoTopUp({ accountId, thresholdCredits: 500n, size: { case: "packId", value: "topup-500" }, maxPerMonth: 2, enabled: true });
    const requestId = set.rule!.outstanding!.requestId;
    const port = proxy.port;
    await proxy.stop();
    const client = sdk(`http://127.0.0.1:${port}`, { retry: { maxAttempts: 8, initialBackoffMs: 100 } });
    const completing = client.credit.completeAutoTopUp({ requestId, paymentReference: "sdk-pay-1" });
    await sleep(300);
    await proxy.start(port);
    const done = await completing;
    expect(done.balance?.available).toBe(600n);
    // A retry of the whole call (billing restarted and answers again) replays the answer: still one grant.
    expect(await client.credit.completeAutoTopUp({ requestId, paymentReference: "sdk-pay-1" })).toEqual(done);
    const grants = (await t.admin.listLedgerEntries({ accountId, kinds: [LedgerEntryKind.GRANT], pageSize: 100 })).entries;
    expect(grants.map((g) => g.metadata["auto_top_up_request"])).toEqual([requestId]);
  });
});

describe("idempotency keys", () => {
  let front: FlakyFront;
  beforeAll(async () => {
    front = new FlakyFront(t.service.port);
    await front.start();
  });
  afterAll(() => {
    front.stop();
  });
  afterEach(() => {
    front.keys.length = 0;
    front.failures = 0;
    front.applyFirst = false;
    front.code = status.UNAVAILABLE;
  });

  it("an empty key is replaced by a UUID generated once: every retry of a lost response carries it, and the server holds once", async () => {
    const accountId = newAccountId("sdk-key");
    await fund(accountId);
    front.failures = 2;
    front.applyFirst = true;
    const client = sdk(front.url, { retry: { maxAttempts: 5, initialBackoffMs: 10 } });

    const reserved = await client.credit.reserve({ accountId, idempotencyKey: "", cost: { case: "amount", value: 40n } });

    expect(front.keys).toHaveLength(3);
    expect(front.keys[0]).toMatch(UUID);
    expect(new Set(front.keys).size).toBe(1);
    const holds = await holdEntries(accountId);
    expect(holds.map((h) => [h.idempotencyKey, h.amount, h.reservationId])).toEqual([[front.keys[0], 40n, reserved.reservation!.reservationId]]);
    expect((await t.credit.getBalance({ accountId })).balance?.available).toBe(960n);
  });

  it("two logical calls with empty keys get two different keys", async () => {
    const accountId = newAccountId("sdk-key");
    await fund(accountId);
    const client = sdk(front.url);
    await client.credit.reserve({ accountId, idempotencyKey: "", cost: { case: "amount", value: 1n } });
    await client.credit.reserve({ accountId, idempotencyKey: "", cost: { case: "amount", value: 1n } });
    expect(front.keys).toHaveLength(2);
    expect(front.keys[0]).not.toBe(front.keys[1]);
    expect((await holdEntries(accountId)).map((h) => h.idempotencyKey).sort()).toEqual([...front.keys].sort());
  });

  it("an explicit key is kept as given, on every attempt and on the ledger entry", async () => {
    const accountId = newAccountId("sdk-key");
    await fund(accountId);
    const key = newKey("explicit");
    front.failures = 1;
    const client = sdk(front.url, { retry: { maxAttempts: 3, initialBackoffMs: 10 } });
    await client.credit.reserve({ accountId, idempotencyKey: key, cost: { case: "amount", value: 9n } });
    expect(front.keys).toEqual([key, key]);
    expect((await holdEntries(accountId)).map((h) => h.idempotencyKey)).toEqual([key]);
  });

  it("a direct call with an explicit key records that key", async () => {
    const accountId = newAccountId("sdk-key");
    await fund(accountId);
    const key = newKey("direct");
    await sdk(`http://127.0.0.1:${t.service.port}`).credit.reserve({ accountId, idempotencyKey: key, cost: { case: "amount", value: 2n } });
    expect((await holdEntries(accountId)).map((h) => h.idempotencyKey)).toEqual([key]);
  });

  it.each([
    ["UNAVAILABLE", status.UNAVAILABLE],
    ["ABORTED", status.ABORTED],
  ])("%s is retried", async (_name, code) => {
    const accountId = newAccountId("sdk-retry");
    await fund(accountId);
    front.failures = 1;
    front.code = code;
    const reserved = await sdk(front.url, { retry: { maxAttempts: 3, initialBackoffMs: 10 } }).credit.reserve({
      accountId,
      idempotencyKey: "",
      cost: { case: "amount", value: 3n },
    });
    expect(reserved.reservation?.heldAmount).toBe(3n);
    expect(front.keys).toHaveLength(2);
  });

  it.each([
    ["INVALID_ARGUMENT", status.INVALID_ARGUMENT, Code.InvalidArgument],
    ["FAILED_PRECONDITION", status.FAILED_PRECONDITION, Code.FailedPrecondition],
    ["NOT_FOUND", status.NOT_FOUND, Code.NotFound],
    ["INTERNAL", status.INTERNAL, Code.Internal],
    ["RESOURCE_EXHAUSTED", status.RESOURCE_EXHAUSTED, Code.ResourceExhausted],
    ["UNKNOWN", status.UNKNOWN, Code.Unknown],
  ])("%s is not retried", async (_name, code, expected) => {
    front.failures = 5;
    front.code = code;
    const err = await failure(
      sdk(front.url, { retry: { maxAttempts: 5, initialBackoffMs: 10 } }).credit.reserve({ accountId: newAccountId("sdk-retry"), idempotencyKey: "", cost: { case: "amount", value: 3n } }),
    );
    expect(err.code).toBe(expected);
    expect(front.keys).toHaveLength(1);
  });

  it("maxAttempts counts every attempt, the first included; then the last error is returned", async () => {
    front.failures = 100;
    const err = await failure(
      sdk(front.url, { retry: { maxAttempts: 3, initialBackoffMs: 5 } }).credit.reserve({ accountId: newAccountId("sdk-retry"), idempotencyKey: "", cost: { case: "amount", value: 3n } }),
    );
    expect(err.code).toBe(Code.Unavailable);
    expect(front.keys).toHaveLength(3);
    expect(new Set(front.keys).size).toBe(1);
  });
});

describe("the caller's request object", () => {
  const direct = () => sdk(`http://127.0.0.1:${t.service.port}`);

  it.each([
    ["a message made with create()", (accountId: string) => create(ReserveRequestSchema, { accountId, cost: { case: "amount", value: 5n } })],
    ["a plain object", (accountId: string) => ({ accountId, idempotencyKey: "", cost: { case: "amount" as const, value: 5n } })],
  ])("is never changed: %s without a key, sent twice, makes two holds under two generated keys", async (_name, make) => {
    const accountId = newAccountId("sdk-reuse");
    await fund(accountId);
    const client = direct();
    const request = make(accountId);
    const first = await client.credit.reserve(request);
    expect(request.idempotencyKey).toBe("");
    const second = await client.credit.reserve(request);
    expect(request.idempotencyKey).toBe("");
    expect(second.reservation!.reservationId).not.toBe(first.reservation!.reservationId);
    const keys = (await holdEntries(accountId)).map((h) => h.idempotencyKey);
    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatch(UUID);
    expect(keys[1]).toMatch(UUID);
    expect(keys[0]).not.toBe(keys[1]);
  });

  it("with the key set by the caller, the same object sent twice replays: one hold", async () => {
    const accountId = newAccountId("sdk-reuse");
    await fund(accountId);
    const client = direct();
    const key = newKey("caller");
    const request = create(ReserveRequestSchema, { accountId, idempotencyKey: key, cost: { case: "amount", value: 5n } });
    const first = await client.credit.reserve(request);
    const second = await client.credit.reserve(request);
    expect(second.reservation!.reservationId).toBe(first.reservation!.reservationId);
    expect((await holdEntries(accountId)).map((h) => h.idempotencyKey)).toEqual([key]);
  });
});

describe("non-retryable failures against the real server", () => {
  it.each([
    ["InvalidArgument", "INVALID_ARGUMENT", "Reserve", Code.InvalidArgument],
    ["NotFound", "NOT_FOUND", "GetBalance", Code.NotFound],
    ["FailedPrecondition", "FAILED_PRECONDITION", "Reserve", Code.FailedPrecondition],
  ])("a call failing with %s reaches the server exactly once", async (_name, metricCode, method, code) => {
    const accountId = newAccountId("sdk-once");
    await fund(accountId, 10n);
    const client = sdk(`http://127.0.0.1:${t.service.port}`, { retry: { maxAttempts: 8, initialBackoffMs: 10 } });
    const before = await scrape(t.service.metricsPort);
    const call =
      method === "GetBalance"
        ? client.credit.getBalance({ accountId: newAccountId("sdk-ghost") })
        : client.credit.reserve({ accountId, idempotencyKey: "", cost: { case: "amount", value: code === Code.InvalidArgument ? -5n : 11n } });
    expect((await failure(call)).code).toBe(code);
    const after = await scrape(t.service.metricsPort);
    expect(handled(after, CREDIT, method, metricCode) - handled(before, CREDIT, method, metricCode)).toBe(1);
  });
});

describe("deadlines", () => {
  let proxy: TcpProxy;
  let port: number;
  beforeAll(async () => {
    proxy = new TcpProxy("127.0.0.1", t.service.port);
    port = await proxy.start();
    await proxy.stop();
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("a call with timeoutMs 200 to an unreachable server fails with DeadlineExceeded while attempts remain", async () => {
    const client = sdk(`http://127.0.0.1:${port}`, { retry: { maxAttempts: 10_000, initialBackoffMs: 10, maxBackoffMs: 20 } });
    const started = performance.now();
    const err = await failure(client.credit.reserve({ accountId: newAccountId("sdk-deadline"), idempotencyKey: "", cost: { case: "amount", value: 1n } }, { timeoutMs: 200 }));
    expect(Code[err.code]).toBe(Code[Code.DeadlineExceeded]);
    expect(performance.now() - started).toBeGreaterThanOrEqual(190);
  });

  it("defaultTimeoutMs bounds a call that sets no deadline of its own", async () => {
    const client = sdk(`http://127.0.0.1:${port}`, { defaultTimeoutMs: 250, retry: { maxAttempts: 10_000, initialBackoffMs: 10, maxBackoffMs: 20 } });
    const started = performance.now();
    const err = await failure(client.credit.getBalance({ accountId: newAccountId("sdk-deadline") }));
    expect(Code[err.code]).toBe(Code[Code.DeadlineExceeded]);
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("a retrying call ends at its deadline, not at the end of a back-off that outlasts it", async () => {
    // Back-off is Math.random() × the cap: pin it so the first back-off is a predictable 1.8 s.
    vi.spyOn(Math, "random").mockReturnValue(0.9);
    const client = sdk(`http://127.0.0.1:${port}`, { retry: { maxAttempts: 5, initialBackoffMs: 2000, maxBackoffMs: 2000 } });
    const started = performance.now();
    const err = await failure(client.credit.reserve({ accountId: newAccountId("sdk-deadline"), idempotencyKey: "", cost: { case: "amount", value: 1n } }, { timeoutMs: 200 }));
    const elapsed = performance.now() - started;
    expect(Code[err.code]).toBe(Code[Code.DeadlineExceeded]);
    expect(elapsed).toBeLessThan(600);
  });

  it("with its attempts used up before the deadline, the call fails with Unavailable", async () => {
    const client = sdk(`http://127.0.0.1:${port}`, { retry: { maxAttempts: 2, initialBackoffMs: 1 } });
    const err = await failure(client.credit.getBalance({ accountId: newAccountId("sdk-deadline") }, { timeoutMs: 5000 }));
    expect(Code[err.code]).toBe(Code[Code.Unavailable]);
  });
});
