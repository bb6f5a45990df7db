import { randomUUID } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Client, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, type CreditClients, ReserveRequestSchema, watchBalance } from "../../src/client/index.js";
import { CreditAdminService } from "../../src/gen/credit/v1/admin_service_pb.js";
import { CreditEventService } from "../../src/gen/credit/v1/event_service_pb.js";
import { CreditService } from "../../src/gen/credit/v1/credit_service_pb.js";
import { reconcileAll } from "./support/checks.js";
import { rawClients } from "./support/load.js";
import { byScale, Figures } from "./support/report.js";
import { healthClient, Stack } from "./support/stack.js";

/**
 * Scenario 6 — bad input through a real server process. Typed requests with at least one bad field
 * (fast-check), then raw bytes that are not valid protobuf (a grpc-js client with identity
 * serializers): only INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION or RESOURCE_EXHAUSTED come
 * back, no row changes anywhere, and the server process stays up and SERVING.
 */
const RUNS = byScale(1000, 5000);
const SEED = process.env["RELIABILITY_SEED"] ? Number(process.env["RELIABILITY_SEED"]) : undefined;
const DOCUMENTED = new Set([Code.InvalidArgument, Code.NotFound, Code.FailedPrecondition, Code.ResourceExhausted]);
const TABLES = ["accounts", "buckets", "reservations", "ledger_entries", "operations", "subscriptions"];
const stack = new Stack();
const figures = new Figures("6 bad input");
let clients: CreditClients;
let plain: CreditClients;
const fixture = { accountId: `badin-${randomUUID()}`, reservationId: "" };

beforeAll(async () => {
  await stack.start(1);
  clients = rawClients(stack.servers[0]!.url);
  // The SDK fills an empty idempotency key with a fresh one; the fuzz must send exactly what it built.
  const transport = createGrpcTransport({ baseUrl: stack.servers[0]!.url });
  const credit = createClient(CreditService, transport);
  plain = {
    credit,
    admin: createClient(CreditAdminService, transport),
    events: createClient(CreditEventService, transport),
    watchBalance: (id, options) => watchBalance(credit, id, options),
  };
  await clients.admin.adjustCredits({ accountId: fixture.accountId, amount: 1000n, reason: "fixture", idempotencyKey: "fixture-fund" });
  // A settled hold: a real reservation id to aim at, with nothing that could expire during the run.
  const r = await clients.credit.reserve({ accountId: fixture.accountId, idempotencyKey: "fixture-hold", cost: { case: "amount", value: 10n } });
  fixture.reservationId = r.reservation!.reservationId;
  await clients.credit.commit({ reservationId: fixture.reservationId, idempotencyKey: "fixture-commit", actual: { case: "amount", value: 5n } });
});
afterAll(async () => {
  await stack.stop();
});

async function rowCounts(): Promise<string> {
  const parts: string[] = [];
  for (const t of TABLES) parts.push(`${t}=${(await stack.db.query<{ n: string }>(`select count(*)::text as n from ${t}`)).rows[0]!.n}`);
  return parts.join(" ");
}

/** A value with a flag saying whether the server must refuse it. */
type V<T> = { v: T; bad: boolean };
const good = <T>(arb: fc.Arbitrary<T>) => arb.map((v): V<T> => ({ v, bad: false }));
const bad = <T>(arb: fc.Arbitrary<T>) => arb.map((v): V<T> => ({ v, bad: true }));
const either = <T>(g: fc.Arbitrary<T>, b: fc.Arbitrary<T>) => fc.oneof(good(g), bad(b));

