import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReleaseReason, ReservationState } from "../../src/client/index.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { failureOf } from "../support/e2e.js";

/**
 * The per-account change sequence through the real server: GetBalance's `sequence` is the
 * number of the account's latest change record; every committed change takes exactly one more,
 * and nothing that changes nothing (a refusal, a replay) takes one.
 */

let t: TestService;
beforeAll(async () => {
  // Other test files share the database; a large batch makes one sweep reach every due account.
  t = await startTestService({ SWEEPER_BATCH_SIZE: "10000" });
});
afterAll(async () => {
  await t.stop();
});

async function sequenceOf(accountId: string): Promise<bigint> {
  return (await t.credit.getBalance({ accountId })).sequence;
}

function fund(accountId: string, amount: bigint) {
  return t.admin.adjustCredits({ accountId, amount, reason: "sequence test funding", idempotencyKey: newKey("fund") });
}

function reserve(accountId: string, amount: bigint, key = newKey("res"), ttlSeconds = 60n) {
  return t.credit.reserve({ accountId, idempotencyKey: key, cost: { case: "amount", value: amount }, ttl: { seconds: ttlSeconds } });
}

/** Runs a call and checks that the account's sequence moved by exactly `by`. */
async function moves<T>(accountId: string, by: bigint, call: () => Promise<T>): Promise<T> {
  const before = await sequenceOf(accountId);
  const result = await call();
  expect(await sequenceOf(accountId)).toBe(before + by);
  return result;
}

describe("GetBalance's sequence", () => {
  it("is 1 after a new account's first grant, and each successful mutation adds exactly 1", async () => {
    const accountId = newAccountId();
    expect((await failureOf(t.credit.getBalance({ accountId }))).code).toBe(Code.NotFound);
    await fund(accountId, 1000n);
    expect(await sequenceOf(accountId)).toBe(1n);

    const held = await moves(accountId, 1n, () => reserve(accountId, 100n));
    const id = held.reservation!.reservationId;
    await moves(accountId, 1n, () => t.credit.extendReservation({ reservationId: id, idempotencyKey: newKey("ext"), ttl: { seconds: 600n } }));
    await moves(accountId, 1n, () => t.credit.commit({ reservationId: id, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 80n } }));
    const other = await moves(accountId, 1n, () => reserve(accountId, 50n));
    await moves(accountId, 1n, () =>
      t.credit.release({ reservationId: other.reservation!.reservationId, idempotencyKey: newKey("rel"), reason: ReleaseReason.GENERATION_FAILED, detail: "" }),
    );
    await moves(accountId, 1n, () => t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") }));
    await moves(accountId, 1n, () => fund(accountId, 5n));
    await moves(accountId, 1n, () => t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") }));
    await moves(accountId, 1n, () => t.admin.advanceTestClock({ accountId, by: { seconds: 60n, nanos: 0 }, idempotencyKey: newKey("clock") }));
    expect(await sequenceOf(accountId)).toBe(10n);
  });

  it("a refused call (insufficient credits, bad input, unknown reservation) and an idempotent replay add 0", async () => {
    const accountId = newAccountId();
    await fund(accountId, 100n);
    const key = newKey("res");
    const first = await moves(accountId, 1n, () => reserve(accountId, 40n, key));
    const replay = await moves(accountId, 0n, () => reserve(accountId, 40n, key));
    expect(replay.reservation?.reservationId).toBe(first.reservation?.reservationId);

    expect((await moves(accountId, 0n, () => failureOf(reserve(accountId, 1000n)))).reason).toBe("INSUFFICIENT_CREDITS");
    expect((await moves(accountId, 0n, () => failureOf(reserve(accountId, -5n)))).code).toBe(Code.InvalidArgument);
    const id = first.reservation!.reservationId;
    await moves(accountId, 1n, () => t.credit.commit({ reservationId: id, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 40n } }));
    // A second settlement of a settled hold is refused and changes nothing.
    const again = await moves(accountId, 0n, () =>
      failureOf(t.credit.release({ reservationId: id, idempotencyKey: newKey("rel"), reason: ReleaseReason.GENERATION_FAILED, detail: "" })),
    );
    expect(again.code).toBe(Code.FailedPrecondition);
    expect(await sequenceOf(accountId)).toBe(3n);
  });

  it("a hold timeout applied by the sweeper adds 1, and so does a top-up expiry", async () => {
    const accountId = newAccountId();
    await fund(accountId, 200n);
    const r = await reserve(accountId, 50n, newKey("res"), 60n);
    expect(await sequenceOf(accountId)).toBe(2n);
    t.clock.advance(60_000);
    await t.service.sweep();
    const read = await t.credit.getReservation({ reservationId: r.reservation!.reservationId });
    expect(read.reservation?.state).toBe(ReservationState.EXPIRED);
    expect(await sequenceOf(accountId)).toBe(3n);
    // Nothing more is due: another sweep adds nothing.
    await t.service.sweep();
    expect(await sequenceOf(accountId)).toBe(3n);

    const bought = await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    expect(await sequenceOf(accountId)).toBe(4n);
    t.clock.set(timestampDate(bought.bucket!.expiresAt!));
    await t.service.sweep();
    expect(await sequenceOf(accountId)).toBe(5n);
  });

  it("due work found by GetBalance itself is one change record, answered with its number", async () => {
    const accountId = newAccountId();
    await fund(accountId, 200n);
    await reserve(accountId, 50n, newKey("res"), 60n);
    expect(await sequenceOf(accountId)).toBe(2n);
    t.clock.advance(60_000);
    const settled = await t.credit.getBalance({ accountId });
    expect(settled.balance?.held).toBe(0n);
    expect(settled.sequence).toBe(3n);
    expect(await sequenceOf(accountId)).toBe(3n);
  });

  it("50 concurrent Reserves on one account raise it by exactly the number that succeeded", async () => {
    const accountId = newAccountId();
    await fund(accountId, 1000n);
    const results = await Promise.allSettled(Array.from({ length: 50 }, () => reserve(accountId, 30n)));
    const succeeded = results.filter((r) => r.status === "fulfilled").length;
    expect(succeeded).toBe(33); // 1000 / 30
    for (const r of results) if (r.status === "rejected") expect(String(r.reason)).toContain("failed_precondition");
    expect(await sequenceOf(accountId)).toBe(1n + BigInt(succeeded));
  });
});

describe("GetBalance's sequence without the balance cache", () => {
  let uncached: TestService;
  beforeAll(async () => {
    uncached = await startTestService({ BALANCE_CACHE_ENTRIES: "0" });
  });
  afterAll(async () => {
    await uncached.stop();
  });

  it("a read from Postgres carries the sequence the other server committed", async () => {
    const accountId = newAccountId();
    await fund(accountId, 100n);
    await reserve(accountId, 10n);
    const read = await uncached.credit.getBalance({ accountId });
    expect(read.sequence).toBe(2n);
    expect(read.balance?.held).toBe(10n);
    expect(await sequenceOf(accountId)).toBe(2n);
  });
});
