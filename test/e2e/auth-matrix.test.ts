import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BillingInterval,
  CreditAdminService,
  CreditEventService,
  type CreditClients,
  CreditService,
  createCreditClients,
  ErrorInfoSchema,
  GenerationKind,
  Granularity,
  LedgerEntryKind,
  Quality,
  ReleaseReason,
  SpendPeriod,
} from "../../src/client/index.js";
import { parseConfig } from "../../src/config.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { mayCall, parseTokens, type Role, sha256 } from "../../src/rpc/auth.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

/**
 * Authentication and authorization: every RPC of both services, called by each role, without a
 * token and with a wrong token. The expected table is written out by hand from the rules:
 *   runner  = Reserve Commit Release ExtendReservation GetReservation GetBalance WatchBalance GetSpendLimits GetUsage ForecastBalance Quote GetRateCard
 *   billing = ChangePlan PurchaseTopUp GetBalance WatchBalance ListPlans
 *   support = the reads (GetBalance WatchBalance GetReservation Quote GetRateCard ListPlans ListLedgerEntries Reconcile) + AdjustCredits
 *   billing and support also read the event feed (ListEvents StreamEvents), set balance alerts (SetBalanceAlert)
 *   caps on running holds (SetConcurrencyLimit) and spend limits (SetSpendLimit RemoveSpendLimit)
 *   runner, billing and support read spend limits (GetSpendLimits), usage and the forecast (GetUsage ForecastBalance)
 *   billing sets auto top-up (SetAutoTopUp) and answers its requests (CompleteAutoTopUp FailAutoTopUp); billing and support read it (GetAutoTopUp)
 *   admin   = everything
 */

type Who = Role | "none" | "wrong";
type Outcome = "allowed" | "denied" | "unauthenticated";
const A: Outcome = "allowed";
const D: Outcome = "denied";
const U: Outcome = "unauthenticated";