const badId = fc.oneof(
  fc.constant(""),
  fc.constant(" "),
  fc.string({ minLength: 129, maxLength: 300 }).map((s) => `x${s}`.padEnd(129, "x")),
  fc.string({ minLength: 1, maxLength: 20 }).map((s) => `a ${s}`),
  fc.constantFrom("é", "a\tb", "a\u0000b", "💳", "a\nb"),
);
const key = either(fc.uuid().map((u) => `k-${u}`), badId);
const accountGood = fc.constant(fixture).map(() => fixture.accountId);
const account = either(fc.oneof(accountGood, fc.uuid().map((u) => `ghost-${u}`)), badId);
const amountBad = fc.oneof(fc.constant(0n), fc.bigInt({ min: -(2n ** 63n), max: -1n }), fc.bigInt({ min: 10n ** 15n + 1n, max: 2n ** 63n - 1n }));
const amount = either(fc.bigInt({ min: 1n, max: 50n }), amountBad);
const reservationBad = fc.oneof(badId, fc.constantFrom("not-a-uuid", "00000000-0000-0000-0000-00000000000g", "{" + randomUUID() + "}"));
/** A well-formed UUID of no reservation: refused NOT_FOUND. */
const reservationId = fc.oneof(bad(reservationBad), bad(fc.uuid()));
const ttlBad = fc.oneof(
  fc.record({ seconds: fc.bigInt({ min: -(2n ** 40n), max: -1n }), nanos: fc.constant(0) }),
  fc.record({ seconds: fc.bigInt({ min: 86_401n, max: 2n ** 62n }), nanos: fc.constant(0) }),
  fc.record({ seconds: fc.constant(1n), nanos: fc.oneof(fc.integer({ min: 1_000_000_000, max: 2 ** 31 - 1 }), fc.integer({ min: -(2 ** 31), max: -1 })) }),
  fc.constant({ seconds: 0n, nanos: 0 }),
);
const ttl = either(fc.constant(undefined), ttlBad);
const metadataBad = fc.oneof(
  fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.string(), { minKeys: 33, maxKeys: 40 }),
  fc.string({ minLength: 65, maxLength: 80 }).map((k) => ({ [k]: "v" })),
  fc.string({ minLength: 257, maxLength: 300 }).map((v) => ({ k: v })),
  fc.constant({ "": "v" }),
);
const metadata = either(fc.constant({}), metadataBad);

