import { randomUUID } from "node:crypto";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { anyUnpack, DurationSchema, TimestampSchema, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { Client, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  GetBalanceRequestSchema,
  GetBalanceResponseSchema,
  LedgerEntryKind,
  ReleaseReason,
  type ReserveRequestSchema,
} from "../../src/client/index.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../src/gen/google/rpc/status_pb.js";
import { TEST_DATABASE_URL, TEST_REDIS_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

/**
 * §10: bad input is refused with INVALID_ARGUMENT (reason INVALID_FIELD, metadata `field`), unknown
 * things with NOT_FOUND — and bad input never changes anything, checked straight in Postgres.
 */

const TABLES = ["accounts", "buckets", "reservations", "ledger_entries", "operations"] as const;
type Counts = Record<(typeof TABLES)[number], number>;

let t: TestService;
let db: pg.Pool;
let redis: Redis;

/** A funded account with one open hold: the target of bad calls that need something real to aim at. */
const fixture = { accountId: newAccountId("badin-fixture"), reservationId: "" };
/** Accounts that must never come into being: every bad call naming them is refused. */
const ghosts = Array.from({ length: 4 }, () => newAccountId("badin-ghost"));
const [GHOST_A, GHOST_B, GHOST_C, GHOST_D] = ghosts as [string, string, string, string];
/** Malformed account ids used below; checked too, in case one slipped through into a row. */
const LONG_ID = `acct-${"x".repeat(124)}`; // 129 characters
const SPACED_ID = "acct with space";
const TABBED_ID = "acct\tid";
const UNICODE_ID = "acct-é";
const writtenNever = [...ghosts, LONG_ID, SPACED_ID, TABBED_ID, UNICODE_ID, " " + GHOST_A];

const INT64_MAX = 9_223_372_036_854_775_807n;
const INT64_MIN = -9_223_372_036_854_775_808n;
const OVER_MAX = 1_000_000_000_000_001n; // 1e15 + 1
const LONG_KEY = `key-${"k".repeat(125)}`; // 129 characters

beforeAll(async () => {
  t = await startTestService();
  db = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 4 });
  redis = new Redis(TEST_REDIS_URL);
  await t.credit.purchaseTopUp({ accountId: fixture.accountId, pack: { case: "packId", value: "topup-1000" }, paymentReference: newKey("pay") });
  const held = await t.credit.reserve({ accountId: fixture.accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 100n } });
  fixture.reservationId = held.reservation!.reservationId;
});
afterAll(async () => {
  await t?.stop();
  await db?.end();
  redis?.disconnect();
});

// ---------------------------------------------------------------------------------------------
// helpers

async function totals(): Promise<Counts> {
  const out = {} as Counts;
  for (const table of TABLES) out[table] = Number((await db.query<{ n: string }>(`select count(*) as n from ${table}`)).rows[0]!.n);
  return out;
}

async function rowsFor(accountIds: readonly string[]): Promise<Counts> {
  const out = {} as Counts;
  for (const table of TABLES) {
    out[table] = Number((await db.query<{ n: string }>(`select count(*) as n from ${table} where account_id = any($1)`, [accountIds])).rows[0]!.n);
  }
  return out;
}

async function idempotencyKeysFor(scope: string): Promise<string[]> {
  return (await redis.keys(`credit:idem:*{${scope}}:*`)).sort(); // an account's keys, or (r:) a reservation's
}

interface Refusal {
  readonly code: Code;
  readonly reason: string | undefined;
  readonly domain: string | undefined;
  readonly metadata: Record<string, string>;
}

async function refusalOf(call: Promise<unknown>): Promise<Refusal> {
  try {
    await call;
  } catch (err) {
    const e = ConnectError.from(err);
    const info = e.findDetails(ErrorInfoSchema)[0];
    return { code: e.code, reason: info?.reason, domain: info?.domain, metadata: { ...(info?.metadata ?? {}) } };
  }
  throw new Error("expected the call to be refused, but it succeeded");
}

