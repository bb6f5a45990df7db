import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AdjustCreditsResponseSchema,
  type Balance,
  BucketKind,
  CommitResponseSchema,
  GetBalanceResponseSchema,
  LedgerEntryKind,
  ListLedgerEntriesResponseSchema,
  PurchaseTopUpResponseSchema,
  ReserveResponseSchema,
} from "../../src/client/index.js";
import { RedisIdempotencyCache } from "../../src/idempotency/redis-cache.js";
import { MAX_BALANCE_BUCKETS, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_LENGTH, MAX_METADATA_VALUE_LENGTH, MAX_TEXT_LENGTH } from "../../src/domain/limits.js";
import { TEST_DATABASE_URL, TEST_REDIS_URL } from "../support/env.js";
import { rebuildUsage } from "../support/usage-rollup.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

/**
 * Answers stay sendable whatever an account holds. An account with thousands of live buckets,
 * each made with the longest reason AdjustCredits accepts (1,024 three-byte characters), used to
 * make every answer embedding its balance larger than grpc-js sends (4 MiB): the hold, top-up or
 * adjustment committed, the oversized answer was stored, and the caller and every retry got
 * RESOURCE_EXHAUSTED. Now every answer lists the first MAX_BALANCE_BUCKETS buckets in consumption
 * order with the totals exact, says the list is cut short, and stays small where it is stored.
 */

const LIVE_BUCKETS = 2_000;
const PER_BUCKET = 1_000n;
/** An answer, its operation record and its Redis value must stay below this. */
const SMALL = 64 * 1024;
/** The longest reason accepted: MAX_TEXT_LENGTH UTF-16 units, each three bytes in UTF-8. */
const LONGEST_REASON = "€".repeat(MAX_TEXT_LENGTH);

let t: TestService;
let db: pg.Pool;
let redis: Redis;

beforeAll(async () => {
  t = await startTestService();
  db = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 });
  redis = new Redis(TEST_REDIS_URL);
});
afterAll(async () => {
  await t?.stop();
  await db?.end();
  redis?.disconnect();
});

/**
 * Copies the account's one ADJUSTMENT bucket `copies` times, with its ADJUST entry and the usage
 * rollup rebuilt from the entries (so the ledger still reconciles), and with the source reference
 * the service wrote before references were
 * bounded (`adjustment:` + the whole reason): stored data from before the bound stays sendable too.
 * Seeded in SQL because thousands of AdjustCredits calls, each loading every live bucket, take minutes.
 */
async function cloneAdjustment(accountId: string, bucketId: string, copies: number): Promise<void> {
  await db.query(
    `with src as (select * from buckets where account_id = $1 and bucket_id = $2),
          clones as (
            insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
            select s.account_id, gen_random_uuid(), s.kind, s.granted, s.remaining, 0, s.valid_from, s.expires_at, $3, s.created_at - g * interval '1 millisecond'
              from src s, generate_series(1, $4::int) g
            returning account_id, bucket_id, granted, created_at)
     insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, idempotency_key, caller, metadata, created_at)
     select c.account_id, 'ADJUST', c.bucket_id, null, c.granted, null, 'seed', e.metadata, c.created_at
       from clones c, (select metadata from ledger_entries where account_id = $1 and bucket_id = $2) e`,
    [accountId, bucketId, `adjustment:${LONGEST_REASON}`, copies],
  );
  await rebuildUsage(db, accountId);
}

function size<D extends DescMessage>(schema: D, message: MessageShape<D>): number {
  return toBinary(schema, message).length;
}

/** Totals exact, the first MAX_BALANCE_BUCKETS buckets listed, the rest counted. */
function expectTruncated(balance: Balance | undefined, available: bigint, held: bigint, live: number): void {
  expect(balance).toBeDefined();
  expect(balance!.available).toBe(available);
  expect(balance!.held).toBe(held);
  expect(balance!.buckets).toHaveLength(MAX_BALANCE_BUCKETS);
  expect(balance!.bucketsTruncated).toBe(true);
  expect(balance!.bucketCount).toBe(live);
}

async function storedSizes(accountId: string): Promise<Map<string, number>> {
  const rows = await db.query<{ idempotency_key: string; n: number }>(
    `select idempotency_key, length(response) as n from operations where account_id = $1`,
    [accountId],
  );
  return new Map(rows.rows.map((r) => [r.idempotency_key, Number(r.n)]));
}

async function redisSize(redisKey: string): Promise<number> {
  return redis.strlen(redisKey);
}