interface BadCall {
  readonly method: string;
  readonly bad: boolean;
  readonly desc: string;
  readonly run: (c: CreditClients) => Promise<unknown>;
}
/* eslint-disable @typescript-eslint/no-explicit-any */
const call = (method: string, fields: Record<string, V<unknown>>, run: (f: Record<string, any>) => (c: CreditClients) => Promise<unknown>): BadCall => {
  const values = Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, v.v]));
  const desc = JSON.stringify(fields, (_, v) => (typeof v === "bigint" ? `${v}n` : typeof v === "string" && v.length > 40 ? `${v.slice(0, 20)}…(${v.length})` : v));
  return { method, bad: Object.values(fields).some((f) => f.bad), desc, run: run(values) };
};
const badCall: fc.Arbitrary<BadCall> = fc.oneof(
  fc.record({ account, key, amount, ttl, metadata }).map((f) =>
    call("Reserve", f, (v) => (c) => c.credit.reserve({ accountId: v.accountId ?? v.account, idempotencyKey: v.key, cost: { case: "amount", value: v.amount }, ttl: v.ttl, metadata: v.metadata })),
  ),
  fc.record({ reservationId, key, amount: either(fc.constant(1n), fc.bigInt({ min: -(2n ** 63n), max: -1n })) }).map((f) =>
    call("Commit", f, (v) => (c) => c.credit.commit({ reservationId: v.reservationId, idempotencyKey: v.key, actual: { case: "amount", value: v.amount } })),
  ),
  fc.record({ reservationId, key, reason: either(fc.constantFrom(1, 2, 3, 4), fc.oneof(fc.constant(0), fc.integer({ min: 5, max: 2 ** 31 - 1 }), fc.integer({ min: -(2 ** 31), max: -1 }))), detail: either(fc.string({ maxLength: 20 }), fc.string({ minLength: 1025, maxLength: 1100 })) }).map((f) =>
    call("Release", f, (v) => (c) => c.credit.release({ reservationId: v.reservationId, idempotencyKey: v.key, reason: v.reason, detail: v.detail })),
  ),
  fc.record({ reservationId, key, ttl }).map((f) => call("ExtendReservation", f, (v) => (c) => c.credit.extendReservation({ reservationId: v.reservationId, idempotencyKey: v.key, ttl: v.ttl }))),
  fc.record({ account, pack: either(fc.constant("topup-500"), fc.oneof(fc.constantFrom("topup-7", "", "TOPUP-500", "topup-500 "), fc.string({ maxLength: 10 }).map((s) => `nope-${s}`))), key }).map((f) =>
    call("PurchaseTopUp", f, (v) => (c) => c.credit.purchaseTopUp({ accountId: v.account, pack: { case: "packId", value: v.pack }, paymentReference: v.key })),
  ),
  fc.record({ account, key, credits: either(fc.constant(100n), amountBad), months: either(fc.constant(3), fc.oneof(fc.integer({ min: -100, max: 0 }), fc.integer({ min: 37, max: 10_000 }))), minor: either(fc.constant(100n), fc.bigInt({ min: -(2n ** 63n), max: -1n })), currency: either(fc.constant("USD"), fc.constantFrom("", "usd", "US", "USDX", "€€€")) }).map((f) =>
    call("PurchaseTopUp(custom)", f, (v) => (c) => c.credit.purchaseTopUp({ accountId: v.account, paymentReference: v.key, pack: { case: "customPack", value: { credits: v.credits, validityMonths: v.months, price: { currencyCode: v.currency, amountMinor: v.minor } } } })),
  ),
  fc.record({ account, key, amount, reason: either(fc.constant("goodwill"), fc.constantFrom("", "   ", "x".repeat(1025))), expires: either(fc.constant(undefined), fc.constant(timestampFromDate(new Date("2001-01-01T00:00:00Z")))) }).map((f) =>
    call("AdjustCredits", f, (v) => (c) => c.admin.adjustCredits({ accountId: v.account, idempotencyKey: v.key, amount: v.amount, reason: v.reason, expiresAt: v.expires })),
  ),
  fc.record({ account, key, plan: either(fc.constantFrom("basic-monthly", "pro-monthly"), fc.oneof(fc.constantFrom("gold", "BASIC-MONTHLY", ""), fc.string({ maxLength: 12 }).map((s) => `plan-${s}`))) }).map((f) =>
    call("ChangePlan", f, (v) => (c) => c.credit.changePlan({ accountId: v.account, idempotencyKey: v.key, planId: v.plan })),
  ),
  fc.record({ account: bad(fc.oneof(badId, fc.uuid().map((u) => `ghost-${u}`))) }).map((f) => call("GetBalance", f, (v) => (c) => c.credit.getBalance({ accountId: v.account }))),
  fc.record({ reservationId }).map((f) => call("GetReservation", f, (v) => (c) => c.credit.getReservation({ reservationId: v.reservationId }))),
  fc.record({ account, key, by: bad(fc.oneof(ttlBad.filter((d) => d.seconds <= 0n || d.nanos !== 0), fc.record({ seconds: fc.bigInt({ min: 400n * 86_400n + 1n, max: 2n ** 40n }), nanos: fc.constant(0) }))) }).map((f) =>
    call("AdvanceTestClock", f, (v) => (c) => c.admin.advanceTestClock({ accountId: v.account, idempotencyKey: v.key, by: v.by })),
  ),
  fc.record({ account, permille: bad(fc.oneof(fc.integer({ min: -(2 ** 31), max: 0 }), fc.integer({ min: 100_001, max: 2 ** 31 - 1 }))) }).map((f) =>
    call("SetAccountPricing", f, (v) => (c) => c.admin.setAccountPricing({ accountId: v.account, pricePermille: v.permille })),
  ),
).filter((c) => c.bad); // at least one field is bad
/* eslint-enable @typescript-eslint/no-explicit-any */

