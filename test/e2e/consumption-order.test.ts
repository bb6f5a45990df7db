import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BucketKind, LedgerEntryKind } from "../../src/client/index.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t.stop();
});

const DAY = 24 * 60 * 60 * 1000;

async function customTopUp(accountId: string, credits: bigint, validityMonths: number): Promise<string> {
  const res = await t.credit.purchaseTopUp({
    accountId,
    pack: { case: "customPack", value: { credits, price: { currencyCode: "EUR", amountMinor: credits }, validityMonths } },
    paymentReference: newKey("pay"),
  });
  expect(res.bucket?.kind).toBe(BucketKind.TOP_UP);
  return res.bucket!.bucketId;
}

async function adjustment(accountId: string, amount: bigint, expiresAt: Date | null): Promise<string> {
  const res = await t.admin.adjustCredits({
    accountId,
    amount,
    expiresAt: expiresAt ? timestampFromDate(expiresAt) : undefined,
    reason: "consumption order test",
    idempotencyKey: newKey("adj"),
  });
  expect(res.bucket?.kind).toBe(BucketKind.ADJUSTMENT);
  return res.bucket!.bucketId;
}

async function holdsByBucket(accountId: string, reservationId: string): Promise<Map<string, bigint>> {
  const res = await t.admin.listLedgerEntries({ accountId, kinds: [LedgerEntryKind.HOLD], pageSize: 1000 });
  const out = new Map<string, bigint>();
  for (const e of res.entries.filter((x) => x.reservationId === reservationId)) out.set(e.bucketId, (out.get(e.bucketId) ?? 0n) + e.amount);
  return out;
}

describe("consumption order", () => {
  it("a hold takes top-ups earliest expiry first, then adjustments earliest expiry first, never-expiring last", async () => {
    const accountId = newAccountId();
    const now = t.clock.now();
    // Bought in an order that differs from their expiry order.
    const topUp3m = await customTopUp(accountId, 100n, 3);
    const topUp1m = await customTopUp(accountId, 100n, 1);
    const topUp2m = await customTopUp(accountId, 100n, 2);
    const adjNever = await adjustment(accountId, 100n, null);
    const adj20d = await adjustment(accountId, 100n, new Date(now.getTime() + 20 * DAY));
    // Expires before every top-up, yet comes after them: kind decides before expiry.
    const adj10d = await adjustment(accountId, 100n, new Date(now.getTime() + 10 * DAY));
    const order = [topUp1m, topUp2m, topUp3m, adj10d, adj20d, adjNever];

    const before = await t.credit.getBalance({ accountId });
    expect(before.balance?.buckets.map((b) => b.bucketId)).toEqual(order);
    expect(before.balance?.available).toBe(600n);

    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 420n } });
    const buckets = r.balance!.buckets;
    expect(buckets.map((b) => b.bucketId)).toEqual(order);
    expect(buckets.map((b) => b.held)).toEqual([100n, 100n, 100n, 100n, 20n, 0n]);
    expect(buckets.map((b) => b.remaining)).toEqual([100n, 100n, 100n, 100n, 100n, 100n]);
    expect(r.balance?.available).toBe(180n);
    expect(r.balance?.held).toBe(420n);

    const holds = await holdsByBucket(accountId, r.reservation!.reservationId);
    expect(Object.fromEntries(holds)).toEqual({
      [topUp1m]: 100n,
      [topUp2m]: 100n,
      [topUp3m]: 100n,
      [adj10d]: 100n,
      [adj20d]: 20n,
    });

    // Committing less than held spends in the same order and returns the rest to adj20d.
    const c = await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 410n } });
    expect(c.balance?.buckets.map((b) => [b.bucketId, b.remaining, b.held])).toEqual([
      [adj20d, 90n, 0n],
      [adjNever, 100n, 0n],
    ]);
    expect(c.balance?.available).toBe(190n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("top-ups with the same expiry are taken oldest first", async () => {
    const accountId = newAccountId();
    const start = t.clock.now();
    const at = (months: number) =>
      new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + months, 15, 12, 0, 0, 0));
    // Bought a month apart with validity 3, 2 and 1 months: all three expire on the same instant.
    t.clock.set(at(1));
    const oldest = await customTopUp(accountId, 100n, 3);
    t.clock.set(at(2));
    const middle = await customTopUp(accountId, 100n, 2);
    t.clock.set(at(3));
    const newest = await customTopUp(accountId, 100n, 1);

    const before = (await t.credit.getBalance({ accountId })).balance!;
    const expiries = new Set(before.buckets.map((b) => timestampDate(b.expiresAt!).getTime()));
    expect(expiries.size).toBe(1);

    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 250n } });
    expect(r.balance?.buckets.map((b) => [b.bucketId, b.held])).toEqual([
      [oldest, 100n],
      [middle, 100n],
      [newest, 50n],
    ]);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a commit above the hold draws the extra in consumption order", async () => {
    const accountId = newAccountId();
    const topUp = await customTopUp(accountId, 100n, 1);
    const adj = await adjustment(accountId, 100n, null);
    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 50n } });
    expect(r.balance?.buckets.map((b) => [b.bucketId, b.held])).toEqual([
      [topUp, 50n],
      [adj, 0n],
    ]);

    const c = await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 180n } });
    expect(c.reservation?.capturedAmount).toBe(180n);
    // The extra 130: the top-up's free 50 first, then 80 of the adjustment.
    expect(c.balance?.buckets.map((b) => [b.bucketId, b.remaining, b.held])).toEqual([[adj, 20n, 0n]]);
    const captures = await t.admin.listLedgerEntries({ accountId, kinds: [LedgerEntryKind.CAPTURE] });
    const byBucket = new Map<string, bigint>();
    for (const e of captures.entries) byBucket.set(e.bucketId, (byBucket.get(e.bucketId) ?? 0n) + e.amount);
    expect(Object.fromEntries(byBucket)).toEqual({ [topUp]: 100n, [adj]: 80n });
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});
