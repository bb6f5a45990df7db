import { describe, expect, it } from "vitest";
import { AccountBook } from "../../src/domain/account-book.js";
import { type AutoTopUpPolicy, type AutoTopUpSettings, autoTopUpDueAt, settleAutoTopUp } from "../../src/domain/auto-top-up.js";
import { completeAutoTopUp, failAutoTopUp, requestIfLow, setAutoTopUp, TARGET_VALIDITY_MONTHS } from "../../src/domain/auto-top-up-steps.js";
import { DEFAULT_TOP_UP_PACKS } from "../../src/domain/top-up-packs.js";
import { autoTopUpFromRow, ruleJson } from "../../src/store/auto-top-up-rows.js";
import { adjustment, at, MINUTE, T0, unwrap } from "./fixtures.js";

/**
 * The auto top-up rule applied to a book (domain/auto-top-up-steps.ts): which steps are change
 * records (they state events, so the apply stage numbers them) and which are silent, the request
 * kept for the store, the grant, and the rule's stored form read back.
 */

const POLICY: AutoTopUpPolicy = { maxFailures: 2, requestTimeoutMs: 10 * MINUTE };
const PACK = DEFAULT_TOP_UP_PACKS.find((p) => p.packId === "topup-500")!;
const byPack: AutoTopUpSettings = { thresholdCredits: 300n, size: { kind: "pack", packId: PACK.packId }, maxPerMonth: 3, enabled: true };

function funded(credits: bigint): AccountBook {
  const book = new AccountBook("acct-atu", [], []);
  adjustment(book, "b-fund", credits, null);
  return new AccountBook("acct-atu", book.allBuckets(), []);
}