/** Bytes that are not a valid protobuf message, whatever the type. */
const malformed: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.constant(Uint8Array.of(0x0a, 0x05, 0x61)), // field 1, length 5, 1 byte follows
  fc.constant(Uint8Array.of(0x08, 0xff, 0xff, 0xff)), // truncated varint
  fc.constant(Uint8Array.of(0x0f)), // wire type 7 (invalid)
  fc.constant(Uint8Array.of(0x00, 0x01)), // field number 0
  fc.constant(Uint8Array.of(0x0b, 0x08, 0x01)), // start group without end
  fc.constant(Uint8Array.of(0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f)), // length far beyond the message
  fc.constant(Uint8Array.of(0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)), // 11-byte varint
  fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => Uint8Array.from([0x0a, b.length + 10, ...b])), // length past the end
  fc.uint8Array({ minLength: 1, maxLength: 200 }),
  fc.constant(new Uint8Array(70 * 1024).fill(0x0a)), // over GRPC_MAX_MESSAGE_BYTES
  fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => {
    const valid = toBinary(ReserveRequestSchema, create(ReserveRequestSchema, { accountId: "ghost-x", idempotencyKey: "k", cost: { case: "amount", value: 5n } }));
    return Uint8Array.from([...valid.subarray(0, Math.max(1, valid.length - 1 - (b[0]! % 4))), ...[]]);
  }),
);
const METHODS = [...CreditService.methods, ...CreditAdminService.methods];
const READ_ONLY = new Set(["ListPlans", "GetRateCard", "Quote", "GetBalance", "GetReservation", "ListLedgerEntries", "Reconcile"]);

describe("bad input through the real server", () => {
  it("typed requests with a bad field and raw malformed bytes: documented codes only, no writes, no crash", async () => {
    const server = stack.servers[0]!;
    const before = await rowCounts();
    const typedCodes: Record<string, number> = {};
    const undocumented: string[] = [];
    let typedCalls = 0;
    await fc.assert(
      fc.asyncProperty(badCall, async (c) => {
        typedCalls += 1;
        try {
          await c.run(plain);
          undocumented.push(`${c.method}: accepted a bad request ${c.desc}`);
          return false;
        } catch (err) {
          const e = ConnectError.from(err);
          typedCodes[Code[e.code]] = (typedCodes[Code[e.code]] ?? 0) + 1;
          if (!DOCUMENTED.has(e.code)) {
            undocumented.push(`${c.method}: ${Code[e.code]} ${e.rawMessage}`);
            return false;
          }
          return true;
        }
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    ).catch((err: unknown) => undocumented.push(String(err).slice(0, 2000)));

    const raw = new Client(`127.0.0.1:${server.port}`, credentials.createInsecure());
    const rawCodes: Record<string, number> = {};
    let rawCalls = 0;
    const send = (path: string, bytes: Uint8Array) =>
      new Promise<ServiceError | null>((resolve) => {
        raw.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(bytes), new Metadata(), { deadline: Date.now() + 10_000 }, (err) => resolve(err));
      });
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...METHODS), malformed, async (method, bytes) => {
        rawCalls += 1;
        const err = await send(`/${method.parent.typeName}/${method.name}`, bytes);
        const code = err ? err.code : status.OK;
        rawCodes[status[code]!] = (rawCodes[status[code]!] ?? 0) + 1;
        const fine = err ? DOCUMENTED.has(err.code as number as Code) : READ_ONLY.has(method.name);
        if (!fine) undocumented.push(`raw ${method.name} (${bytes.length} bytes): ${err ? `${status[err.code]} ${err.details}` : "OK"}`);
        return fine;
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    ).catch((err: unknown) => undocumented.push(String(err).slice(0, 2000)));
    raw.close();

    const after = await rowCounts();
    const serving = await healthClient(server.url).status();
    const reconciled = await reconcileAll(clients, [fixture.accountId]);

    figures.info("typed bad requests (fast-check) / raw malformed payloads", `${typedCalls} / ${rawCalls}`);
    figures.info("typed answers by code", JSON.stringify(typedCodes));
    figures.info("raw answers by code", JSON.stringify(rawCodes));
    figures.check("answers outside INVALID_ARGUMENT/NOT_FOUND/FAILED_PRECONDITION/RESOURCE_EXHAUSTED", undocumented.length, "0", undocumented.length === 0);
    figures.check("row counts changed", before === after ? 0 : `${before} → ${after}`, "0", before === after);
    figures.check("server crashes / health at the end", `${server.crashes} / ${serving}`, "0 / SERVING", server.crashes === 0 && server.alive && serving === "SERVING");
    figures.check("reconcile differences", reconciled.differences, "0", reconciled.differences === 0);

    expect(undocumented.slice(0, 10)).toEqual([]);
    expect(after).toBe(before);
    expect(server.crashes).toBe(0);
    expect(server.alive).toBe(true);
    expect(serving).toBe("SERVING");
    expect(reconciled.differences).toBe(0);
  });
});
