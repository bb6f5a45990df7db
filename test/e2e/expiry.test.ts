import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BucketKind, LedgerEntryKind, ReleaseReason, ReservationState } from "../../src/client/index.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { failureOf } from "../support/e2e.js";

let t: TestService;
beforeAll(async () => {
  // Other test files share the database; a large batch makes one sweep reach every due account.
  t = await startTestService({ SWEEPER_BATCH_SIZE: "10000" });
});
afterAll(async () => {
  await t.stop();
});

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

async function fund(accountId: string, amount: bigint): Promise<string> {
  const res = await t.admin.adjustCredits({ accountId, amount, reason: "expiry test funding", idempotencyKey: newKey("fund") });
  return res.bucket!.bucketId;
}

function reserve(accountId: string, amount: bigint, ttlSeconds: bigint, metadata: Record<string, string> = {}) {
  return t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount }, ttl: { seconds: ttlSeconds }, metadata });
}

async function entriesOf(accountId: string, kinds: LedgerEntryKind[] = []) {
  const res = await t.admin.listLedgerEntries({ accountId, kinds, pageSize: 1000 });
  expect(res.nextPageToken).toBe("");
  return res.entries;
}

const sum = (xs: readonly { amount: bigint }[]) => xs.reduce((s, x) => s + x.amount, 0n);

/** The first instant after the fake clock's now that falls on the given UTC month (0-11) and day at 10:00. */
function nextUtc(month: number, day: number): Date {
  const now = t.clock.now();
  for (let year = now.getUTCFullYear(); ; year++) {
    const candidate = new Date(Date.UTC(year, month, day, 10, 0, 0, 0));
    if (candidate.getTime() > now.getTime()) return candidate;
  }
}