describe("auto top-up on a book", () => {
  it("SetAutoTopUp on an account above the threshold states AUTO_TOP_UP_SET only; below, the request follows in the same step", () => {
    const above = funded(1_000n);
    const view = setAutoTopUp(above, byPack, PACK, T0, POLICY);
    expect(view.state).toBe("ARMED");
    expect(above.events.map((e) => e.kind)).toEqual(["AUTO_TOP_UP_SET"]);
    expect(above.changeCount).toBe(1);
    expect(above.autoTopUp?.changedRequests.size).toBe(0);

    const below = funded(100n);
    const low = setAutoTopUp(below, byPack, PACK, T0, POLICY);
    expect(low.state).toBe("REQUESTED");
    expect(low.outstanding).toMatchObject({ requestId: "atu:1:acct-atu", credits: 500n, expiresAt: at(10 * MINUTE) });
    expect(below.events.map((e) => e.kind)).toEqual(["AUTO_TOP_UP_SET", "AUTO_TOP_UP_REQUESTED"]);
    expect([...below.autoTopUp!.changedRequests]).toEqual([1]);
    expect(autoTopUpDueAt(below.autoTopUp!.rule)).toEqual(at(10 * MINUTE));
  });

  it("a second check while a request is out changes nothing", () => {
    const book = funded(100n);
    setAutoTopUp(book, byPack, PACK, T0, POLICY);
    const before = book.changeCount;
    requestIfLow(book, at(MINUTE), POLICY);
    expect(book.changeCount).toBe(before);
    expect(book.autoTopUp?.rule.epoch).toBe(1);
  });

  it("completing grants a TOP_UP bucket recording the request, re-arms, and a second completion grants nothing", () => {
    const book = funded(100n);
    setAutoTopUp(book, byPack, PACK, T0, POLICY);
    const done = unwrap(completeAutoTopUp(book, 1, "atu:1:acct-atu", "pay-1", "b-new", at(MINUTE)));
    expect(done).toMatchObject({ late: false, bucket: { id: "b-new", kind: "TOP_UP", granted: 500n }, request: { outcome: "COMPLETED", bucketId: "b-new" } });
    expect(book.entries.at(-1)?.metadata).toMatchObject({ auto_top_up_request: "atu:1:acct-atu", payment_reference: "pay-1", pack_id: "topup-500" });
    expect(book.autoTopUp?.rule).toMatchObject({ state: "ARMED", outstanding: null });
    const changes = book.changeCount;
    const again = unwrap(completeAutoTopUp(book, 1, "atu:1:acct-atu", "pay-2", "b-other", at(2 * MINUTE)));
    expect(again.bucket).toBeNull();
    expect(again.request.paymentReference).toBe("pay-1");
    expect(book.changeCount).toBe(changes);
  });

  it("a target-sized grant records no price and lasts the catalog packs' months", () => {
    const book = funded(100n);
    setAutoTopUp(book, { ...byPack, size: { kind: "target", targetCredits: 1_000n } }, null, T0, POLICY);
    expect(book.autoTopUp?.rule.outstanding?.credits).toBe(900n);
    const done = unwrap(completeAutoTopUp(book, 1, "atu:1:acct-atu", "pay-t", "b-t", T0));
    expect(done.bucket?.expiresAt).toEqual(new Date(Date.UTC(2030, TARGET_VALIDITY_MONTHS, 15, 12)));
    expect(book.entries.at(-1)?.metadata).not.toHaveProperty("price");
  });

  it("an answer naming no request of the account is AUTO_TOP_UP_REQUEST_NOT_FOUND", () => {
    const book = funded(100n);
    expect(completeAutoTopUp(book, 1, "atu:1:acct-atu", "p", "b", T0)).toMatchObject({ ok: false, failure: { reason: "AUTO_TOP_UP_REQUEST_NOT_FOUND" } });
    setAutoTopUp(book, byPack, PACK, T0, POLICY);
    expect(failAutoTopUp(book, 2, "atu:2:acct-atu", "x", T0, POLICY)).toMatchObject({ ok: false, failure: { reason: "AUTO_TOP_UP_REQUEST_NOT_FOUND" } });
  });

  it("expiry and a new month are silent (no event), but written back; the check after them asks again", () => {
    const book = funded(100n);
    setAutoTopUp(book, byPack, PACK, T0, POLICY);
    const fresh = new AccountBook("acct-atu", book.allBuckets(), [], null, 0, 1000, 1n, undefined, null, null, autoTopUpFromRow({ auto_top_up: JSON.parse(ruleJson(book.autoTopUp)!) }));
    expect(settleAutoTopUp(fresh.autoTopUp!, at(9 * MINUTE))).toBe(false);
    expect(settleAutoTopUp(fresh.autoTopUp!, at(10 * MINUTE))).toBe(true);
    expect(fresh.changeCount).toBe(0);
    expect(fresh.autoTopUp).toMatchObject({ changed: true, rule: { state: "ARMED", outstanding: null } });
    expect(fresh.autoTopUp?.requests.get(1)?.outcome).toBe("EXPIRED");
    requestIfLow(fresh, at(10 * MINUTE), POLICY);
    expect(fresh.events.map((e) => e.kind)).toEqual(["AUTO_TOP_UP_REQUESTED"]);
    expect(fresh.autoTopUp?.rule.outstanding?.requestId).toBe("atu:2:acct-atu");
    // The expired request, completed late, still grants and leaves the one out as it is.
    const late = unwrap(completeAutoTopUp(fresh, 1, "atu:1:acct-atu", "pay-late", "b-late", at(11 * MINUTE)));
    expect(late.late).toBe(true);
    expect(fresh.autoTopUp?.rule.outstanding?.requestId).toBe("atu:2:acct-atu");
  });

  it("the stored form reads back as the same rule, requests and pack", () => {
    const book = funded(100n);
    setAutoTopUp(book, byPack, PACK, T0, POLICY);
    unwrap(failAutoTopUp(book, 1, "atu:1:acct-atu", "card declined", at(MINUTE), POLICY));
    const back = autoTopUpFromRow({ auto_top_up: JSON.parse(ruleJson(book.autoTopUp)!), auto_top_up_requests: [] });
    expect(back?.rule).toEqual(book.autoTopUp?.rule);
    expect(back?.pack).toEqual(PACK);
    expect(autoTopUpFromRow({ auto_top_up: null })).toBeNull();
    expect(ruleJson(null)).toBeNull();
  });

  it("a failed payment schedules the rule's own retry one request timeout later; a request or a new setting clears it", () => {
    const book = funded(100n);
    setAutoTopUp(book, byPack, PACK, T0, POLICY);
    unwrap(failAutoTopUp(book, 1, "atu:1:acct-atu", "declined", at(MINUTE), POLICY));
    const a = book.autoTopUp!;
    expect(a.rule.retryAt).toEqual(at(11 * MINUTE));
    expect(autoTopUpDueAt(a.rule)).toEqual(at(11 * MINUTE));
    expect(settleAutoTopUp(a, at(11 * MINUTE - 1))).toBe(false);
    expect(settleAutoTopUp(a, at(11 * MINUTE))).toBe(true);
    expect(a.rule.retryAt).toBeNull();
    requestIfLow(book, at(11 * MINUTE), POLICY);
    expect(a.rule.outstanding?.requestId).toBe("atu:2:acct-atu");
    unwrap(failAutoTopUp(book, 2, "atu:2:acct-atu", "declined", at(12 * MINUTE), { ...POLICY, maxFailures: 3 }));
    expect(a.rule.retryAt).toEqual(at(22 * MINUTE));
    setAutoTopUp(book, byPack, PACK, at(13 * MINUTE), POLICY);
    expect(a.rule.retryAt).toBeNull();
  });

  it("max failures in a row disable the rule and state it", () => {
    const book = funded(100n);
    setAutoTopUp(book, byPack, PACK, T0, POLICY);
    unwrap(failAutoTopUp(book, 1, "atu:1:acct-atu", "declined", at(MINUTE), POLICY));
    requestIfLow(book, at(2 * MINUTE), POLICY);
    const second = unwrap(failAutoTopUp(book, 2, "atu:2:acct-atu", "declined", at(3 * MINUTE), POLICY));
    expect(second.rule).toMatchObject({ state: "DISABLED", failuresInRow: 2 });
    expect(book.events.map((e) => e.kind).slice(-2)).toEqual(["AUTO_TOP_UP_FAILED", "AUTO_TOP_UP_DISABLED"]);
    requestIfLow(book, at(4 * MINUTE), POLICY);
    expect(book.autoTopUp?.rule.epoch).toBe(2);
  });
});
