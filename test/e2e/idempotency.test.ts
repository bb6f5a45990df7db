import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  AdjustCreditsResponseSchema,
  CommitRequestSchema,
  CommitResponseSchema,
  type PurchaseTopUpRequestSchema,
  PurchaseTopUpResponseSchema,
  ReleaseReason,
  ReserveRequestSchema,
  ReserveResponseSchema,
  ReservationState,
} from "../../src/client/index.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { RedisIdempotencyCache } from "../../src/idempotency/redis-cache.js";
import { requestHash } from "../../src/rpc/request-hash.js";
import { TEST_DATABASE_URL, TEST_REDIS_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { failureOf } from "../support/e2e.js";

/**
 * §8 Idempotency end to end: one key, one effect — with Redis as the fast path, after Redis lost
 * its keys (FLUSHALL) and with Redis unreachable (Postgres alone).
 */

let t: TestService;
let db: pg.Pool;
let redis: Redis;

beforeAll(async () => {
  t = await startTestService();
  db = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 4 });
  redis = new Redis(TEST_REDIS_URL);
});
afterAll(async () => {
  await t?.stop();
  await db?.end();
  redis?.disconnect();
});

// ---------------------------------------------------------------------------------------------
// helpers

type ReserveRequest = MessageInitShape<typeof ReserveRequestSchema>;
type CommitRequest = MessageInitShape<typeof CommitRequestSchema>;
type PurchaseTopUpRequest = MessageInitShape<typeof PurchaseTopUpRequestSchema>;

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

async function count(sql: string, params: unknown[]): Promise<number> {
  const res = await db.query<{ n: string }>(sql, params);
  return Number(res.rows[0]!.n);
}

/** Rows the account has in each ledger table, read straight from Postgres. */
async function rowsOf(accountId: string) {
  const [buckets, reservations, entries, holds, captures, operations] = await Promise.all([
    count(`select count(*) as n from buckets where account_id = $1`, [accountId]),
    count(`select count(*) as n from reservations where account_id = $1`, [accountId]),
    count(`select count(*) as n from ledger_entries where account_id = $1`, [accountId]),
    count(`select count(*) as n from ledger_entries where account_id = $1 and kind = 'HOLD'`, [accountId]),
    count(`select count(*) as n from ledger_entries where account_id = $1 and kind = 'CAPTURE'`, [accountId]),
    count(`select count(*) as n from operations where account_id = $1`, [accountId]),
  ]);
  return { buckets, reservations, entries, holds, captures, operations };
}

async function operationsWithKey(accountId: string, key: string): Promise<number> {
  return count(`select count(*) as n from operations where account_id = $1 and idempotency_key = $2`, [accountId, key]);
}

async function fundedAccount(credits: "topup-500" | "topup-1000" | "topup-5000", client: TestService = t): Promise<string> {
  const accountId = newAccountId("idem");
  await client.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: credits }, paymentReference: newKey("pay") });
  return accountId;
}

function reserveRequest(accountId: string, key: string, amount: bigint): ReserveRequest {
  return { accountId, idempotencyKey: key, cost: { case: "amount", value: amount }, metadata: { model: "img-v2", job_id: "job-1" } };
}

function commitRequest(reservationId: string, key: string, amount: bigint): CommitRequest {
  return { reservationId, idempotencyKey: key, actual: { case: "amount", value: amount } };
}

function topUpRequest(accountId: string, paymentReference: string, packId = "topup-1000"): PurchaseTopUpRequest {
  return { accountId, pack: { case: "packId", value: packId }, paymentReference };
}

async function available(accountId: string, client: TestService = t): Promise<{ available: bigint; held: bigint }> {
  const b = await client.credit.getBalance({ accountId });
  return { available: b.balance!.available, held: b.balance!.held };
}

// ---------------------------------------------------------------------------------------------

