import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LedgerEntryKind, ReleaseReason, ReservationState } from "../../src/client/index.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { failureOf } from "../support/e2e.js";

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t.stop();
});

async function fund(accountId: string, amount: bigint): Promise<void> {
  await t.admin.adjustCredits({ accountId, amount, reason: "holds test funding", idempotencyKey: newKey("fund") });
}

function reserve(accountId: string, amount: bigint, extra: { ttlSeconds?: bigint; metadata?: Record<string, string>; key?: string } = {}) {
  return t.credit.reserve({
    accountId,
    idempotencyKey: extra.key ?? newKey("res"),
    cost: { case: "amount", value: amount },
    ttl: extra.ttlSeconds === undefined ? undefined : { seconds: extra.ttlSeconds },
    metadata: extra.metadata ?? {},
  });
}

function commit(reservationId: string, amount: bigint, key = newKey("commit")) {
  return t.credit.commit({ reservationId, idempotencyKey: key, actual: { case: "amount", value: amount } });
}

function release(reservationId: string, key = newKey("release"), reason = ReleaseReason.GENERATION_FAILED, detail = "") {
  return t.credit.release({ reservationId, idempotencyKey: key, reason, detail });
}

async function entriesOf(accountId: string, kinds: LedgerEntryKind[] = []) {
  const res = await t.admin.listLedgerEntries({ accountId, kinds, pageSize: 1000 });
  expect(res.nextPageToken).toBe("");
  return res.entries;
}

const sum = (xs: readonly { amount: bigint }[]) => xs.reduce((s, x) => s + x.amount, 0n);

