import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LedgerEntryKind, ReleaseReason, ReservationState } from "../../src/client/index.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t.stop();
});

/** The gRPC code and ErrorInfo reason of a rejected call. */
function failureOf(reason: unknown): { code: Code; reason: string | undefined; metadata: Record<string, string> } {
  expect(reason).toBeInstanceOf(ConnectError);
  const err = reason as ConnectError;
  const info = err.findDetails(ErrorInfoSchema)[0];
  return { code: err.code, reason: info?.reason, metadata: info?.metadata ?? {} };
}

async function fund(accountId: string, amount: bigint): Promise<void> {
  await t.admin.adjustCredits({ accountId, amount, reason: "concurrency test funding", idempotencyKey: newKey("fund") });
}

async function entriesOf(accountId: string, kinds: LedgerEntryKind[]) {
  const res = await t.admin.listLedgerEntries({ accountId, kinds, pageSize: 1000 });
  expect(res.nextPageToken).toBe("");
  return res.entries;
}

describe("concurrent reserves on one account", () => {
  it("200 concurrent Reserve(7) on an account holding 1000: exactly 142 succeed, the rest INSUFFICIENT_CREDITS", async () => {
    const accountId = newAccountId();
    await fund(accountId, 1000n);

    const results = await Promise.allSettled(
      Array.from({ length: 200 }, () => t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 7n } })),
    );

    const succeeded = results.filter((r) => r.status === "fulfilled");
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(succeeded.length).toBe(142);
    expect(failed.length).toBe(58);
    for (const f of failed) {
      const failure = failureOf(f.reason);
      expect(failure.code).toBe(Code.FailedPrecondition);
      expect(failure.reason).toBe("INSUFFICIENT_CREDITS");
      expect(failure.metadata["requested"]).toBe("7");
      expect(BigInt(failure.metadata["available"] ?? "-1")).toBeLessThan(7n);
      expect(BigInt(failure.metadata["available"] ?? "-1")).toBeGreaterThanOrEqual(0n);
    }
    // Every successful response saw a non-negative balance, and every reservation id is distinct.
    const ids = new Set<string>();
    for (const s of succeeded) {
      expect(s.value.reservation?.state).toBe(ReservationState.HELD);
      expect(s.value.reservation?.heldAmount).toBe(7n);
      expect(s.value.balance!.available).toBeGreaterThanOrEqual(0n);
      ids.add(s.value.reservation!.reservationId);
    }
    expect(ids.size).toBe(142);

    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(1000n - 142n * 7n);
    expect(balance?.available).toBe(6n);
    expect(balance?.held).toBe(994n);
    for (const b of balance!.buckets) {
      expect(b.remaining).toBeGreaterThanOrEqual(0n);
      expect(b.held).toBeLessThanOrEqual(b.remaining);
    }

    const holds = await entriesOf(accountId, [LedgerEntryKind.HOLD]);
    expect(holds.length).toBe(142);
    expect(holds.reduce((s, e) => s + e.amount, 0n)).toBe(994n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});

describe("concurrent settlement of one hold", () => {
  it("20 concurrent Commit and 20 concurrent Release on one hold: exactly one terminal outcome", async () => {
    const accountId = newAccountId();
    await fund(accountId, 500n);
    const reserved = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 50n } });
    const reservationId = reserved.reservation!.reservationId;

    const commits = Array.from({ length: 20 }, () =>
      t.credit.commit({ reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 30n } }),
    );
    const releases = Array.from({ length: 20 }, () =>
      t.credit.release({ reservationId, idempotencyKey: newKey("release"), reason: ReleaseReason.CANCELLED }),
    );
    // Interleave the calls so neither kind gets a head start.
    const all = commits.flatMap((c, i) => [c, releases[i]!]);
    const settled = await Promise.allSettled(all);
    const commitResults = settled.filter((_, i) => i % 2 === 0);
    const releaseResults = settled.filter((_, i) => i % 2 === 1);

    const final = (await t.credit.getReservation({ reservationId })).reservation!;
    expect([ReservationState.COMMITTED, ReservationState.RELEASED]).toContain(final.state);
    const committedWon = final.state === ReservationState.COMMITTED;
    const [winners, losers] = committedWon ? [commitResults, releaseResults] : [releaseResults, commitResults];

    for (const w of winners) {
      expect(w.status).toBe("fulfilled");
      if (w.status !== "fulfilled") continue;
      const r = w.value.reservation!;
      expect(r.state).toBe(final.state);
      expect(r.capturedAmount).toBe(final.capturedAmount);
      expect(r.releasedAmount).toBe(final.releasedAmount);
      expect(r.settledAt).toEqual(final.settledAt);
    }
    for (const l of losers) {
      expect(l.status).toBe("rejected");
      if (l.status !== "rejected") continue;
      const failure = failureOf(l.reason);
      expect(failure.code).toBe(Code.FailedPrecondition);
      expect(failure.reason).toBe("RESERVATION_NOT_HELD");
    }

    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.held).toBe(0n);
    const captures = await entriesOf(accountId, [LedgerEntryKind.CAPTURE]);
    const releasesInLedger = await entriesOf(accountId, [LedgerEntryKind.RELEASE]);
    if (committedWon) {
      expect(final.capturedAmount).toBe(30n);
      expect(final.releasedAmount).toBe(20n);
      expect(balance?.available).toBe(470n);
      // One CAPTURE set of 30 and the one RELEASE set returning the 20 not spent.
      expect(captures.reduce((s, e) => s + e.amount, 0n)).toBe(30n);
      expect(releasesInLedger.reduce((s, e) => s + e.amount, 0n)).toBe(20n);
    } else {
      expect(final.capturedAmount).toBe(0n);
      expect(final.releasedAmount).toBe(50n);
      expect(balance?.available).toBe(500n);
      expect(captures).toEqual([]);
      expect(releasesInLedger.reduce((s, e) => s + e.amount, 0n)).toBe(50n);
    }
    // Exactly one call did the work: every entry of the settlement carries the same idempotency key.
    const settlementKeys = new Set([...captures, ...releasesInLedger].map((e) => e.idempotencyKey));
    expect(settlementKeys.size).toBe(1);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});