describe("expired holds", () => {
  it("the sweeper releases an expired hold of an untouched account: RELEASE entries by system, reservation EXPIRED", async () => {
    const accountId = newAccountId();
    await fund(accountId, 200n);
    const metadata = { model: "video-1", job_id: "job-sweep" };
    const r = await reserve(accountId, 50n, 60n, metadata);
    const id = r.reservation!.reservationId;

    // Not yet due: one millisecond before expiry the sweeper leaves it alone.
    t.clock.advance(60_000 - 1);
    await t.service.sweep();
    expect(await entriesOf(accountId, [LedgerEntryKind.RELEASE])).toEqual([]);

    t.clock.advance(1);
    const sweptAt = t.clock.now();
    await t.service.sweep();

    // Read the ledger before anything touches the account, so the sweeper alone did it.
    const releases = (await entriesOf(accountId, [LedgerEntryKind.RELEASE])).filter((e) => e.reservationId === id);
    expect(sum(releases)).toBe(50n);
    for (const e of releases) {
      expect(e.caller).toBe("system");
      expect(e.idempotencyKey).toBe("");
      expect(e.metadata).toEqual(metadata);
    }
    expect(await t.service.store.reconcile(accountId)).toEqual([]);

    const read = (await t.credit.getReservation({ reservationId: id })).reservation!;
    expect(read.state).toBe(ReservationState.EXPIRED);
    expect(read.releasedAmount).toBe(50n);
    expect(read.capturedAmount).toBe(0n);
    expect(timestampDate(read.settledAt!).getTime()).toBe(sweptAt.getTime());
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(200n);
    expect(balance?.held).toBe(0n);
  });

  it("an expired hold is released lazily when the account is read: GetBalance shows the credits back", async () => {
    const accountId = newAccountId();
    await fund(accountId, 200n);
    const r = await reserve(accountId, 70n, 60n);
    const id = r.reservation!.reservationId;
    expect(r.balance?.available).toBe(130n);

    t.clock.advance(2 * MINUTE);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(200n);
    expect(balance?.held).toBe(0n);

    const read = (await t.credit.getReservation({ reservationId: id })).reservation!;
    expect(read.state).toBe(ReservationState.EXPIRED);
    expect(read.releasedAmount).toBe(70n);
    const releases = (await entriesOf(accountId, [LedgerEntryKind.RELEASE])).filter((e) => e.reservationId === id);
    expect(sum(releases)).toBe(70n);
    expect(releases.every((e) => e.caller === "system")).toBe(true);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("an expired hold is shown EXPIRED by GetReservation before anything else touches the account", async () => {
    const accountId = newAccountId();
    await fund(accountId, 200n);
    const r = await reserve(accountId, 30n, 60n);
    const id = r.reservation!.reservationId;

    t.clock.advance(2 * MINUTE);
    const read = (await t.credit.getReservation({ reservationId: id })).reservation!;
    expect(read.state).toBe(ReservationState.EXPIRED);
    expect(read.releasedAmount).toBe(30n);
    // The release was applied, not only displayed: the ledger and stored state agree on it.
    expect(sum(await entriesOf(accountId, [LedgerEntryKind.RELEASE]))).toBe(30n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(200n);
  });

  it("a new Reserve can use the credits of an overdue hold before any sweep", async () => {
    const accountId = newAccountId();
    await fund(accountId, 100n);
    const first = await reserve(accountId, 100n, 60n);
    expect(first.balance?.available).toBe(0n);

    t.clock.advance(60_000);
    const second = await reserve(accountId, 100n, 60n);
    expect(second.reservation?.state).toBe(ReservationState.HELD);
    expect(second.balance?.available).toBe(0n);
    expect(second.balance?.held).toBe(100n);
    expect((await t.credit.getReservation({ reservationId: first.reservation!.reservationId })).reservation?.state).toBe(ReservationState.EXPIRED);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("Commit after expiry fails RESERVATION_EXPIRED and captures nothing", async () => {
    const accountId = newAccountId();
    await fund(accountId, 200n);
    const r = await reserve(accountId, 40n, 60n);
    const id = r.reservation!.reservationId;

    t.clock.advance(61_000);
    const failure = await failureOf(t.credit.commit({ reservationId: id, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 40n } }));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("RESERVATION_EXPIRED");
    expect(failure.metadata["reservation_id"]).toBe(id);

    expect(await entriesOf(accountId, [LedgerEntryKind.CAPTURE])).toEqual([]);
    expect((await t.credit.getReservation({ reservationId: id })).reservation?.state).toBe(ReservationState.EXPIRED);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(200n);
    expect(balance?.held).toBe(0n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("ExtendReservation after expiry fails RESERVATION_EXPIRED; Release after expiry returns the EXPIRED hold", async () => {
    const accountId = newAccountId();
    await fund(accountId, 200n);
    const r = await reserve(accountId, 40n, 60n);
    const id = r.reservation!.reservationId;

    t.clock.advance(61_000);
    const failure = await failureOf(t.credit.extendReservation({ reservationId: id, idempotencyKey: newKey("ext"), ttl: { seconds: 600n } }));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("RESERVATION_EXPIRED");

    const rel = await t.credit.release({ reservationId: id, idempotencyKey: newKey("release"), reason: ReleaseReason.INTERRUPTED });
    expect(rel.reservation?.state).toBe(ReservationState.EXPIRED);
    expect(rel.balance?.available).toBe(200n);
    expect(sum(await entriesOf(accountId, [LedgerEntryKind.RELEASE]))).toBe(40n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});

describe("top-up expiry", () => {
  it("a top-up pack expires exactly 2 calendar months after purchase (mid-month)", async () => {
    t.clock.set(nextUtc((t.clock.now().getUTCMonth() + 1) % 12, 15));
    const bought = t.clock.now();
    const accountId = newAccountId();
    const res = await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    expect(res.bucket?.kind).toBe(BucketKind.TOP_UP);
    expect(timestampDate(res.bucket!.validFrom!).getTime()).toBe(bought.getTime());
    const expected = new Date(Date.UTC(bought.getUTCFullYear(), bought.getUTCMonth() + 2, 15, 10, 0, 0, 0));
    expect(timestampDate(res.bucket!.expiresAt!).toISOString()).toBe(expected.toISOString());
  });

  it("a top-up bought on Dec 31 expires at the end of February (month arithmetic clamps)", async () => {
    t.clock.set(nextUtc(11, 31));
    const bought = t.clock.now();
    const accountId = newAccountId();
    const res = await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    const year = bought.getUTCFullYear() + 1;
    const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
    const expected = new Date(Date.UTC(year, 1, leap ? 29 : 28, 10, 0, 0, 0));
    expect(timestampDate(res.bucket!.expiresAt!).toISOString()).toBe(expected.toISOString());
  });

  it("credits of an expired top-up cannot be reserved, even before the sweeper has run", async () => {
    const accountId = newAccountId();
    const res = await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    t.clock.set(timestampDate(res.bucket!.expiresAt!));
    const failure = await failureOf(reserve(accountId, 1n, 60n));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("INSUFFICIENT_CREDITS");
    expect(failure.metadata["available"]).toBe("0");
    // The failed Reserve still applied what had fallen due: the credits are expired in the ledger.
    expect(sum(await entriesOf(accountId, [LedgerEntryKind.EXPIRE]))).toBe(500n);
    expect(await entriesOf(accountId, [LedgerEntryKind.HOLD])).toEqual([]);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a top-up's credits are usable until its expiry instant and the sweeper expires them at it", async () => {
    const accountId = newAccountId();
    const res = await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    const expiresAt = timestampDate(res.bucket!.expiresAt!);

    t.clock.set(new Date(expiresAt.getTime() - 1));
    await t.service.sweep();
    expect(await entriesOf(accountId, [LedgerEntryKind.EXPIRE])).toEqual([]);
    expect((await t.credit.getBalance({ accountId })).balance?.available).toBe(500n);

    t.clock.set(expiresAt);
    await t.service.sweep();
    const expired = await entriesOf(accountId, [LedgerEntryKind.EXPIRE]);
    expect(expired.map((e) => [e.bucketId, e.amount, e.caller, e.reservationId])).toEqual([[res.bucket!.bucketId, 500n, "system", ""]]);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(0n);
    expect(balance?.buckets).toEqual([]);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  /**
   * A custom pack valid 1 month and an ADJUSTMENT of 100 that never expires. The hold of 300 is
   * taken from the top-up (consumed first) five minutes before the top-up expires and lives an hour.
   */
  async function holdAcrossTopUpExpiry() {
    const accountId = newAccountId();
    const topUp = await t.credit.purchaseTopUp({
      accountId,
      pack: { case: "customPack", value: { credits: 500n, price: { currencyCode: "USD", amountMinor: 450n }, validityMonths: 1 } },
      paymentReference: newKey("pay"),
    });
    const topUpId = topUp.bucket!.bucketId;
    const adjustmentId = await fund(accountId, 100n);
    const topUpExpiry = timestampDate(topUp.bucket!.expiresAt!);
    t.clock.set(new Date(topUpExpiry.getTime() - 5 * MINUTE));

    const r = await reserve(accountId, 300n, 3600n, { job_id: "job-long" });
    expect(r.balance?.buckets.find((b) => b.bucketId === topUpId)?.held).toBe(300n);
    expect(r.balance?.available).toBe(300n);

    t.clock.advance(10 * MINUTE); // the top-up has expired, the hold has not
    const { balance } = await t.credit.getBalance({ accountId });
    return { accountId, topUpId, adjustmentId, reservationId: r.reservation!.reservationId, balance: balance! };
  }

  it("after a held top-up expires, available excludes it; releasing the hold writes RELEASE then EXPIRE and available stays the same", async () => {
    const { accountId, topUpId, adjustmentId, reservationId, balance } = await holdAcrossTopUpExpiry();
    expect(balance.available).toBe(100n);
    expect(balance.held).toBe(300n);
    expect(balance.buckets.map((b) => b.bucketId)).toEqual([adjustmentId]);
    // The top-up's 200 free credits expired at once; the 300 held ones are still on the hold.
    const freeExpired = (await entriesOf(accountId, [LedgerEntryKind.EXPIRE])).filter((e) => e.bucketId === topUpId);
    expect(freeExpired.map((e) => [e.amount, e.reservationId])).toEqual([[200n, ""]]);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);

    const lastBefore = (await entriesOf(accountId)).at(-1)!.entryId;
    const rel = await t.credit.release({ reservationId, idempotencyKey: newKey("release"), reason: ReleaseReason.GENERATION_FAILED });
    expect(rel.reservation?.state).toBe(ReservationState.RELEASED);
    expect(rel.reservation?.releasedAmount).toBe(300n);
    expect(rel.balance?.available).toBe(100n);
    expect(rel.balance?.held).toBe(0n);

    const newEntries = (await entriesOf(accountId)).filter((e) => e.entryId > lastBefore);
    expect(newEntries.map((e) => [e.kind, e.bucketId, e.amount, e.reservationId])).toEqual([
      [LedgerEntryKind.RELEASE, topUpId, 300n, reservationId],
      [LedgerEntryKind.EXPIRE, topUpId, 300n, reservationId],
    ]);
    expect(newEntries.every((e) => e.metadata["job_id"] === "job-long")).toBe(true);
    const after = await t.credit.getBalance({ accountId });
    expect(after.balance?.available).toBe(100n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a commit after the held top-up expired captures from it; the unspent rest expires at once", async () => {
    const { accountId, topUpId, reservationId, balance } = await holdAcrossTopUpExpiry();
    expect(balance.available).toBe(100n);
    const lastBefore = (await entriesOf(accountId)).at(-1)!.entryId;

    const c = await t.credit.commit({ reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 120n } });
    expect(c.reservation?.state).toBe(ReservationState.COMMITTED);
    expect(c.reservation?.capturedAmount).toBe(120n);
    expect(c.reservation?.releasedAmount).toBe(180n);
    expect(c.balance?.available).toBe(100n);
    expect(c.balance?.held).toBe(0n);

    const newEntries = (await entriesOf(accountId)).filter((e) => e.entryId > lastBefore);
    expect(newEntries.map((e) => [e.kind, e.bucketId, e.amount])).toEqual([
      [LedgerEntryKind.CAPTURE, topUpId, 120n],
      [LedgerEntryKind.RELEASE, topUpId, 180n],
      [LedgerEntryKind.EXPIRE, topUpId, 180n],
    ]);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a hold outliving its expired top-up is released by the sweeper and its credits expire at once", async () => {
    const { accountId, topUpId, reservationId } = await holdAcrossTopUpExpiry();
    t.clock.advance(DAY);
    await t.service.sweep();
    const forHold = (await entriesOf(accountId)).filter((e) => e.reservationId === reservationId && e.kind !== LedgerEntryKind.HOLD);
    expect(forHold.map((e) => [e.kind, e.bucketId, e.amount, e.caller])).toEqual([
      [LedgerEntryKind.RELEASE, topUpId, 300n, "system"],
      [LedgerEntryKind.EXPIRE, topUpId, 300n, "system"],
    ]);
    expect((await t.credit.getReservation({ reservationId })).reservation?.state).toBe(ReservationState.EXPIRED);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(100n);
    expect(balance?.held).toBe(0n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});