// prettier-ignore
const EXPECTED: Record<string, Record<Who, Outcome>> = {
  "credit.v1.CreditService/Reserve":                { runner: A, billing: D, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/Commit":                 { runner: A, billing: D, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/Release":                { runner: A, billing: D, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/GetBalance":             { runner: A, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/WatchBalance":           { runner: A, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/GetReservation":         { runner: A, billing: D, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/ExtendReservation":      { runner: A, billing: D, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/PurchaseTopUp":          { runner: D, billing: A, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/ChangePlan":             { runner: D, billing: A, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/Quote":                  { runner: A, billing: D, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/GetRateCard":            { runner: A, billing: D, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/ListPlans":              { runner: D, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/AdjustCredits":     { runner: D, billing: D, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/ListLedgerEntries": { runner: D, billing: D, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/Reconcile":         { runner: D, billing: D, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/SetCustomPlan":     { runner: D, billing: D, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/SetAccountPricing": { runner: D, billing: D, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/AdvanceTestClock":  { runner: D, billing: D, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/SetBalanceAlert":   { runner: D, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/SetConcurrencyLimit": { runner: D, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/SetSpendLimit":      { runner: D, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/RemoveSpendLimit":   { runner: D, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/GetSpendLimits":          { runner: A, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/GetUsage":                { runner: A, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/ForecastBalance":         { runner: A, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/SetAutoTopUp":       { runner: D, billing: A, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditAdminService/GetAutoTopUp":       { runner: D, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/CompleteAutoTopUp":       { runner: D, billing: A, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditService/FailAutoTopUp":           { runner: D, billing: A, support: D, admin: A, none: U, wrong: U },
  "credit.v1.CreditEventService/ListEvents":        { runner: D, billing: A, support: A, admin: A, none: U, wrong: U },
  "credit.v1.CreditEventService/StreamEvents":      { runner: D, billing: A, support: A, admin: A, none: U, wrong: U },
};

const ROLES: readonly Role[] = ["runner", "billing", "support", "admin"];
const WHO: readonly Who[] = [...ROLES, "none", "wrong"];

/** Principal names: what ledger entries must record as the caller. */
const NAMES: Record<Role, string> = { runner: "image-runner", billing: "billing-backend", support: "support-desk", admin: "ops-admin" };
const TOKENS: Record<Role, string> = {
  runner: randomBytes(24).toString("base64url"),
  billing: randomBytes(24).toString("base64url"),
  support: randomBytes(24).toString("base64url"),
  admin: randomBytes(24).toString("base64url"),
};
const WRONG_TOKEN = randomBytes(24).toString("base64url");
const AUTH_TOKENS = ROLES.map((r) => `${NAMES[r]}:${r}:${sha256(TOKENS[r]).toString("hex")}`).join(",");

/** A real, priced generation: kling-pro 1280×720, 5 s, STANDARD. */
const SPEC = { model: "kling-pro", kind: GenerationKind.VIDEO, width: 1280, height: 720, duration: durationFromMs(5000), count: 1, quality: Quality.STANDARD };

/** What each cell calls against: a funded account with one open hold. */
interface Fixture {
  readonly accountId: string;
  readonly reservationId: string;
}

/** A valid request for each RPC, so an allowed call succeeds outright. */
const CALLS: Record<string, (c: CreditClients, f: Fixture) => Promise<unknown>> = {
  "credit.v1.CreditService/Reserve": (c, f) => c.credit.reserve({ accountId: f.accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 7n } }),
  "credit.v1.CreditService/Commit": (c, f) => c.credit.commit({ reservationId: f.reservationId, idempotencyKey: newKey(), actual: { case: "amount", value: 5n } }),
  "credit.v1.CreditService/Release": (c, f) =>
    c.credit.release({ reservationId: f.reservationId, idempotencyKey: newKey(), reason: ReleaseReason.CANCELLED, detail: "auth matrix" }),
  "credit.v1.CreditService/GetBalance": (c, f) => c.credit.getBalance({ accountId: f.accountId }),
  // A stream: allowed once its first message (the current balance) arrives; leaving it cancels it.
  "credit.v1.CreditService/WatchBalance": async (c, f) => {
    for await (const first of c.credit.watchBalance({ accountId: f.accountId })) return first;
    throw new Error("the stream ended without a message");
  },
  "credit.v1.CreditService/GetReservation": (c, f) => c.credit.getReservation({ reservationId: f.reservationId }),
  "credit.v1.CreditService/ExtendReservation": (c, f) =>
    c.credit.extendReservation({ reservationId: f.reservationId, idempotencyKey: newKey(), ttl: durationFromMs(60 * 60_000) }),
  "credit.v1.CreditService/PurchaseTopUp": (c, f) =>
    c.credit.purchaseTopUp({ accountId: f.accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") }),
  "credit.v1.CreditService/ChangePlan": (c, f) => c.credit.changePlan({ accountId: f.accountId, planId: "basic-monthly", idempotencyKey: newKey() }),
  "credit.v1.CreditService/Quote": (c, f) => c.credit.quote({ spec: SPEC, accountId: f.accountId }),
  "credit.v1.CreditService/GetRateCard": (c) => c.credit.getRateCard({}),
  "credit.v1.CreditService/ListPlans": (c) => c.credit.listPlans({}),
  "credit.v1.CreditAdminService/AdjustCredits": (c, f) =>
    c.admin.adjustCredits({ accountId: f.accountId, amount: 25n, reason: "auth matrix goodwill", idempotencyKey: newKey() }),
  "credit.v1.CreditAdminService/ListLedgerEntries": (c, f) => c.admin.listLedgerEntries({ accountId: f.accountId }),
  "credit.v1.CreditAdminService/Reconcile": (c, f) => c.admin.reconcile({ accountId: f.accountId }),
  "credit.v1.CreditAdminService/SetCustomPlan": (c, f) =>
    c.admin.setCustomPlan({
      accountId: f.accountId,
      planId: `${f.accountId}-business`,
      name: "Matrix Business",
      monthlyAllowance: 10_000n,
      price: { currencyCode: "USD", amountMinor: 50_000n },
      interval: BillingInterval.MONTH,
      topUpPacks: [],
    }),
  "credit.v1.CreditAdminService/SetAccountPricing": (c, f) => c.admin.setAccountPricing({ accountId: f.accountId, pricePermille: 900 }),
  "credit.v1.CreditAdminService/AdvanceTestClock": (c, f) =>
    c.admin.advanceTestClock({ accountId: f.accountId, by: durationFromMs(60_000), idempotencyKey: newKey() }),
  "credit.v1.CreditAdminService/SetBalanceAlert": (c, f) =>
    c.admin.setBalanceAlert({ accountId: f.accountId, threshold: { case: "percentOfAllowance", value: 15 }, idempotencyKey: newKey() }),
  "credit.v1.CreditAdminService/SetConcurrencyLimit": (c, f) =>
    c.admin.setConcurrencyLimit({ accountId: f.accountId, memberId: "matrix", maxOpenHolds: 100, idempotencyKey: newKey() }),
  "credit.v1.CreditAdminService/SetSpendLimit": (c, f) =>
    c.admin.setSpendLimit({ accountId: f.accountId, memberId: "matrix", period: SpendPeriod.DAY, maxCredits: 100n, idempotencyKey: newKey() }),
  // The limit to remove is set first, by admin (a change of the account's limits only: stateOf does not see it).
  "credit.v1.CreditAdminService/RemoveSpendLimit": async (c, f) => {
    await clients.admin.admin.setSpendLimit({ accountId: f.accountId, memberId: "matrix", period: SpendPeriod.WEEK, maxCredits: 100n, idempotencyKey: newKey() });
    return c.admin.removeSpendLimit({ accountId: f.accountId, memberId: "matrix", period: SpendPeriod.WEEK, idempotencyKey: newKey() });
  },
  "credit.v1.CreditAdminService/SetAutoTopUp": (c, f) =>
    c.admin.setAutoTopUp({ accountId: f.accountId, thresholdCredits: 100n, size: { case: "packId", value: "topup-500" }, maxPerMonth: 2, enabled: true, idempotencyKey: newKey() }),
  "credit.v1.CreditAdminService/GetAutoTopUp": (c, f) => c.admin.getAutoTopUp({ accountId: f.accountId }),
  // A rule set above the fixture's balance makes request 1 at once: the call answers it.
  "credit.v1.CreditService/CompleteAutoTopUp": async (c, f) => {
    await lowRule(f);
    return c.credit.completeAutoTopUp({ requestId: `atu:1:${f.accountId}`, paymentReference: newKey("pay") });
  },
  "credit.v1.CreditService/FailAutoTopUp": async (c, f) => {
    await lowRule(f);
    return c.credit.failAutoTopUp({ requestId: `atu:1:${f.accountId}`, reason: "card_declined" });
  },
  "credit.v1.CreditService/GetSpendLimits": (c, f) => c.credit.getSpendLimits({ accountId: f.accountId, memberId: "matrix" }),
  "credit.v1.CreditService/GetUsage": (c, f) =>
    c.credit.getUsage({ accountId: f.accountId, startTime: timestampFromDate(new Date("2030-01-01T00:00:00Z")), endTime: timestampFromDate(new Date("2030-02-01T00:00:00Z")), granularity: Granularity.DAY }),
  "credit.v1.CreditService/ForecastBalance": (c, f) => c.credit.forecastBalance({ accountId: f.accountId }),
  "credit.v1.CreditEventService/ListEvents": (c, f) => c.events.listEvents({ accountId: f.accountId }),
  // The stream's first event (the fixture's grant) proves the call was let through; then it is cancelled.
  "credit.v1.CreditEventService/StreamEvents": async (c, f) => {
    const controller = new AbortController();
    try {
      for await (const _ of c.events.streamEvents({ accountId: f.accountId }, { signal: controller.signal })) {
        controller.abort();
        return;
      }
    } catch (err) {
      if (!controller.signal.aborted) throw err;
    }
  },
};

let t: TestService;
let url: string;
const clients = {} as Record<Who, CreditClients>;

function clientsFor(baseUrl: string, token?: string, caller?: string): CreditClients {
  return createCreditClients({ baseUrl, token, caller, retry: { maxAttempts: 1 } });
}

beforeAll(async () => {
  t = await startTestService({ AUTH_TOKENS });
  url = `http://127.0.0.1:${t.service.port}`;
  for (const role of ROLES) clients[role] = clientsFor(url, TOKENS[role], "spoofed-x-caller");
  clients.none = clientsFor(url, undefined, "spoofed-x-caller");
  clients.wrong = clientsFor(url, WRONG_TOKEN, "spoofed-x-caller");
});
afterAll(async () => {
  await t?.stop();
});

async function newFixture(): Promise<Fixture> {
  const accountId = newAccountId("authz");
  await clients.admin.admin.adjustCredits({ accountId, amount: 1000n, reason: "auth matrix fixture", idempotencyKey: newKey() });
  const held = await clients.admin.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 10n } });
  return { accountId, reservationId: held.reservation!.reservationId };
}

/** An auto top-up rule whose threshold is above the fixture's balance: its first request is out. */
async function lowRule(f: Fixture): Promise<void> {
  await clients.admin.admin.setAutoTopUp({ accountId: f.accountId, thresholdCredits: 5000n, size: { case: "packId", value: "topup-500" }, maxPerMonth: 2, enabled: true, idempotencyKey: newKey() });
}

/** Everything a refused call could have changed about the fixture account. */
async function stateOf(f: Fixture): Promise<unknown> {
  const [balance, entries, reservation] = await Promise.all([
    clients.admin.credit.getBalance({ accountId: f.accountId }),
    clients.admin.admin.listLedgerEntries({ accountId: f.accountId, pageSize: 1000 }),
    clients.admin.credit.getReservation({ reservationId: f.reservationId }),
  ]);
  return { balance: balance.balance, entries: entries.entries.map((e) => e.entryId), reservation: reservation.reservation };
}

/** The error a call failed with, or null when it succeeded. */
async function errorOf(call: Promise<unknown>): Promise<ConnectError | null> {
  try {
    await call;
    return null;
  } catch (err) {
    return ConnectError.from(err);
  }
}

function describeError(err: ConnectError | null): string {
  return err === null ? "success" : `${Code[err.code]} (${err.findDetails(ErrorInfoSchema)[0]?.reason ?? "no ErrorInfo"}): ${err.rawMessage}`;
}

describe("the authorization table", () => {
  it("names every RPC of CreditService, CreditAdminService and CreditEventService, and nothing else", () => {
    const methods = [...CreditService.methods, ...CreditAdminService.methods, ...CreditEventService.methods].map((m) => `${m.parent.typeName}/${m.name}`);
    expect(Object.keys(EXPECTED).sort()).toEqual(methods.sort());
    expect(Object.keys(CALLS).sort()).toEqual(methods.sort());
  });

  it("agrees with mayCall for every role and RPC", () => {
    for (const [method, row] of Object.entries(EXPECTED)) {
      for (const role of ROLES) expect([method, role, mayCall(role, `/${method}`)]).toEqual([method, role, row[role] === A]);
    }
  });
});

const cells = Object.entries(EXPECTED).flatMap(([method, row]) => WHO.map((who) => ({ method, who, outcome: row[who] })));

describe("every RPC × every caller over the wire", () => {
  it.each(cells.filter((c) => c.outcome === A))("$who may call $method", async ({ method, who }) => {
    const fixture = await newFixture();
    const err = await errorOf(CALLS[method]!(clients[who], fixture));
    // A valid payload: an allowed call succeeds outright (and so is certainly not refused by authorization).
    expect(describeError(err)).toBe("success");
  });

  it.each(cells.filter((c) => c.outcome === D))("$who may not call $method: PermissionDenied, nothing changes", async ({ method, who }) => {
    const fixture = await newFixture();
    const before = await stateOf(fixture);
    const err = await errorOf(CALLS[method]!(clients[who], fixture));
    expect(err, `${who} calling ${method} succeeded`).not.toBeNull();
    expect(Code[err!.code]).toBe(Code[Code.PermissionDenied]);
    const info = err!.findDetails(ErrorInfoSchema)[0];
    expect([info?.reason, info?.domain]).toEqual(["PERMISSION_DENIED", "credit.v1"]);
    expect(await stateOf(fixture)).toEqual(before);
  });

  it.each(cells.filter((c) => c.outcome === U))("a call to $method with $who token is Unauthenticated, nothing changes", async ({ method, who }) => {
    const fixture = await newFixture();
    const before = await stateOf(fixture);
    const err = await errorOf(CALLS[method]!(clients[who], fixture));
    expect(err, `${who} calling ${method} succeeded`).not.toBeNull();
    expect(Code[err!.code]).toBe(Code[Code.Unauthenticated]);
    const info = err!.findDetails(ErrorInfoSchema)[0];
    expect([info?.reason, info?.domain]).toEqual(["UNAUTHENTICATED", "credit.v1"]);
    expect(await stateOf(fixture)).toEqual(before);
  });
});

describe("bearer tokens", () => {
  it("an unauthenticated call is refused before its request is validated", async () => {
    const err = await errorOf(clients.none.credit.reserve({ accountId: "", idempotencyKey: "", cost: { case: "amount", value: -5n } }));
    expect(err?.code).toBe(Code.Unauthenticated);
  });

  it("a token's SHA-256 itself is not a token", async () => {
    const hashed = clientsFor(url, sha256(TOKENS.admin).toString("hex"));
    expect((await errorOf(hashed.credit.listPlans({})))?.code).toBe(Code.Unauthenticated);
  });

  it("a token sent without the Bearer scheme is not accepted", async () => {
    const err = await errorOf(clients.none.credit.listPlans({}, { headers: { authorization: TOKENS.admin } }));
    expect(err?.code).toBe(Code.Unauthenticated);
    const basic = await errorOf(clients.none.credit.listPlans({}, { headers: { authorization: `Basic ${TOKENS.admin}` } }));
    expect(basic?.code).toBe(Code.Unauthenticated);
  });
});

describe("the caller recorded on ledger entries", () => {
  it("is the token's principal name, not the x-caller header", async () => {
    const accountId = newAccountId("authz-caller");
    await clients.support.admin.adjustCredits({ accountId, amount: 300n, reason: "goodwill", idempotencyKey: newKey() });
    await clients.runner.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 40n } });
    await clients.billing.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    const { entries } = await clients.admin.admin.listLedgerEntries({ accountId, pageSize: 100 });
    const byKind = (kind: LedgerEntryKind) => entries.filter((e) => e.kind === kind).map((e) => e.caller);
    expect(byKind(LedgerEntryKind.ADJUST)).toEqual([NAMES.support]);
    expect(byKind(LedgerEntryKind.HOLD)).toEqual([NAMES.runner]);
    expect(byKind(LedgerEntryKind.GRANT)).toEqual([NAMES.billing]);
    expect(entries.map((e) => e.caller)).not.toContain("spoofed-x-caller");
  });

  it("a client-sent x-credit-principal header is ignored: the entry records the token's principal", async () => {
    const accountId = newAccountId("authz-spoof");
    await clients.admin.admin.adjustCredits({ accountId, amount: 100n, reason: "fixture", idempotencyKey: newKey() });
    await clients.runner.credit.reserve(
      { accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 10n } },
      { headers: { "x-credit-principal": NAMES.admin } },
    );
    const { entries } = await clients.admin.admin.listLedgerEntries({ accountId, kinds: [LedgerEntryKind.HOLD] });
    expect(entries.map((e) => e.caller)).toEqual([NAMES.runner]);
  });

  it("an x-credit-principal header naming the admin grants a runner nothing", async () => {
    const accountId = newAccountId("authz-spoof");
    const err = await errorOf(
      clients.runner.admin.adjustCredits(
        { accountId, amount: 100n, reason: "escalation", idempotencyKey: newKey() },
        { headers: { "x-credit-principal": NAMES.admin } },
      ),
    );
    expect(err?.code).toBe(Code.PermissionDenied);
    expect((await errorOf(clients.admin.credit.getBalance({ accountId })))?.code).toBe(Code.NotFound);
  });

  it("an x-credit-principal header without a token is still Unauthenticated", async () => {
    const err = await errorOf(clients.none.credit.listPlans({}, { headers: { "x-credit-principal": NAMES.admin } }));
    expect(err?.code).toBe(Code.Unauthenticated);
  });
});

const run = promisify(execFile);
const BUF = join(process.cwd(), "node_modules", ".bin", "buf");

describe("reflection and health", () => {
  let closed: TestService;
  let closedUrl: string;
  let cacheDir: string;

  beforeAll(async () => {
    closed = await startTestService({ AUTH_TOKENS, AUTH_OPEN_REFLECTION: "false", AUTH_OPEN_HEALTH: "false" });
    closedUrl = `http://127.0.0.1:${closed.service.port}`;
    cacheDir = mkdtempSync(join(tmpdir(), "buf-cache-auth-"));
  });
  afterAll(async () => {
    await closed?.stop();
    if (cacheDir) rmSync(cacheDir, { recursive: true, force: true });
  });

  async function bufCurl(args: readonly string[]): Promise<string> {
    const { stdout } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect", ...args], {
      timeout: 30_000,
      env: { ...process.env, BUF_CACHE_DIR: cacheDir, NO_COLOR: "1" },
    });
    return stdout;
  }

  async function bufCurlError(args: readonly string[]): Promise<string> {
    try {
      await bufCurl(args);
    } catch (err) {
      return (err as { stderr?: string }).stderr ?? String(err);
    }
    return expect.unreachable(`buf curl ${args.join(" ")} succeeded`);
  }

  function health(baseUrl: string, token?: string) {
    return createClient(Health, createGrpcTransport({ baseUrl, interceptors: token ? [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))] : [] }));
  }

  it("reflection is open by default: buf curl lists the services without a token", async () => {
    const out = await bufCurl(["--list-services", url]);
    expect(out).toContain("credit.v1.CreditService");
    expect(out).toContain("credit.v1.CreditAdminService");
  });

  it("health is open by default: a health client without a token gets SERVING", async () => {
    const res = await health(url).check({});
    expect(res.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect(JSON.parse(await bufCurl(["-d", "{}", `${url}/grpc.health.v1.Health/Check`]))).toEqual({ status: "SERVING" });
  });

  it("with AUTH_OPEN_REFLECTION=false, reflection without a token is Unauthenticated", async () => {
    // buf renders the Unauthenticated status as "you are not authenticated".
    expect(await bufCurlError(["--list-services", closedUrl])).toMatch(/unauthenticated|not authenticated/i);
    const wrong = await bufCurlError(["-H", `authorization: Bearer ${WRONG_TOKEN}`, "--reflect-header", "*", "--list-services", closedUrl]);
    expect(wrong).toMatch(/unauthenticated|not authenticated/i);
  });

  it("with AUTH_OPEN_REFLECTION=false, reflection with any valid token works", async () => {
    const out = await bufCurl(["-H", `authorization: Bearer ${TOKENS.billing}`, "--reflect-header", "*", "--list-services", closedUrl]);
    expect(out).toContain("credit.v1.CreditService");
  });

  it("with AUTH_OPEN_HEALTH=false, health without a token is Unauthenticated", async () => {
    const err = await errorOf(health(closedUrl).check({}));
    expect(err?.code).toBe(Code.Unauthenticated);
    expect(err?.findDetails(ErrorInfoSchema)[0]?.reason).toBe("UNAUTHENTICATED");
    expect((await errorOf(health(closedUrl, WRONG_TOKEN).check({})))?.code).toBe(Code.Unauthenticated);
  });

  it("with AUTH_OPEN_HEALTH=false, health with any valid token works", async () => {
    const res = await health(closedUrl, TOKENS.runner).check({});
    expect(res.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  it("closing reflection and health does not open or close anything else", async () => {
    const runner = clientsFor(closedUrl, TOKENS.runner);
    expect((await errorOf(runner.credit.getRateCard({})))).toBeNull();
    expect((await errorOf(runner.credit.listPlans({})))?.code).toBe(Code.PermissionDenied);
  });
});

describe("parseTokens", () => {
  const hex = (s: string) => sha256(s).toString("hex");

  it("reads comma-separated name:role:sha256hex entries, trimming blanks", () => {
    const parsed = parseTokens(` runner-1:runner:${hex("a")} ,, ops:admin:${hex("b").toUpperCase()},`);
    expect(parsed.map((p) => [p.name, p.role, p.sha256.toString("hex")])).toEqual([
      ["runner-1", "runner", hex("a")],
      ["ops", "admin", hex("b")],
    ]);
  });

  it.each([
    ["a missing hash", `ok:runner:${hex("a")},broken:admin`, /AUTH_TOKENS entry 2 \(broken\)/],
    ["a missing role and hash", "lonely", /AUTH_TOKENS entry 1 \(lonely\): role must be/],
    ["an unknown role", `ok:runner:${hex("a")},root-user:root:${hex("b")}`, /AUTH_TOKENS entry 2 \(root-user\): role must be runner, billing, support or admin/],
    ["a short hash", `short:admin:abc123`, /AUTH_TOKENS entry 1 \(short\): expected a 64-digit hex SHA-256/],
    ["a non-hex hash", `nothex:admin:${"z".repeat(64)}`, /AUTH_TOKENS entry 1 \(nothex\): expected a 64-digit hex SHA-256/],
    ["a fourth field", `ok:runner:${hex("a")},extra:admin:${hex("b")}:more`, /AUTH_TOKENS entry 2: expected name:role:sha256hex/],
    ["a name with a space", `bad name:admin:${hex("a")}`, /AUTH_TOKENS entry 1: expected name:role:sha256hex/],
    ["an empty name", `:admin:${hex("a")}`, /AUTH_TOKENS entry 1: expected name:role:sha256hex/],
  ])("rejects %s with a message naming the entry", (_what, value, message) => {
    expect(() => parseTokens(value)).toThrow(message);
  });

  it("rejects a value that holds no entry at all", () => {
    for (const value of ["", ",", " , ,", "\t"]) expect(() => parseTokens(value)).toThrow(/AUTH_TOKENS holds no token/);
  });

  it("never echoes a hash it rejects", () => {
    const secretish = "f".repeat(63);
    expect(() => parseTokens(`x:admin:${secretish}`)).toThrow(expect.objectContaining({ message: expect.not.stringContaining(secretish) }));
  });

  it("rejects a duplicated name, naming it", () => {
    expect(() => parseTokens(`twin:runner:${hex("a")},twin:admin:${hex("b")}`)).toThrow(/AUTH_TOKENS.*twin/);
  });
});

describe("configuration", () => {
  it("ENVIRONMENT=production without AUTH_TOKENS is refused, and so is AUTH_TOKENS that holds no token", () => {
    expect(() => parseConfig({ ENVIRONMENT: "production" })).toThrow(/production requires authentication/);
    expect(() => parseConfig({ ENVIRONMENT: "production", AUTH_TOKENS: "" })).toThrow(/production requires authentication/);
    expect(() => parseConfig({ ENVIRONMENT: "production", AUTH_TOKENS: "   " })).toThrow(/AUTH_TOKENS holds no token/);
  });

  it("ENVIRONMENT=production with AUTH_TOKENS is accepted, and development runs without them", () => {
    expect(parseConfig({ ENVIRONMENT: "production", AUTH_TOKENS, IDEMPOTENCY_SECRET: "x".repeat(32) }).AUTH_TOKENS?.map((t) => t.name)).toEqual(ROLES.map((r) => NAMES[r]));
    expect(parseConfig({ ENVIRONMENT: "development" }).AUTH_TOKENS).toBeUndefined();
  });

  it("reflection and health are open unless turned off", () => {
    const open = parseConfig({});
    expect([open.AUTH_OPEN_REFLECTION, open.AUTH_OPEN_HEALTH]).toEqual([true, true]);
    const shut = parseConfig({ AUTH_OPEN_REFLECTION: "false", AUTH_OPEN_HEALTH: "0" });
    expect([shut.AUTH_OPEN_REFLECTION, shut.AUTH_OPEN_HEALTH]).toEqual([false, false]);
  });
});