describe("an account with thousands of buckets made with the longest reasons", () => {
  it("answers Reserve, Commit, AdjustCredits, PurchaseTopUp and GetBalance OK, small, with exact totals, and replays them", async () => {
    const accountId = newAccountId("bounds");
    const first = await t.admin.adjustCredits({ accountId, amount: PER_BUCKET, reason: LONGEST_REASON, idempotencyKey: newKey("adj") });
    await cloneAdjustment(accountId, first.bucket!.bucketId, LIVE_BUCKETS - 1);
    let live = LIVE_BUCKETS;
    let total = PER_BUCKET * BigInt(live);

    const reserveKey = newKey("res");
    const reserveReq = { accountId, idempotencyKey: reserveKey, cost: { case: "amount" as const, value: 1_500n } };
    const reserved = await t.credit.reserve(reserveReq);
    expectTruncated(reserved.balance, total - 1_500n, 1_500n, live);
    const reservationId = reserved.reservation!.reservationId;

    const commitKey = newKey("commit");
    const commitReq = { reservationId, idempotencyKey: commitKey, actual: { case: "amount" as const, value: 1_200n } };
    const committed = await t.credit.commit(commitReq);
    total -= 1_200n;
    live -= 1; // the first bucket (1,000) is spent
    expectTruncated(committed.balance, total, 0n, live);

    const adjustKey = newKey("adj");
    const adjustReq = { accountId, amount: PER_BUCKET, reason: LONGEST_REASON, idempotencyKey: adjustKey };
    const adjusted = await t.admin.adjustCredits(adjustReq);
    total += PER_BUCKET;
    live += 1;
    expectTruncated(adjusted.balance, total, 0n, live);
    // The new bucket's reference is bounded; the whole reason stays on its ADJUST entry.
    expect(Buffer.byteLength(adjusted.bucket!.sourceRef)).toBeLessThan(Buffer.byteLength(LONGEST_REASON));

    const payKey = newKey("pay");
    const payReq = { accountId, pack: { case: "packId" as const, value: "topup-500" }, paymentReference: payKey };
    const bought = await t.credit.purchaseTopUp(payReq);
    total += 500n;
    live += 1;
    expectTruncated(bought.balance, total, 0n, live);
    // Top-ups are consumed first, so the one just bought leads the list.
    expect(bought.balance!.buckets[0]!.kind).toBe(BucketKind.TOP_UP);

    const { balance, sequence } = await t.credit.getBalance({ accountId });
    expectTruncated(balance, total, 0n, live);
    expect(size(GetBalanceResponseSchema, { $typeName: "credit.v1.GetBalanceResponse", balance, sequence })).toBeLessThan(SMALL);

    const answers = [
      size(ReserveResponseSchema, reserved),
      size(CommitResponseSchema, committed),
      size(AdjustCreditsResponseSchema, adjusted),
      size(PurchaseTopUpResponseSchema, bought),
    ];
    for (const n of answers) expect(n).toBeLessThan(SMALL);

    // What is kept for replays is as small: the operation records and the Redis values.
    const stored = await storedSizes(accountId);
    for (const key of [reserveKey, commitKey, adjustKey, payKey]) {
      expect(stored.get(key)).toBeGreaterThan(0);
      expect(stored.get(key)).toBeLessThan(SMALL);
    }
    const redisKeys = [
      RedisIdempotencyCache.key(accountId, reserveKey),
      RedisIdempotencyCache.key(accountId, commitKey),
      RedisIdempotencyCache.key(accountId, adjustKey),
      RedisIdempotencyCache.key(accountId, payKey),
    ];
    for (const redisKey of redisKeys) {
      expect(await redisSize(redisKey)).toBeGreaterThan(0);
      expect(await redisSize(redisKey)).toBeLessThan(SMALL);
    }

    // Retries replay the original answers: from Redis, then from Postgres once Redis lost them.
    const replayAll = async () => {
      expect(toBinary(ReserveResponseSchema, await t.credit.reserve(reserveReq))).toEqual(toBinary(ReserveResponseSchema, reserved));
      expect(toBinary(CommitResponseSchema, await t.credit.commit(commitReq))).toEqual(toBinary(CommitResponseSchema, committed));
      expect(toBinary(AdjustCreditsResponseSchema, await t.admin.adjustCredits(adjustReq))).toEqual(toBinary(AdjustCreditsResponseSchema, adjusted));
      expect(toBinary(PurchaseTopUpResponseSchema, await t.credit.purchaseTopUp(payReq))).toEqual(toBinary(PurchaseTopUpResponseSchema, bought));
    };
    await replayAll();
    await redis.del(...redisKeys);
    await replayAll();

    // Nothing ran twice, and the ledger still adds up.
    const after = await t.credit.getBalance({ accountId });
    expectTruncated(after.balance, total, 0n, live);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});

describe("a ledger with many entries carrying the largest metadata", () => {
  it("is listed in pages that stay sendable, each ending early with a token for the rest", async () => {
    const accountId = newAccountId("bounds-ledger");
    await t.admin.adjustCredits({ accountId, amount: 1_000_000n, reason: "ledger pages", idempotencyKey: newKey("adj") });
    // The largest metadata a hold takes: every entry of it, each key and value at its longest in three-byte characters.
    const metadata = Object.fromEntries(
      Array.from({ length: MAX_METADATA_ENTRIES }, (_, i) => [`${i}`.padStart(2, "0") + "€".repeat(MAX_METADATA_KEY_LENGTH - 2), "€".repeat(MAX_METADATA_VALUE_LENGTH)]),
    );
    // 150 HOLD entries of about 31 KiB: 4.6 MB, more than one answer can carry.
    const holds = 150;
    for (let i = 0; i < holds; i += 1) {
      await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 1n }, metadata });
    }

    const seen: bigint[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await t.admin.listLedgerEntries({ accountId, pageSize: 1000, pageToken });
      expect(size(ListLedgerEntriesResponseSchema, page)).toBeLessThan(2 * 1024 * 1024);
      expect(page.entries.length).toBeGreaterThan(0);
      seen.push(...page.entries.map((e) => e.entryId));
      pageToken = page.nextPageToken;
      pages += 1;
    } while (pageToken !== "");
    expect(pages).toBeGreaterThan(1);
    // Every entry once, in order: the ADJUST, then the holds.
    expect(seen).toHaveLength(1 + holds);
    expect([...seen].sort((a, b) => (a < b ? -1 : 1))).toEqual(seen);
    expect(new Set(seen).size).toBe(seen.length);
    const holdsListed = await t.admin.listLedgerEntries({ accountId, pageSize: 10, kinds: [LedgerEntryKind.HOLD] });
    expect(holdsListed.entries.every((e) => e.metadata["00" + "€".repeat(MAX_METADATA_KEY_LENGTH - 2)] === "€".repeat(MAX_METADATA_VALUE_LENGTH))).toBe(true);
  });
});