describe("Commit", () => {
  it("commit below the hold captures the actual cost and returns the rest", async () => {
    const accountId = newAccountId();
    await fund(accountId, 500n);
    const r = await reserve(accountId, 120n);
    expect(r.balance?.available).toBe(380n);
    expect(r.balance?.held).toBe(120n);

    const c = await commit(r.reservation!.reservationId, 100n);
    expect(c.reservation?.state).toBe(ReservationState.COMMITTED);
    expect(c.reservation?.heldAmount).toBe(120n);
    expect(c.reservation?.capturedAmount).toBe(100n);
    expect(c.reservation?.releasedAmount).toBe(20n);
    expect(c.reservation?.settledAt).toBeDefined();
    expect(c.balance?.available).toBe(400n);
    expect(c.balance?.held).toBe(0n);

    const id = r.reservation!.reservationId;
    const mine = (await entriesOf(accountId)).filter((e) => e.reservationId === id);
    expect(sum(mine.filter((e) => e.kind === LedgerEntryKind.HOLD))).toBe(120n);
    expect(sum(mine.filter((e) => e.kind === LedgerEntryKind.CAPTURE))).toBe(100n);
    expect(sum(mine.filter((e) => e.kind === LedgerEntryKind.RELEASE))).toBe(20n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("commit above the hold draws the extra from available credits", async () => {
    const accountId = newAccountId();
    await fund(accountId, 500n);
    const r = await reserve(accountId, 100n);
    const c = await commit(r.reservation!.reservationId, 150n);
    expect(c.reservation?.state).toBe(ReservationState.COMMITTED);
    expect(c.reservation?.heldAmount).toBe(100n);
    expect(c.reservation?.capturedAmount).toBe(150n);
    expect(c.reservation?.releasedAmount).toBe(0n);
    expect(c.balance?.available).toBe(350n);
    expect(c.balance?.held).toBe(0n);
    const captures = (await entriesOf(accountId, [LedgerEntryKind.CAPTURE])).filter((e) => e.reservationId === r.reservation!.reservationId);
    expect(sum(captures)).toBe(150n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("commit above the hold without enough available fails INSUFFICIENT_CREDITS and the hold stays HELD", async () => {
    const accountId = newAccountId();
    await fund(accountId, 200n);
    const r = await reserve(accountId, 150n);
    const id = r.reservation!.reservationId;
    const entriesBefore = await entriesOf(accountId);
    const key = newKey("commit");

    const failure = await failureOf(commit(id, 260n, key));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("INSUFFICIENT_CREDITS");
    expect(failure.metadata["available"]).toBe("50");
    expect(failure.metadata["requested"]).toBe("110");

    const after = await t.credit.getReservation({ reservationId: id });
    expect(after.reservation?.state).toBe(ReservationState.HELD);
    expect(after.reservation?.capturedAmount).toBe(0n);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(50n);
    expect(balance?.held).toBe(150n);
    expect(await entriesOf(accountId)).toEqual(entriesBefore);

    // The failed call left no record: once credits arrive, a retry with the same key settles the hold.
    await fund(accountId, 100n);
    const retried = await commit(id, 260n, key);
    expect(retried.reservation?.state).toBe(ReservationState.COMMITTED);
    expect(retried.reservation?.capturedAmount).toBe(260n);
    expect(retried.balance?.available).toBe(40n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("commit of 0 settles the hold and returns every held credit", async () => {
    const accountId = newAccountId();
    await fund(accountId, 300n);
    const r = await reserve(accountId, 80n);
    const c = await commit(r.reservation!.reservationId, 0n);
    expect(c.reservation?.state).toBe(ReservationState.COMMITTED);
    expect(c.reservation?.capturedAmount).toBe(0n);
    expect(c.reservation?.releasedAmount).toBe(80n);
    expect(c.balance?.available).toBe(300n);
    expect(c.balance?.held).toBe(0n);
    expect(await entriesOf(accountId, [LedgerEntryKind.CAPTURE])).toEqual([]);
    expect(sum(await entriesOf(accountId, [LedgerEntryKind.RELEASE]))).toBe(80n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});

describe("Release", () => {
  it("release returns every held credit and records the reason", async () => {
    const accountId = newAccountId();
    await fund(accountId, 400n);
    const r = await reserve(accountId, 90n);
    expect(r.balance?.available).toBe(310n);
    const rel = await release(r.reservation!.reservationId, newKey("release"), ReleaseReason.CANCELLED, "user pressed stop");
    expect(rel.reservation?.state).toBe(ReservationState.RELEASED);
    expect(rel.reservation?.releasedAmount).toBe(90n);
    expect(rel.reservation?.capturedAmount).toBe(0n);
    expect(rel.reservation?.releaseReason).toBe(ReleaseReason.CANCELLED);
    expect(rel.reservation?.releaseDetail).toBe("user pressed stop");
    expect(rel.reservation?.settledAt).toBeDefined();
    expect(rel.balance?.available).toBe(400n);
    expect(rel.balance?.held).toBe(0n);
    expect(sum(await entriesOf(accountId, [LedgerEntryKind.RELEASE]))).toBe(90n);
    expect(await entriesOf(accountId, [LedgerEntryKind.CAPTURE])).toEqual([]);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});

describe("settled holds", () => {
  it("repeating the same commit with another key returns the original result and moves nothing", async () => {
    const accountId = newAccountId();
    await fund(accountId, 500n);
    const r = await reserve(accountId, 100n);
    const id = r.reservation!.reservationId;
    const firstKey = newKey("commit");
    const first = await commit(id, 70n, firstKey);
    const entriesAfterFirst = await entriesOf(accountId);

    const again = await commit(id, 70n, newKey("commit"));
    expect(again.reservation).toEqual(first.reservation);
    expect(again.balance?.available).toBe(430n);
    expect(await entriesOf(accountId)).toEqual(entriesAfterFirst);

    // The first key replays the original response.
    const replay = await commit(id, 70n, firstKey);
    expect(replay).toEqual(first);
    expect(await entriesOf(accountId)).toEqual(entriesAfterFirst);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a commit with a different amount after a commit fails RESERVATION_NOT_HELD", async () => {
    const accountId = newAccountId();
    await fund(accountId, 500n);
    const r = await reserve(accountId, 100n);
    const id = r.reservation!.reservationId;
    await commit(id, 70n);
    const before = await entriesOf(accountId);
    for (const amount of [0n, 69n, 71n, 100n]) {
      const failure = await failureOf(commit(id, amount));
      expect(failure.code).toBe(Code.FailedPrecondition);
      expect(failure.reason).toBe("RESERVATION_NOT_HELD");
      expect(failure.metadata["state"]).toBe("COMMITTED");
    }
    expect(await entriesOf(accountId)).toEqual(before);
    expect((await t.credit.getReservation({ reservationId: id })).reservation?.capturedAmount).toBe(70n);
  });

  it("commit after release fails RESERVATION_NOT_HELD and spends nothing", async () => {
    const accountId = newAccountId();
    await fund(accountId, 500n);
    const r = await reserve(accountId, 100n);
    const id = r.reservation!.reservationId;
    await release(id);
    const failure = await failureOf(commit(id, 50n));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("RESERVATION_NOT_HELD");
    expect(failure.metadata["state"]).toBe("RELEASED");
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(500n);
    expect(await entriesOf(accountId, [LedgerEntryKind.CAPTURE])).toEqual([]);
    expect((await t.credit.getReservation({ reservationId: id })).reservation?.state).toBe(ReservationState.RELEASED);
  });

  it("release after commit fails RESERVATION_NOT_HELD and returns nothing", async () => {
    const accountId = newAccountId();
    await fund(accountId, 500n);
    const r = await reserve(accountId, 100n);
    const id = r.reservation!.reservationId;
    await commit(id, 60n);
    const before = await entriesOf(accountId);
    const failure = await failureOf(release(id));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("RESERVATION_NOT_HELD");
    expect(failure.metadata["state"]).toBe("COMMITTED");
    expect(await entriesOf(accountId)).toEqual(before);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(440n);
  });

  it("releasing a released hold again with another key returns the original result", async () => {
    const accountId = newAccountId();
    await fund(accountId, 500n);
    const r = await reserve(accountId, 100n);
    const id = r.reservation!.reservationId;
    const first = await release(id, newKey("release"), ReleaseReason.INTERRUPTED, "worker lost");
    const before = await entriesOf(accountId);
    const again = await release(id, newKey("release"), ReleaseReason.INTERRUPTED, "worker lost");
    expect(again.reservation).toEqual(first.reservation);
    expect(again.balance?.available).toBe(500n);
    expect(await entriesOf(accountId)).toEqual(before);
  });

  it("the same idempotency key with a different request fails IDEMPOTENCY_KEY_REUSED", async () => {
    const accountId = newAccountId();
    await fund(accountId, 500n);
    const r = await reserve(accountId, 100n);
    const id = r.reservation!.reservationId;
    const key = newKey("commit");
    const first = await commit(id, 40n, key);
    const replay = await commit(id, 40n, key);
    expect(replay).toEqual(first);
    const failure = await failureOf(commit(id, 41n, key));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe("IDEMPOTENCY_KEY_REUSED");
  });
});

describe("TTL and ExtendReservation", () => {
  it("a hold without a ttl expires after the default TTL", async () => {
    const accountId = newAccountId();
    await fund(accountId, 100n);
    const r = await reserve(accountId, 10n);
    const created = timestampDate(r.reservation!.createdAt!);
    const expires = timestampDate(r.reservation!.expiresAt!);
    expect(created.getTime()).toBe(t.clock.now().getTime());
    expect(expires.getTime() - created.getTime()).toBe(t.config.HOLD_DEFAULT_TTL_SECONDS * 1000);
    expect(t.config.HOLD_DEFAULT_TTL_SECONDS).toBe(15 * 60);
  });

  it("a ttl of exactly the maximum is accepted; one second more is INVALID_ARGUMENT and changes nothing", async () => {
    const accountId = newAccountId();
    await fund(accountId, 100n);
    const max = BigInt(t.config.HOLD_MAX_TTL_SECONDS);
    expect(max).toBe(24n * 60n * 60n);

    const ok = await reserve(accountId, 10n, { ttlSeconds: max });
    expect(timestampDate(ok.reservation!.expiresAt!).getTime()).toBe(t.clock.now().getTime() + Number(max) * 1000);

    const failure = await failureOf(reserve(accountId, 10n, { ttlSeconds: max + 1n }));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe("INVALID_FIELD");
    expect(failure.metadata["field"]).toBe("ttl");
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(90n);
    expect(balance?.held).toBe(10n);

    const extendFailure = await failureOf(
      t.credit.extendReservation({ reservationId: ok.reservation!.reservationId, idempotencyKey: newKey("ext"), ttl: { seconds: max + 1n } }),
    );
    expect(extendFailure.code).toBe(Code.InvalidArgument);
    expect(extendFailure.reason).toBe("INVALID_FIELD");
  });

  it("ExtendReservation moves expires_at to now + ttl and never earlier", async () => {
    const accountId = newAccountId();
    await fund(accountId, 100n);
    const r = await reserve(accountId, 10n, { ttlSeconds: 60n });
    const id = r.reservation!.reservationId;
    t.clock.advance(30_000);
    const extended = await t.credit.extendReservation({ reservationId: id, idempotencyKey: newKey("ext"), ttl: { seconds: 600n } });
    expect(timestampDate(extended.reservation!.expiresAt!).getTime()).toBe(t.clock.now().getTime() + 600_000);
    expect(extended.reservation?.state).toBe(ReservationState.HELD);

    const shorter = await t.credit.extendReservation({ reservationId: id, idempotencyKey: newKey("ext"), ttl: { seconds: 5n } });
    expect(shorter.reservation?.expiresAt).toEqual(extended.reservation?.expiresAt);
    const read = await t.credit.getReservation({ reservationId: id });
    expect(read.reservation?.expiresAt).toEqual(extended.reservation?.expiresAt);
  });

  it("an extended hold survives past its original TTL and can still be committed", async () => {
    const accountId = newAccountId();
    await fund(accountId, 100n);
    const r = await reserve(accountId, 40n, { ttlSeconds: 60n });
    const id = r.reservation!.reservationId;
    await t.credit.extendReservation({ reservationId: id, idempotencyKey: newKey("ext"), ttl: { seconds: 3600n } });
    t.clock.advance(10 * 60_000); // ten minutes: well past the original 60 s
    await t.service.sweep();

    const read = await t.credit.getReservation({ reservationId: id });
    expect(read.reservation?.state).toBe(ReservationState.HELD);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(60n);
    expect(balance?.held).toBe(40n);
    const c = await commit(id, 40n);
    expect(c.reservation?.state).toBe(ReservationState.COMMITTED);
    expect(c.balance?.available).toBe(60n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("ExtendReservation of a settled hold fails RESERVATION_NOT_HELD", async () => {
    const accountId = newAccountId();
    await fund(accountId, 100n);
    const r = await reserve(accountId, 10n);
    const id = r.reservation!.reservationId;
    await release(id);
    const failure = await failureOf(t.credit.extendReservation({ reservationId: id, idempotencyKey: newKey("ext"), ttl: { seconds: 60n } }));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("RESERVATION_NOT_HELD");
  });
});

describe("metadata and caller", () => {
  it("metadata is recorded on the reservation and on each of its ledger entries, with caller test-suite and the call's key", async () => {
    const accountId = newAccountId();
    await fund(accountId, 500n);
    const metadata = { model: "image-xl", job_id: "job-42", member_id: "member-7" };
    const reserveKey = newKey("res");
    const r = await reserve(accountId, 100n, { metadata, key: reserveKey });
    const id = r.reservation!.reservationId;
    expect(r.reservation?.metadata).toEqual(metadata);
    expect((await t.credit.getReservation({ reservationId: id })).reservation?.metadata).toEqual(metadata);

    const commitKey = newKey("commit");
    const c = await commit(id, 75n, commitKey);
    expect(c.reservation?.metadata).toEqual(metadata);

    const mine = (await entriesOf(accountId)).filter((e) => e.reservationId === id);
    expect(mine.map((e) => e.kind).sort()).toEqual([LedgerEntryKind.HOLD, LedgerEntryKind.CAPTURE, LedgerEntryKind.RELEASE].sort());
    for (const e of mine) {
      expect(e.metadata).toEqual(metadata);
      expect(e.caller).toBe("test-suite");
      expect(e.accountId).toBe(accountId);
      expect(e.idempotencyKey).toBe(e.kind === LedgerEntryKind.HOLD ? reserveKey : commitKey);
    }
  });

  it("the adjustment's entry records caller test-suite, its reason and its key", async () => {
    const accountId = newAccountId();
    const key = newKey("fund");
    await t.admin.adjustCredits({ accountId, amount: 25n, reason: "incident INC-1", idempotencyKey: key });
    const [entry, ...rest] = await entriesOf(accountId);
    expect(rest).toEqual([]);
    expect(entry?.kind).toBe(LedgerEntryKind.ADJUST);
    expect(entry?.amount).toBe(25n);
    expect(entry?.caller).toBe("test-suite");
    expect(entry?.idempotencyKey).toBe(key);
    expect(entry?.metadata["reason"]).toBe("incident INC-1");
  });
});