const now = () => t.clock.now().getTime();
const seconds = (s: bigint, nanos = 0) => create(DurationSchema, { seconds: s, nanos });
const reserve = (over: MessageInitShape<typeof ReserveRequestSchema>) =>
  t.credit.reserve({ accountId: fixture.accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 10n }, ...over });
const commit = (over: Record<string, unknown>) =>
  t.credit.commit({ reservationId: fixture.reservationId, idempotencyKey: newKey(), actual: { case: "amount", value: 10n }, ...over });
const release = (over: Record<string, unknown>) =>
  t.credit.release({ reservationId: fixture.reservationId, idempotencyKey: newKey(), reason: ReleaseReason.CANCELLED, ...over });
const extend = (over: Record<string, unknown>) =>
  t.credit.extendReservation({ reservationId: fixture.reservationId, idempotencyKey: newKey(), ttl: seconds(600n), ...over });
const customPack = (over: Record<string, unknown>) => ({
  case: "customPack" as const,
  value: { credits: 5000n, price: { currencyCode: "EUR", amountMinor: 4500n }, validityMonths: 6, ...over },
});
const topUp = (over: Record<string, unknown>) =>
  t.credit.purchaseTopUp({ accountId: GHOST_B, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay"), ...over });
const adjust = (over: Record<string, unknown>) =>
  t.admin.adjustCredits({ accountId: GHOST_C, amount: 100n, reason: "incident INC-1", idempotencyKey: newKey(), ...over });
const list = (over: Record<string, unknown>) => t.admin.listLedgerEntries({ accountId: fixture.accountId, ...over });
const manyEntries = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"]));

interface BadInput {
  readonly rule: string;
  readonly call: () => Promise<unknown>;
  readonly code: Code;
  readonly reason: string;
  /** For INVALID_FIELD: the field named in ErrorInfo.metadata. */
  readonly field?: string;
}

const invalid = (rule: string, field: string, call: () => Promise<unknown>): BadInput => ({
  rule,
  call,
  code: Code.InvalidArgument,
  reason: "INVALID_FIELD",
  field,
});
const notFound = (rule: string, reason: string, call: () => Promise<unknown>): BadInput => ({ rule, call, code: Code.NotFound, reason });

const BAD_INPUTS: readonly BadInput[] = [
  // Reserve: amounts
  invalid("Reserve rejects a negative amount", "amount", () => reserve({ cost: { case: "amount", value: -1n } })),
  invalid("Reserve rejects int64 min", "amount", () => reserve({ cost: { case: "amount", value: INT64_MIN } })),
  invalid("Reserve rejects a zero amount", "amount", () => reserve({ cost: { case: "amount", value: 0n } })),
  invalid("Reserve rejects an amount over 1e15", "amount", () => reserve({ cost: { case: "amount", value: OVER_MAX } })),
  invalid("Reserve rejects int64 max", "amount", () => reserve({ cost: { case: "amount", value: INT64_MAX } })),
  invalid("Reserve rejects a missing cost", "amount", () => reserve({ cost: { case: undefined } })),
  // Reserve: ids and keys
  invalid("Reserve rejects an empty account id", "account_id", () => reserve({ accountId: "" })),
  invalid("Reserve rejects a 129-character account id", "account_id", () => reserve({ accountId: LONG_ID })),
  invalid("Reserve rejects an account id with a space", "account_id", () => reserve({ accountId: SPACED_ID })),
  invalid("Reserve rejects an account id with a leading space", "account_id", () => reserve({ accountId: " " + GHOST_A })),
  invalid("Reserve rejects an account id with a tab", "account_id", () => reserve({ accountId: TABBED_ID })),
  invalid("Reserve rejects a non-ASCII account id", "account_id", () => reserve({ accountId: UNICODE_ID })),
  invalid("Reserve rejects an empty idempotency key", "idempotency_key", () => reserve({ idempotencyKey: "" })),
  invalid("Reserve rejects a 129-character idempotency key", "idempotency_key", () => reserve({ idempotencyKey: LONG_KEY })),
  invalid("Reserve rejects an idempotency key with a space", "idempotency_key", () => reserve({ idempotencyKey: "key 1" })),
  invalid("Reserve checks input before existence: unknown account with a bad amount is INVALID_FIELD", "amount", () =>
    reserve({ accountId: GHOST_A, cost: { case: "amount", value: -5n } }),
  ),
  notFound("Reserve on an unknown account is ACCOUNT_NOT_FOUND", "ACCOUNT_NOT_FOUND", () => reserve({ accountId: GHOST_A })),
  // Reserve: metadata and ttl
  invalid("Reserve rejects more than 32 metadata entries", "metadata", () => reserve({ metadata: manyEntries(33) })),
  invalid("Reserve rejects a metadata value over 256 characters", "metadata", () => reserve({ metadata: { model: "m".repeat(257) } })),
  invalid("Reserve rejects a metadata key over 64 characters", "metadata", () => reserve({ metadata: { ["k".repeat(65)]: "v" } })),
  invalid("Reserve rejects an empty metadata key", "metadata", () => reserve({ metadata: { "": "v" } })),
  invalid("Reserve rejects a NUL character in a metadata value", "metadata", () => reserve({ metadata: { model: "img\u0000v2" } })),
  invalid("Reserve rejects a negative ttl", "ttl", () => reserve({ ttl: seconds(-1n) })),
  invalid("Reserve rejects a negative-nanos ttl", "ttl", () => reserve({ ttl: seconds(0n, -1) })),
  invalid("Reserve rejects a zero ttl", "ttl", () => reserve({ ttl: seconds(0n) })),
  invalid("Reserve rejects a ttl over the maximum (24 h + 1 s)", "ttl", () => reserve({ ttl: seconds(86_401n) })),
  invalid("Reserve rejects a ttl of 24 h + 1 ns (rounded up to the next millisecond, over the maximum)", "ttl", () => reserve({ ttl: seconds(86_400n, 1) })),
  invalid("Reserve rejects a ttl of int64 max seconds", "ttl", () => reserve({ ttl: seconds(INT64_MAX) })),

  // Commit
  invalid("Commit rejects a negative amount", "amount", () => commit({ actual: { case: "amount", value: -1n } })),
  invalid("Commit rejects an amount over 1e15", "amount", () => commit({ actual: { case: "amount", value: OVER_MAX } })),
  invalid("Commit rejects int64 max", "amount", () => commit({ actual: { case: "amount", value: INT64_MAX } })),
  invalid("Commit rejects a missing actual cost", "amount", () => commit({ actual: { case: undefined } })),
  invalid("Commit rejects an empty reservation id", "reservation_id", () => commit({ reservationId: "" })),
  invalid("Commit rejects a non-UUID reservation id", "reservation_id", () => commit({ reservationId: "res-123" })),
  invalid("Commit rejects a reservation id with spaces", "reservation_id", () => commit({ reservationId: ` ${fixture.reservationId} ` })),
  invalid("Commit rejects an empty idempotency key", "idempotency_key", () => commit({ idempotencyKey: "" })),
  invalid("Commit rejects a 129-character idempotency key", "idempotency_key", () => commit({ idempotencyKey: LONG_KEY })),
  notFound("Commit of an unknown reservation is RESERVATION_NOT_FOUND", "RESERVATION_NOT_FOUND", () => commit({ reservationId: randomUUID() })),

  // Release
  invalid("Release rejects an unknown reason value (99)", "reason", () => release({ reason: 99 as ReleaseReason })),
  invalid("Release rejects reason UNSPECIFIED", "reason", () => release({ reason: ReleaseReason.UNSPECIFIED })),
  invalid("Release rejects a detail over 1024 characters", "detail", () => release({ detail: "d".repeat(1025) })),
  invalid("Release rejects a NUL character in the detail", "detail", () => release({ detail: "worker\u0000lost" })),
  invalid("Release rejects a non-UUID reservation id", "reservation_id", () => release({ reservationId: "not-a-uuid" })),
  invalid("Release rejects an idempotency key with a space", "idempotency_key", () => release({ idempotencyKey: "a b" })),
  notFound("Release of an unknown reservation is RESERVATION_NOT_FOUND", "RESERVATION_NOT_FOUND", () => release({ reservationId: randomUUID() })),

  // ExtendReservation
  invalid("ExtendReservation requires a ttl", "ttl", () => extend({ ttl: undefined })),
  invalid("ExtendReservation rejects a negative ttl", "ttl", () => extend({ ttl: seconds(-60n) })),
  invalid("ExtendReservation rejects a ttl over the maximum", "ttl", () => extend({ ttl: seconds(86_401n) })),
  invalid("ExtendReservation rejects a ttl of 24 h + 1 ns", "ttl", () => extend({ ttl: seconds(86_400n, 1) })),
  notFound("ExtendReservation of an unknown reservation is RESERVATION_NOT_FOUND", "RESERVATION_NOT_FOUND", () => extend({ reservationId: randomUUID() })),

  // Reads
  invalid("GetBalance rejects an empty account id", "account_id", () => t.credit.getBalance({ accountId: "" })),
  invalid("GetBalance rejects a 129-character account id", "account_id", () => t.credit.getBalance({ accountId: LONG_ID })),
  notFound("GetBalance of an unknown account is ACCOUNT_NOT_FOUND", "ACCOUNT_NOT_FOUND", () => t.credit.getBalance({ accountId: GHOST_A })),
  invalid("GetReservation rejects a non-UUID id", "reservation_id", () => t.credit.getReservation({ reservationId: "12345" })),
  notFound("GetReservation of an unknown reservation is RESERVATION_NOT_FOUND", "RESERVATION_NOT_FOUND", () =>
    t.credit.getReservation({ reservationId: randomUUID() }),
  ),

  // PurchaseTopUp (would create the account: a refusal must not)
  notFound("PurchaseTopUp of an unknown pack is PACK_NOT_FOUND", "PACK_NOT_FOUND", () => topUp({ pack: { case: "packId", value: "topup-7" } })),
  invalid("PurchaseTopUp requires a pack", "pack_id", () => topUp({ pack: { case: undefined } })),
  invalid("PurchaseTopUp rejects an empty pack id", "pack_id", () => topUp({ pack: { case: "packId", value: "" } })),
  invalid("PurchaseTopUp rejects an empty payment reference", "payment_reference", () => topUp({ paymentReference: "" })),
  invalid("PurchaseTopUp rejects a 129-character payment reference", "payment_reference", () => topUp({ paymentReference: LONG_KEY })),
  invalid("PurchaseTopUp rejects a payment reference with a space", "payment_reference", () => topUp({ paymentReference: "pay 1" })),
  invalid("PurchaseTopUp rejects a 129-character account id", "account_id", () => topUp({ accountId: LONG_ID })),
  invalid("PurchaseTopUp rejects an account id with a space", "account_id", () => topUp({ accountId: SPACED_ID })),
  invalid("PurchaseTopUp rejects a custom pack with a lower-case currency", "custom_pack.price.currency_code", () =>
    topUp({ pack: customPack({ price: { currencyCode: "usd", amountMinor: 100n } }) }),
  ),
  invalid("PurchaseTopUp rejects a custom pack with an empty currency", "custom_pack.price.currency_code", () =>
    topUp({ pack: customPack({ price: { currencyCode: "", amountMinor: 100n } }) }),
  ),
  invalid("PurchaseTopUp rejects a custom pack with a 4-letter currency", "custom_pack.price.currency_code", () =>
    topUp({ pack: customPack({ price: { currencyCode: "EURO", amountMinor: 100n } }) }),
  ),
  invalid("PurchaseTopUp rejects a custom pack without a price", "custom_pack.price", () => topUp({ pack: customPack({ price: undefined }) })),
  invalid("PurchaseTopUp rejects a custom pack with a negative price", "custom_pack.price.amount_minor", () =>
    topUp({ pack: customPack({ price: { currencyCode: "EUR", amountMinor: -1n } }) }),
  ),
  invalid("PurchaseTopUp rejects a custom pack with validity 0 months", "custom_pack.validity_months", () => topUp({ pack: customPack({ validityMonths: 0 }) })),
  invalid("PurchaseTopUp rejects a custom pack with validity 37 months", "custom_pack.validity_months", () => topUp({ pack: customPack({ validityMonths: 37 }) })),
  invalid("PurchaseTopUp rejects a custom pack with negative validity", "custom_pack.validity_months", () => topUp({ pack: customPack({ validityMonths: -1 }) })),
  invalid("PurchaseTopUp rejects a custom pack of zero credits", "custom_pack.credits", () => topUp({ pack: customPack({ credits: 0n }) })),
  invalid("PurchaseTopUp rejects a custom pack of more than 1e15 credits", "custom_pack.credits", () => topUp({ pack: customPack({ credits: OVER_MAX }) })),

  // AdjustCredits (would create the account: a refusal must not)
  invalid("AdjustCredits rejects expires_at in the past", "expires_at", () => adjust({ expiresAt: timestampFromDate(new Date(now() - 86_400_000)) })),
  invalid("AdjustCredits rejects expires_at equal to now", "expires_at", () => adjust({ expiresAt: timestampFromDate(new Date(now())) })),
  invalid("AdjustCredits rejects expires_at beyond year 9999", "expires_at", () => adjust({ expiresAt: create(TimestampSchema, { seconds: 253_402_300_800n }) })),
  invalid("AdjustCredits rejects expires_at with negative nanos", "expires_at", () =>
    adjust({ expiresAt: create(TimestampSchema, { seconds: BigInt(Math.floor(now() / 1000)) + 86_400n, nanos: -1 }) }),
  ),
  invalid("AdjustCredits requires a reason", "reason", () => adjust({ reason: "" })),
  invalid("AdjustCredits rejects a blank reason", "reason", () => adjust({ reason: "   " })),
  invalid("AdjustCredits rejects a reason over 1024 characters", "reason", () => adjust({ reason: "r".repeat(1025) })),
  invalid("AdjustCredits rejects a NUL character in the reason", "reason", () => adjust({ reason: "INC-1\u0000" })),
  invalid("AdjustCredits rejects a zero amount", "amount", () => adjust({ amount: 0n })),
  invalid("AdjustCredits rejects a negative amount", "amount", () => adjust({ amount: -100n })),
  invalid("AdjustCredits rejects an amount over 1e15", "amount", () => adjust({ amount: OVER_MAX })),
  invalid("AdjustCredits rejects an empty idempotency key", "idempotency_key", () => adjust({ idempotencyKey: "" })),
  invalid("AdjustCredits rejects an empty account id", "account_id", () => adjust({ accountId: "" })),

  // ListLedgerEntries
  invalid("ListLedgerEntries rejects a page token it did not issue", "page_token", () => list({ pageToken: "garbage!!" })),
  invalid("ListLedgerEntries rejects a forged page token with a negative id", "page_token", () =>
    list({ pageToken: Buffer.from("e:-1").toString("base64url") }),
  ),
  invalid("ListLedgerEntries rejects a forged page token beyond int64", "page_token", () =>
    list({ pageToken: Buffer.from("e:9999999999999999999").toString("base64url") }),
  ),
  invalid("ListLedgerEntries rejects page_size 5000", "page_size", () => list({ pageSize: 5000 })),
  invalid("ListLedgerEntries rejects a negative page_size", "page_size", () => list({ pageSize: -1 })),
  invalid("ListLedgerEntries rejects an unknown kind (99)", "kinds", () => list({ kinds: [99 as LedgerEntryKind] })),
  invalid("ListLedgerEntries rejects kind UNSPECIFIED", "kinds", () => list({ kinds: [LedgerEntryKind.GRANT, LedgerEntryKind.UNSPECIFIED] })),
  invalid("ListLedgerEntries rejects a start_time beyond year 9999", "start_time", () => list({ startTime: create(TimestampSchema, { seconds: 253_402_300_800n }) })),
  notFound("ListLedgerEntries of an unknown account is ACCOUNT_NOT_FOUND", "ACCOUNT_NOT_FOUND", () => list({ accountId: GHOST_D })),
];

// ---------------------------------------------------------------------------------------------

describe("bad input is refused and changes nothing", () => {
  let totalsBefore: Counts;
  let fixtureBefore: Counts;
  let fixtureKeysBefore: string[];
  let reservationKeysBefore: string[];
  let balanceBefore: Uint8Array;

  beforeAll(async () => {
    totalsBefore = await totals();
    fixtureBefore = await rowsFor([fixture.accountId]);
    fixtureKeysBefore = await idempotencyKeysFor(fixture.accountId);
    reservationKeysBefore = await idempotencyKeysFor(fixture.reservationId);
    balanceBefore = toBinary(GetBalanceResponseSchema, await t.credit.getBalance({ accountId: fixture.accountId }));
  });

  it.each(BAD_INPUTS.map((row) => [row.rule, row] as const))("%s", async (_rule, { call, code, reason, field }) => {
    const refusal = await refusalOf(call());
    expect({ code: Code[refusal.code], reason: refusal.reason }).toEqual({ code: Code[code], reason });
    expect(refusal.domain).toBe("credit.v1");
    if (field !== undefined) expect(refusal.metadata["field"]).toBe(field);
  });

  it("an oversize Reserve (100 KB metadata value, over the 64 KiB limit) is RESOURCE_EXHAUSTED", async () => {
    expect(t.config.GRPC_MAX_MESSAGE_BYTES).toBe(64 * 1024);
    const refusal = await refusalOf(reserve({ metadata: { note: "x".repeat(100_000) } }));
    expect(Code[refusal.code]).toBe(Code[Code.ResourceExhausted]);
  });

  it("an oversize AdjustCredits (100 KB reason) is RESOURCE_EXHAUSTED and creates no account", async () => {
    const refusal = await refusalOf(adjust({ reason: "r".repeat(100_000) }));
    expect(Code[refusal.code]).toBe(Code[Code.ResourceExhausted]);
  });

  describe("raw bytes that are not a valid message", () => {
    let raw: Client;
    beforeAll(() => {
      raw = new Client(`127.0.0.1:${t.service.port}`, credentials.createInsecure());
    });
    afterAll(() => raw?.close());

    function rawCall(path: string, bytes: Buffer): Promise<{ err: ServiceError | null; body: Buffer | undefined }> {
      return new Promise((resolve) => {
        raw.makeUnaryRequest(
          path,
          (x: Buffer) => x,
          (x: Buffer) => x,
          bytes,
          new Metadata(),
          { deadline: Date.now() + 10_000 },  
          (err: ServiceError | null, body?: Buffer) => resolve({ err, body }),
        );
      });
    }

    function reasonOf(err: ServiceError): string | undefined {
      const bin = err.metadata.get("grpc-status-details-bin")[0];
      if (!(bin instanceof Buffer)) return undefined;
      const st = fromBinary(StatusSchema, bin);
      const info = st.details.map((d) => anyUnpack(d, ErrorInfoSchema)).find((x) => x !== undefined);
      return info?.reason;
    }

    it.each([
      ["Reserve", "/credit.v1.CreditService/Reserve", [0xff, 0xff, 0xff]],
      ["PurchaseTopUp", "/credit.v1.CreditService/PurchaseTopUp", [0xff, 0xff, 0xff]],
      ["AdjustCredits (truncated length-delimited field)", "/credit.v1.CreditAdminService/AdjustCredits", [0x0a, 0x05, 0x61]],
    ])("%s with malformed protobuf bytes is INVALID_ARGUMENT", async (_name, path, bytes) => {
      const { err } = await rawCall(path, Buffer.from(bytes));
      expect(err?.code).toBe(status.INVALID_ARGUMENT);
      expect(reasonOf(err!)).toBe("INVALID_FIELD");
    });

    it("an account id that is not valid UTF-8 is INVALID_ARGUMENT", async () => {
      // field 1 (account_id), length 2, bytes 0xff 0xfe
      const { err } = await rawCall("/credit.v1.CreditService/PurchaseTopUp", Buffer.from([0x0a, 0x02, 0xff, 0xfe, 0x12, 0x09, ...Buffer.from("topup-500"), 0x22, 0x02, 0x70, 0x31]));
      expect(err?.code).toBe(status.INVALID_ARGUMENT);
    });

    it("the server keeps serving after malformed requests", async () => {
      const request = Buffer.from(toBinary(GetBalanceRequestSchema, create(GetBalanceRequestSchema, { accountId: fixture.accountId })));
      const { err, body } = await rawCall("/credit.v1.CreditService/GetBalance", request);
      expect(err).toBeNull();
      expect(fromBinary(GetBalanceResponseSchema, body!).balance?.accountId).toBe(fixture.accountId);
      const viaClient = await t.credit.getBalance({ accountId: fixture.accountId });
      expect(viaClient.balance?.available).toBe(900n);
    });
  });

  it("after all of the above, no row was written in any table and no idempotency key was stored", async () => {
    expect(await rowsFor(writtenNever)).toEqual({ accounts: 0, buckets: 0, reservations: 0, ledger_entries: 0, operations: 0 });
    expect(await rowsFor([fixture.accountId])).toEqual(fixtureBefore);
    expect(await totals()).toEqual(totalsBefore);
    expect(toBinary(GetBalanceResponseSchema, await t.credit.getBalance({ accountId: fixture.accountId }))).toEqual(balanceBefore);
    expect(await t.service.store.reconcile(fixture.accountId)).toEqual([]);
    for (const ghost of writtenNever) expect(await idempotencyKeysFor(ghost)).toEqual([]);
    // No new key in the fixture's scopes (a concurrent FLUSHALL elsewhere can only remove keys).
    for (const k of await idempotencyKeysFor(fixture.accountId)) expect(fixtureKeysBefore).toContain(k);
    for (const k of await idempotencyKeysFor(fixture.reservationId)) expect(reservationKeysBefore).toContain(k);
    const reservation = await t.credit.getReservation({ reservationId: fixture.reservationId });
    expect(reservation.reservation?.heldAmount).toBe(100n);
    expect(reservation.reservation?.capturedAmount).toBe(0n);
  });
});

describe("the limits are the limits, not less", () => {
  it("Commit accepts a zero amount: the whole hold returns", async () => {
    const accountId = newAccountId("badin-ok");
    await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    const held = await t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 50n } });
    const committed = await t.credit.commit({ reservationId: held.reservation!.reservationId, idempotencyKey: newKey(), actual: { case: "amount", value: 0n } });
    expect(committed.reservation?.capturedAmount).toBe(0n);
    expect(committed.balance?.available).toBe(500n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("ids and keys of exactly 128 characters, 32 metadata entries and the maximum ttl are accepted", async () => {
    const accountId = `acct-${randomUUID()}-`.padEnd(128, "a");
    expect(accountId).toHaveLength(128);
    await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: `pay-${randomUUID()}-`.padEnd(128, "p") });
    const held = await t.credit.reserve({
      accountId,
      idempotencyKey: `key-${randomUUID()}-`.padEnd(128, "k"),
      cost: { case: "amount", value: 10n },
      metadata: { ...manyEntries(31), ["m".repeat(64)]: "v".repeat(256) },
      ttl: seconds(86_400n),
    });
    expect(held.reservation?.heldAmount).toBe(10n);
    expect(held.balance?.available).toBe(490n);
  });

  it("a ttl with a sub-millisecond remainder counts as the next whole millisecond: 1 ns holds for 1 ms, 24 h − 999 ns for 24 h", async () => {
    const accountId = newAccountId("badin-ok");
    await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    const lifetimeMs = async (ttl: ReturnType<typeof seconds>) => {
      const { reservation } = await t.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 1n }, ttl });
      return timestampDate(reservation!.expiresAt!).getTime() - timestampDate(reservation!.createdAt!).getTime();
    };
    expect(await lifetimeMs(seconds(0n, 1))).toBe(1);
    expect(await lifetimeMs(seconds(86_399n, 999_999_001))).toBe(86_400_000);
  });
});