describe("same key, same request", () => {
  it("fifty sequential Reserve calls with one key hold the credits once and all return the identical response", async () => {
    const accountId = await fundedAccount("topup-1000");
    const key = newKey("reserve");
    const req = reserveRequest(accountId, key, 100n);

    const responses = [];
    for (let i = 0; i < 50; i++) {
      responses.push(await t.credit.reserve(req));
      t.clock.advance(1_000); // a second execution would stamp a different as_of / expires_at
    }

    const first = hex(toBinary(ReserveResponseSchema, responses[0]!));
    for (const r of responses) expect(hex(toBinary(ReserveResponseSchema, r))).toBe(first);
    expect(new Set(responses.map((r) => r.reservation!.reservationId)).size).toBe(1);
    expect(responses[0]!.balance!.available).toBe(900n);

    expect(await available(accountId)).toEqual({ available: 900n, held: 100n });
    const rows = await rowsOf(accountId);
    expect(rows.reservations).toBe(1);
    expect(rows.holds).toBe(1); // one bucket, one HOLD entry
    expect(await operationsWithKey(accountId, key)).toBe(1);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("fifty concurrent Reserve calls with one key have exactly one effect; each either returns the one response or is ABORTED with IDEMPOTENCY_KEY_IN_USE", async () => {
    const accountId = await fundedAccount("topup-1000");
    const key = newKey("reserve");
    const req = reserveRequest(accountId, key, 70n);

    const settled = await Promise.allSettled(Array.from({ length: 50 }, () => t.credit.reserve(req)));

    const ok = settled.filter((s) => s.status === "fulfilled").map((s) => s.value);
    const failed = settled.filter((s) => s.status === "rejected").map((s) => s.reason as unknown);
    expect(ok.length).toBeGreaterThanOrEqual(1);
    const first = hex(toBinary(ReserveResponseSchema, ok[0]!));
    for (const r of ok) expect(hex(toBinary(ReserveResponseSchema, r))).toBe(first);
    for (const err of failed) {
      const e = ConnectError.from(err);
      expect(e.code, e.message).toBe(Code.Aborted);
      expect(e.findDetails(ErrorInfoSchema)[0]?.reason).toBe("IDEMPOTENCY_KEY_IN_USE");
    }

    // A retry after the storm gets the same response, still without a second effect.
    const retry = await t.credit.reserve(req);
    expect(hex(toBinary(ReserveResponseSchema, retry))).toBe(first);

    expect(await available(accountId)).toEqual({ available: 930n, held: 70n });
    const rows = await rowsOf(accountId);
    expect(rows.reservations).toBe(1);
    expect(rows.holds).toBe(1);
    expect(await operationsWithKey(accountId, key)).toBe(1);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("the fast path keeps the response in Redis under credit:idem:{account}:key", async () => {
    const accountId = await fundedAccount("topup-500");
    const key = newKey("reserve");
    await t.credit.reserve(reserveRequest(accountId, key, 10n));
    const stored = await redis.get(RedisIdempotencyCache.key(accountId, key));
    expect(stored).not.toBeNull();
    expect(stored!.startsWith("D|")).toBe(true);
  });
});

describe("same key, different request", () => {
  it("Reserve with a used key and another amount fails INVALID_ARGUMENT IDEMPOTENCY_KEY_REUSED and changes nothing", async () => {
    const accountId = await fundedAccount("topup-1000");
    const key = newKey("reserve");
    const original = await t.credit.reserve(reserveRequest(accountId, key, 100n));
    const before = await rowsOf(accountId);

    const failure = await failureOf(t.credit.reserve(reserveRequest(accountId, key, 101n)));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe("IDEMPOTENCY_KEY_REUSED");

    expect(await rowsOf(accountId)).toEqual(before);
    expect(await available(accountId)).toEqual({ available: 900n, held: 100n });
    // The original request still replays its original response.
    const again = await t.credit.reserve(reserveRequest(accountId, key, 100n));
    expect(hex(toBinary(ReserveResponseSchema, again))).toBe(hex(toBinary(ReserveResponseSchema, original)));
  });

  it("Reserve with a used key and other metadata is a different request: IDEMPOTENCY_KEY_REUSED", async () => {
    const accountId = await fundedAccount("topup-1000");
    const key = newKey("reserve");
    await t.credit.reserve(reserveRequest(accountId, key, 100n));
    const changed: ReserveRequest = { ...reserveRequest(accountId, key, 100n), metadata: { model: "img-v3", job_id: "job-1" } };
    const failure = await failureOf(t.credit.reserve(changed));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe("IDEMPOTENCY_KEY_REUSED");
    expect(await available(accountId)).toEqual({ available: 900n, held: 100n });
  });

  it("after FLUSHALL, a used key with another amount is still IDEMPOTENCY_KEY_REUSED (Postgres remembers)", async () => {
    const accountId = await fundedAccount("topup-1000");
    const key = newKey("reserve");
    await t.credit.reserve(reserveRequest(accountId, key, 100n));
    await redis.flushall();

    const failure = await failureOf(t.credit.reserve(reserveRequest(accountId, key, 250n)));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe("IDEMPOTENCY_KEY_REUSED");
    expect(await available(accountId)).toEqual({ available: 900n, held: 100n });
    expect((await rowsOf(accountId)).reservations).toBe(1);
  });
});

describe("same key while the first call runs", () => {
  it("a different request is ABORTED (IDEMPOTENCY_KEY_IN_USE), not KEY_REUSED: the first call's outcome decides, and afterwards it is KEY_REUSED", async () => {
    const accountId = await fundedAccount("topup-1000");
    const key = newKey("reserve");
    // Hold the account row so the first Reserve stays in flight (its claim taken, its transaction waiting).
    const blocker = await db.connect();
    let first: Promise<unknown> | undefined;
    try {
      await blocker.query("begin");
      await blocker.query("select 1 from accounts where account_id = $1 for update", [accountId]);
      first = t.credit.reserve(reserveRequest(accountId, key, 100n));
      await vi.waitFor(async () => {
        const waiting = await count(`select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`, []);
        expect(waiting).toBeGreaterThan(0);
      }, { timeout: 10_000, interval: 20 });

      const during = await failureOf(t.credit.reserve(reserveRequest(accountId, key, 101n)));
      expect([Code[during.code], during.reason]).toEqual([Code[Code.Aborted], "IDEMPOTENCY_KEY_IN_USE"]);
    } finally {
      await blocker.query("commit");
      blocker.release();
    }
    await first;
    const after = await failureOf(t.credit.reserve(reserveRequest(accountId, key, 101n)));
    expect([Code[after.code], after.reason]).toEqual([Code[Code.InvalidArgument], "IDEMPOTENCY_KEY_REUSED"]);
    expect(await available(accountId)).toEqual({ available: 900n, held: 100n });
  });
});

describe("a reservation id is one id whatever its letter case", () => {
  it("Commit with the upper-case id, then the same key with the lower-case id, replays the first response", async () => {
    const accountId = await fundedAccount("topup-1000");
    const reserved = await t.credit.reserve(reserveRequest(accountId, newKey("reserve"), 100n));
    const id = reserved.reservation!.reservationId;
    const key = newKey("commit");
    const first = await t.credit.commit(commitRequest(id.toUpperCase(), key, 60n));
    expect(first.reservation?.reservationId).toBe(id);
    const again = await t.credit.commit(commitRequest(id, key, 60n));
    expect(hex(toBinary(CommitResponseSchema, again))).toBe(hex(toBinary(CommitResponseSchema, first)));
    // And the same through Postgres alone, once Redis has lost the key.
    await redis.flushall();
    const fromPostgres = await t.credit.commit(commitRequest(id.toUpperCase(), key, 60n));
    expect(hex(toBinary(CommitResponseSchema, fromPostgres))).toBe(hex(toBinary(CommitResponseSchema, first)));
    expect((await rowsOf(accountId)).captures).toBe(1);
  });

  it("Release and ExtendReservation replay across letter case too", async () => {
    const accountId = await fundedAccount("topup-1000");
    const extendKey = newKey("extend");
    const releaseKey = newKey("release");
    const id = (await t.credit.reserve(reserveRequest(accountId, newKey("reserve"), 100n))).reservation!.reservationId;
    const ttl = { seconds: 600n, nanos: 0 };
    const extended = await t.credit.extendReservation({ reservationId: id, idempotencyKey: extendKey, ttl });
    const extendedAgain = await t.credit.extendReservation({ reservationId: id.toUpperCase(), idempotencyKey: extendKey, ttl });
    expect(extendedAgain.reservation).toEqual(extended.reservation);
    const released = await t.credit.release({ reservationId: id.toUpperCase(), idempotencyKey: releaseKey, reason: ReleaseReason.INTERRUPTED });
    const releasedAgain = await t.credit.release({ reservationId: id, idempotencyKey: releaseKey, reason: ReleaseReason.INTERRUPTED });
    expect(releasedAgain).toEqual(released);
  });
});

describe("keys are scoped to the account, whatever the method", () => {
  it("a Reserve key reused for a Commit on the same account is IDEMPOTENCY_KEY_REUSED and captures nothing", async () => {
    const accountId = await fundedAccount("topup-1000");
    const key = newKey("shared");
    const reserved = await t.credit.reserve(reserveRequest(accountId, key, 100n));
    const failure = await failureOf(t.credit.commit(commitRequest(reserved.reservation!.reservationId, key, 100n)));
    expect([failure.code, failure.reason]).toEqual([Code.InvalidArgument, "IDEMPOTENCY_KEY_REUSED"]);
    expect((await rowsOf(accountId)).captures).toBe(0);
    expect(await available(accountId)).toEqual({ available: 900n, held: 100n });
  });

  it("a Commit key reused for a Reserve on the same account is IDEMPOTENCY_KEY_REUSED and holds nothing more", async () => {
    const accountId = await fundedAccount("topup-1000");
    const reserved = await t.credit.reserve(reserveRequest(accountId, newKey("reserve"), 100n));
    const key = newKey("shared");
    await t.credit.commit(commitRequest(reserved.reservation!.reservationId, key, 100n));
    const failure = await failureOf(t.credit.reserve(reserveRequest(accountId, key, 50n)));
    expect([failure.code, failure.reason]).toEqual([Code.InvalidArgument, "IDEMPOTENCY_KEY_REUSED"]);
    expect((await rowsOf(accountId)).reservations).toBe(1);
    expect(await available(accountId)).toEqual({ available: 900n, held: 0n });
  });
});

describe("Redis flushed between two identical calls (Postgres backstop)", () => {
  it("Reserve repeated after FLUSHALL holds once and returns the same response", async () => {
    const accountId = await fundedAccount("topup-1000");
    const key = newKey("reserve");
    const req = reserveRequest(accountId, key, 300n);

    const first = await t.credit.reserve(req);
    expect(await redis.exists(RedisIdempotencyCache.key(accountId, key))).toBe(1);
    await redis.flushall();
    expect(await redis.exists(RedisIdempotencyCache.key(accountId, key))).toBe(0);
    t.clock.advance(5_000);
    const second = await t.credit.reserve(req);

    expect(hex(toBinary(ReserveResponseSchema, second))).toBe(hex(toBinary(ReserveResponseSchema, first)));
    expect(await available(accountId)).toEqual({ available: 700n, held: 300n });
    const rows = await rowsOf(accountId);
    expect(rows.reservations).toBe(1);
    expect(rows.holds).toBe(1);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("Commit repeated after FLUSHALL captures once and returns the same response", async () => {
    const accountId = await fundedAccount("topup-1000");
    const reserved = await t.credit.reserve(reserveRequest(accountId, newKey("reserve"), 200n));
    const reservationId = reserved.reservation!.reservationId;
    const key = newKey("commit");
    const req = commitRequest(reservationId, key, 150n);

    const first = await t.credit.commit(req);
    await redis.flushall();
    t.clock.advance(5_000);
    const second = await t.credit.commit(req);

    expect(hex(toBinary(CommitResponseSchema, second))).toBe(hex(toBinary(CommitResponseSchema, first)));
    expect(first.reservation!.capturedAmount).toBe(150n);
    expect(await available(accountId)).toEqual({ available: 850n, held: 0n });
    const rows = await rowsOf(accountId);
    expect(rows.captures).toBe(1);
    expect(await operationsWithKey(accountId, key)).toBe(1);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("PurchaseTopUp with one payment reference twice around FLUSHALL adds one bucket and returns the same response", async () => {
    const accountId = newAccountId("idem");
    const reference = newKey("pay");
    const req = topUpRequest(accountId, reference);

    const first = await t.credit.purchaseTopUp(req);
    await redis.flushall();
    t.clock.advance(5_000);
    const second = await t.credit.purchaseTopUp(req);

    expect(hex(toBinary(PurchaseTopUpResponseSchema, second))).toBe(hex(toBinary(PurchaseTopUpResponseSchema, first)));
    expect(second.bucket!.bucketId).toBe(first.bucket!.bucketId);
    expect(await available(accountId)).toEqual({ available: 1000n, held: 0n });
    const rows = await rowsOf(accountId);
    expect(rows.buckets).toBe(1);
    expect(rows.entries).toBe(1);
    expect(await operationsWithKey(accountId, reference)).toBe(1);
  });

  it("AdjustCredits repeated after FLUSHALL grants one ADJUSTMENT bucket and returns the same response", async () => {
    const accountId = newAccountId("idem");
    const req = { accountId, amount: 250n, reason: "incident INC-42", idempotencyKey: newKey("adjust") };
    const first = await t.admin.adjustCredits(req);
    await redis.flushall();
    t.clock.advance(5_000);
    const second = await t.admin.adjustCredits(req);
    expect(hex(toBinary(AdjustCreditsResponseSchema, second))).toBe(hex(toBinary(AdjustCreditsResponseSchema, first)));
    expect((await rowsOf(accountId)).buckets).toBe(1);
    expect(await available(accountId)).toEqual({ available: 250n, held: 0n });
  });

  it("PurchaseTopUp with one payment reference and another pack is IDEMPOTENCY_KEY_REUSED, with or without Redis", async () => {
    const accountId = newAccountId("idem");
    const reference = newKey("pay");
    await t.credit.purchaseTopUp(topUpRequest(accountId, reference, "topup-1000"));

    const fast = await failureOf(t.credit.purchaseTopUp(topUpRequest(accountId, reference, "topup-5000")));
    expect([fast.code, fast.reason]).toEqual([Code.InvalidArgument, "IDEMPOTENCY_KEY_REUSED"]);
    await redis.flushall();
    const backstop = await failureOf(t.credit.purchaseTopUp(topUpRequest(accountId, reference, "topup-5000")));
    expect([backstop.code, backstop.reason]).toEqual([Code.InvalidArgument, "IDEMPOTENCY_KEY_REUSED"]);

    expect(await available(accountId)).toEqual({ available: 1000n, held: 0n });
    expect((await rowsOf(accountId)).buckets).toBe(1);
  });
});

describe("a failed call leaves no idempotency record", () => {
  it("Reserve refused with INSUFFICIENT_CREDITS can be retried with the same key after a top-up, and then succeeds", async () => {
    const accountId = await fundedAccount("topup-500");
    const key = newKey("reserve");
    const req = reserveRequest(accountId, key, 800n);

    const failure = await failureOf(t.credit.reserve(req));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("INSUFFICIENT_CREDITS");
    expect(await operationsWithKey(accountId, key)).toBe(0);
    expect(await redis.exists(RedisIdempotencyCache.key(accountId, key))).toBe(0);
    expect((await rowsOf(accountId)).reservations).toBe(0);

    await t.credit.purchaseTopUp(topUpRequest(accountId, newKey("pay"), "topup-500"));
    const retried = await t.credit.reserve(req);
    expect(retried.reservation!.heldAmount).toBe(800n);
    expect(retried.balance!.available).toBe(200n);
    expect(await operationsWithKey(accountId, key)).toBe(1);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("Commit refused with INSUFFICIENT_CREDITS keeps the hold open and a retry with the same key succeeds after a top-up", async () => {
    const accountId = await fundedAccount("topup-500");
    const reserved = await t.credit.reserve(reserveRequest(accountId, newKey("reserve"), 400n));
    const reservationId = reserved.reservation!.reservationId;
    const key = newKey("commit");
    const req = commitRequest(reservationId, key, 700n); // 300 extra, only 100 free

    const failure = await failureOf(t.credit.commit(req));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("INSUFFICIENT_CREDITS");
    expect(await operationsWithKey(accountId, key)).toBe(0);

    await t.credit.purchaseTopUp(topUpRequest(accountId, newKey("pay"), "topup-500"));
    const retried = await t.credit.commit(req);
    expect(retried.reservation!.capturedAmount).toBe(700n);
    expect(retried.balance!.available).toBe(300n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});

describe("Redis unreachable: Postgres alone", () => {
  let down: TestService;
  beforeAll(async () => {
    down = await startTestService({ REDIS_URL: "redis://127.0.0.1:1" });
  });
  afterAll(async () => {
    await down?.stop();
  });

  it("Reserve and Commit keep working", async () => {
    const accountId = await fundedAccount("topup-1000", down);
    const reserved = await down.credit.reserve(reserveRequest(accountId, newKey("reserve"), 100n));
    expect(reserved.balance!.available).toBe(900n);
    const committed = await down.credit.commit(commitRequest(reserved.reservation!.reservationId, newKey("commit"), 40n));
    expect(committed.reservation!.capturedAmount).toBe(40n);
    expect(committed.balance!.available).toBe(960n);
    expect(await down.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a repeated Reserve with one key holds once and returns the same response", async () => {
    const accountId = await fundedAccount("topup-1000", down);
    const key = newKey("reserve");
    const req = reserveRequest(accountId, key, 250n);
    const first = await down.credit.reserve(req);
    down.clock.advance(2_000);
    const second = await down.credit.reserve(req);
    expect(hex(toBinary(ReserveResponseSchema, second))).toBe(hex(toBinary(ReserveResponseSchema, first)));
    expect(await available(accountId, down)).toEqual({ available: 750n, held: 250n });
    expect((await rowsOf(accountId)).reservations).toBe(1);
  });

  it("a repeated Commit with one key captures once and returns the same response", async () => {
    const accountId = await fundedAccount("topup-1000", down);
    const reserved = await down.credit.reserve(reserveRequest(accountId, newKey("reserve"), 300n));
    const req = commitRequest(reserved.reservation!.reservationId, newKey("commit"), 120n);
    const first = await down.credit.commit(req);
    down.clock.advance(2_000);
    const second = await down.credit.commit(req);
    expect(hex(toBinary(CommitResponseSchema, second))).toBe(hex(toBinary(CommitResponseSchema, first)));
    expect(await available(accountId, down)).toEqual({ available: 880n, held: 0n });
    expect((await rowsOf(accountId)).captures).toBe(1);
  });

  it("a repeated PurchaseTopUp with one payment reference adds one bucket", async () => {
    const accountId = newAccountId("idem");
    const req = topUpRequest(accountId, newKey("pay"));
    const first = await down.credit.purchaseTopUp(req);
    const second = await down.credit.purchaseTopUp(req);
    expect(hex(toBinary(PurchaseTopUpResponseSchema, second))).toBe(hex(toBinary(PurchaseTopUpResponseSchema, first)));
    expect((await rowsOf(accountId)).buckets).toBe(1);
    expect(await available(accountId, down)).toEqual({ available: 1000n, held: 0n });
  });

  it("twenty concurrent Reserve calls with one key have exactly one effect", async () => {
    const accountId = await fundedAccount("topup-1000", down);
    const req = reserveRequest(accountId, newKey("reserve"), 60n);
    const settled = await Promise.allSettled(Array.from({ length: 20 }, () => down.credit.reserve(req)));
    const ok = settled.filter((s) => s.status === "fulfilled").map((s) => s.value);
    expect(ok.length).toBeGreaterThanOrEqual(1);
    const first = hex(toBinary(ReserveResponseSchema, ok[0]!));
    for (const r of ok) expect(hex(toBinary(ReserveResponseSchema, r))).toBe(first);
    for (const s of settled) {
      if (s.status === "rejected") expect(ConnectError.from(s.reason).code).toBe(Code.Aborted);
    }
    expect(await available(accountId, down)).toEqual({ available: 940n, held: 60n });
    expect((await rowsOf(accountId)).reservations).toBe(1);
  });

  it("twenty concurrent PurchaseTopUp calls with one payment reference on a new account add one bucket", async () => {
    const accountId = newAccountId("idem");
    const req = topUpRequest(accountId, newKey("pay"));
    const settled = await Promise.allSettled(Array.from({ length: 20 }, () => down.credit.purchaseTopUp(req)));
    const ok = settled.filter((s) => s.status === "fulfilled").map((s) => s.value);
    expect(ok.length).toBeGreaterThanOrEqual(1);
    const first = hex(toBinary(PurchaseTopUpResponseSchema, ok[0]!));
    for (const r of ok) expect(hex(toBinary(PurchaseTopUpResponseSchema, r))).toBe(first);
    for (const s of settled) {
      if (s.status === "rejected") expect(ConnectError.from(s.reason).code).toBe(Code.Aborted);
    }
    expect((await rowsOf(accountId)).buckets).toBe(1);
    expect(await available(accountId, down)).toEqual({ available: 1000n, held: 0n });
  });

  it("a used key with another amount is IDEMPOTENCY_KEY_REUSED", async () => {
    const accountId = await fundedAccount("topup-1000", down);
    const key = newKey("reserve");
    await down.credit.reserve(reserveRequest(accountId, key, 100n));
    const failure = await failureOf(down.credit.reserve(reserveRequest(accountId, key, 999n)));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe("IDEMPOTENCY_KEY_REUSED");
    expect(await available(accountId, down)).toEqual({ available: 900n, held: 100n });
  });

  it("a failed call leaves no record: the same key succeeds after a top-up", async () => {
    const accountId = await fundedAccount("topup-500", down);
    const key = newKey("reserve");
    const req = reserveRequest(accountId, key, 600n);
    const failure = await failureOf(down.credit.reserve(req));
    expect([failure.code, failure.reason]).toEqual([Code.FailedPrecondition, "INSUFFICIENT_CREDITS"]);
    await down.credit.purchaseTopUp(topUpRequest(accountId, newKey("pay"), "topup-500"));
    const retried = await down.credit.reserve(req);
    expect(retried.balance!.available).toBe(400n);
  });

  it("a key first used while Redis was down is honoured by a server whose Redis is up", async () => {
    const accountId = await fundedAccount("topup-1000", down);
    const key = newKey("reserve");
    const req = reserveRequest(accountId, key, 150n);
    const first = await down.credit.reserve(req);
    const viaUp = await t.credit.reserve(req);
    expect(hex(toBinary(ReserveResponseSchema, viaUp))).toBe(hex(toBinary(ReserveResponseSchema, first)));
    expect((await rowsOf(accountId)).reservations).toBe(1);
    const reused = await failureOf(t.credit.reserve(reserveRequest(accountId, key, 151n)));
    expect(reused.reason).toBe("IDEMPOTENCY_KEY_REUSED");
  });
});

describe("Redis is not trusted to say done", () => {
  /** Where the service keeps a Commit's key (its reservation's account's), and a value claiming it was done with `response`. */
  const commitKey = (accountId: string, key: string) => RedisIdempotencyCache.key(accountId, key);
  const forgedDone = (req: CommitRequest, response: Uint8Array) =>
    `D|${requestHash("Commit", CommitRequestSchema, create(CommitRequestSchema, req)).toString("hex")}|${Buffer.from(response).toString("base64")}`;

  it("a forged D| value planted for a Commit key is not replayed: the Commit runs against Postgres and answers the truth", async () => {
    const accountId = await fundedAccount("topup-1000");
    const reserved = await t.credit.reserve(reserveRequest(accountId, newKey("reserve"), 200n));
    const reservationId = reserved.reservation!.reservationId;
    const req = commitRequest(reservationId, newKey("commit"), 150n);
    // What someone with access to Redis writes: "this Commit captured 150", which never happened.
    const lie = toBinary(
      CommitResponseSchema,
      create(CommitResponseSchema, {
        reservation: { ...reserved.reservation!, state: ReservationState.COMMITTED, capturedAmount: 150n },
        balance: { ...reserved.balance!, available: 1_000_000n, held: 0n },
      }),
    );
    await redis.set(commitKey(accountId, req.idempotencyKey!), forgedDone(req, lie));

    const answer = await t.credit.commit(req);
    expect(hex(toBinary(CommitResponseSchema, answer))).not.toBe(hex(lie));
    expect(answer.reservation!.capturedAmount).toBe(150n);
    expect(answer.balance!.available).toBe(850n);
    expect((await rowsOf(accountId)).captures).toBe(1);
    expect(await operationsWithKey(accountId, req.idempotencyKey!)).toBe(1);
    // The forged value was overwritten by the real answer, which replays from then on.
    expect(await redis.get(commitKey(accountId, req.idempotencyKey!))).not.toBe(forgedDone(req, lie));
    t.clock.advance(1_000);
    expect(hex(toBinary(CommitResponseSchema, await t.credit.commit(req)))).toBe(hex(toBinary(CommitResponseSchema, answer)));
    expect((await rowsOf(accountId)).captures).toBe(1);
  });
});

describe("Redis is not trusted to say a call is running", () => {
  it("a forged in-flight claim without an expiry does not make the key ABORTED forever: the call runs and its answer replaces the claim", async () => {
    const accountId = await fundedAccount("topup-1000");
    const req = reserveRequest(accountId, newKey("reserve"), 100n);
    const hash = requestHash("Reserve", ReserveRequestSchema, create(ReserveRequestSchema, req)).toString("hex");
    const key = RedisIdempotencyCache.key(accountId, req.idempotencyKey!);
    await redis.set(key, `P|${hash}|${newKey("token")}`); // no PX: it would never expire

    const first = await t.credit.reserve(req);
    expect(first.balance!.available).toBe(900n);
    expect(await redis.pttl(key)).toBeGreaterThan(0); // the real answer, with the idempotency TTL
    t.clock.advance(1_000);
    expect(hex(toBinary(ReserveResponseSchema, await t.credit.reserve(req)))).toBe(hex(toBinary(ReserveResponseSchema, first)));
    expect((await rowsOf(accountId)).reservations).toBe(1);
  });
});

describe("account and reservation keys live in different namespaces", () => {
  it("an account whose id is a reservation's UUID cannot poison that reservation's Commit", async () => {
    const accountId = await fundedAccount("topup-1000");
    const reserved = await t.credit.reserve(reserveRequest(accountId, newKey("reserve"), 100n));
    const reservationId = reserved.reservation!.reservationId;
    const key = newKey("shared");
    // Another caller uses the reservation's id as an account id, with the key the Commit will use.
    await t.credit.purchaseTopUp(topUpRequest(reservationId, key));

    const committed = await t.credit.commit(commitRequest(reservationId, key, 60n));
    expect(committed.reservation!.capturedAmount).toBe(60n);
    expect(await available(accountId)).toEqual({ available: 940n, held: 0n });
    expect(await available(reservationId)).toEqual({ available: 1000n, held: 0n });
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});
