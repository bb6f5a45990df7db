import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type AutoTopUpEvent,
  type AutoTopUpPolicy,
  type AutoTopUpRequest,
  type AutoTopUpRule,
  type AutoTopUpSettings,
  checkThreshold,
  decideCompletion,
  decideFailure,
  expireOutstanding,
  nextDue,
  parseRequestId,
  recordCompletion,
  recordFailure,
  requestIdOf,
  setRule,
  validateSettings,
} from "../../src/domain/auto-top-up.js";
import { DEFAULT_TOP_UP_PACKS } from "../../src/domain/top-up-packs.js";

const HOUR = 3_600_000;
const T0 = new Date("2030-01-15T12:00:00Z");
const at = (ms: number) => new Date(T0.getTime() + ms);
const POLICY: AutoTopUpPolicy = { maxFailures: 3, requestTimeoutMs: HOUR };
const PACKS = DEFAULT_TOP_UP_PACKS;
const byPack: AutoTopUpSettings = { thresholdCredits: 100n, size: { kind: "pack", packId: "topup-500" }, maxPerMonth: 5, enabled: true };
const byTarget: AutoTopUpSettings = { thresholdCredits: 100n, size: { kind: "target", targetCredits: 1_000n }, maxPerMonth: 5, enabled: true };

function armed(settings: AutoTopUpSettings = byPack): AutoTopUpRule {
  return setRule(null, settings).rule;
}

function request(rule: AutoTopUpRule, available: bigint, now = T0, alreadyRequested = 0n): AutoTopUpRequest {
  const r = checkThreshold(rule, "acct-1", available, alreadyRequested, now, POLICY, PACKS).request;
  expect(r).not.toBeNull();
  return r!;
}

describe("auto top-up settings", () => {
  it("refuses a threshold not above 0, an unknown pack, a target not above the threshold, a monthly count out of 1..1000, naming the field", () => {
    const field = (s: AutoTopUpSettings) => {
      const r = validateSettings(s, PACKS);
      return r.ok ? null : r.failure.metadata["field"];
    };
    expect(field(byPack)).toBeNull();
    expect(field(byTarget)).toBeNull();
    expect(field({ ...byPack, thresholdCredits: 0n })).toBe("threshold_credits");
    expect(field({ ...byPack, thresholdCredits: -5n })).toBe("threshold_credits");
    expect(field({ ...byPack, size: { kind: "pack", packId: "topup-7" } })).toBe("pack_id");
    expect(field({ ...byTarget, size: { kind: "target", targetCredits: 100n } })).toBe("target_credits");
    expect(field({ ...byPack, maxPerMonth: 0 })).toBe("max_per_month");
    expect(field({ ...byPack, maxPerMonth: 1001 })).toBe("max_per_month");
    expect(field({ ...byPack, maxPerMonth: 1.5 })).toBe("max_per_month");
  });

  it("a request id is the account and the epoch, and reads back; anything else is no request id", () => {
    expect(requestIdOf("team:42", 7)).toBe("atu:7:team:42");
    expect(parseRequestId("atu:7:team:42")).toEqual({ accountId: "team:42", epoch: 7 });
    for (const bad of ["", "atu:0:a", "atu:x:a", "atu:7:", "atu:07:a", "atu:12345678901234567:a", "top:7:a"]) expect(parseRequestId(bad), bad).toBeNull();
  });
});

describe("the rule's state machine", () => {
  it("requests once when a change leaves the account below its threshold, and never again while that request is out", () => {
    const rule = armed();
    expect(checkThreshold(rule, "acct-1", 100n, 0n, T0, POLICY, PACKS).request).toBeNull(); // at the threshold: not below
    const r = request(rule, 99n);
    expect([r.requestId, r.credits, r.pack?.packId, r.expiresAt.toISOString(), rule.state]).toEqual(["atu:1:acct-1", 500n, "topup-500", "2030-01-15T13:00:00.000Z", "REQUESTED"]);
    for (const available of [50n, 0n, 99n]) expect(checkThreshold(rule, "acct-1", available, 0n, at(1000), POLICY, PACKS)).toEqual({ request: null, waiting: null, events: [] });
    expect(nextDue(rule, null)).toEqual(r.expiresAt);
  });

  it("sizes to the target counting credits already requested; nothing when those reach it", () => {
    expect(request(armed(byTarget), 40n).credits).toBe(960n);
    expect(request(armed(byTarget), 40n, T0, 500n).credits).toBe(460n);
    expect(checkThreshold(armed(byTarget), "acct-1", 40n, 960n, T0, POLICY, PACKS).request).toBeNull();
  });

  it("completing the outstanding request re-arms; completing it again answers as before; a failed one is stale", () => {
    const rule = armed();
    const r = request(rule, 10n);
    expect(decideCompletion(rule, r)).toEqual({ ok: true, value: { kind: "GRANT", late: false } });
    const events = recordCompletion(rule, r, "pay-1", "bucket-1", at(60_000), false);
    expect(events.map((e) => e.kind)).toEqual(["AUTO_TOP_UP_COMPLETED"]);
    expect([rule.state, rule.outstanding, r.outcome, r.paymentReference]).toEqual(["ARMED", null, "COMPLETED", "pay-1"]);
    expect(decideCompletion(rule, r)).toEqual({ ok: true, value: { kind: "ALREADY_COMPLETED" } });
    const next = request(rule, 10n, at(120_000));
    expect(next.requestId).toBe("atu:2:acct-1");
    recordFailure(rule, next, "card declined", at(180_000), POLICY);
    const stale = decideCompletion(rule, next);
    expect(stale.ok ? null : [stale.failure.reason, stale.failure.metadata["outcome"]]).toEqual(["AUTO_TOP_UP_REQUEST_STALE", "FAILED"]);
    const failAgain = decideFailure(next);
    expect(failAgain).toEqual({ ok: true, value: { kind: "ALREADY_FAILED" } });
    const failCompleted = decideFailure(r);
    expect(failCompleted.ok ? null : failCompleted.failure.reason).toBe("AUTO_TOP_UP_REQUEST_STALE");
  });

  it("a request unanswered past its timeout expires and the rule asks again with a new id; a late payment still grants and leaves the new request out", () => {
    const rule = armed();
    const first = request(rule, 10n);
    expect(expireOutstanding(rule, at(HOUR - 1))).toBeNull();
    expect(expireOutstanding(rule, at(HOUR))).toBe(first);
    expect([first.outcome, rule.state]).toEqual(["EXPIRED", "ARMED"]);
    const second = request(rule, 10n, at(HOUR));
    expect(second.requestId).toBe("atu:2:acct-1");
    expect(decideCompletion(rule, first)).toEqual({ ok: true, value: { kind: "GRANT", late: true } });
    recordCompletion(rule, first, "pay-late", "bucket-1", at(HOUR + 5), true);
    expect([rule.state, rule.outstanding?.requestId]).toEqual(["REQUESTED", "atu:2:acct-1"]);
  });

  it("failures in a row disable the rule at the policy's count; a success in between resets the count; a failure of an expired request counts nothing", () => {
    const rule = armed({ ...byPack, maxPerMonth: 20 });
    const kinds = (events: AutoTopUpEvent[]) => events.map((e) => e.kind);
    expect(kinds(recordFailure(rule, request(rule, 10n, at(0)), "declined", at(1), POLICY))).toEqual(["AUTO_TOP_UP_FAILED"]);
    expect(kinds(recordFailure(rule, request(rule, 10n, at(2)), "declined", at(3), POLICY))).toEqual(["AUTO_TOP_UP_FAILED"]);
    const ok = request(rule, 10n, at(4));
    recordCompletion(rule, ok, "pay", "b", at(5), false);
    expect(rule.failuresInRow).toBe(0);
    const expired = request(rule, 10n, at(6));
    expireOutstanding(rule, at(6 + HOUR));
    expect(kinds(recordFailure(rule, expired, "declined late", at(7 + HOUR), POLICY))).toEqual(["AUTO_TOP_UP_FAILED"]);
    expect(rule.failuresInRow).toBe(0);
    for (let i = 0; i < 2; i++) recordFailure(rule, request(rule, 10n, at(10 + HOUR + i)), "declined", at(11 + HOUR + i), POLICY);
    expect(kinds(recordFailure(rule, request(rule, 10n, at(20 + HOUR)), "declined", at(21 + HOUR), POLICY))).toEqual(["AUTO_TOP_UP_FAILED", "AUTO_TOP_UP_DISABLED"]);
    expect([rule.state, rule.settings.enabled, rule.lastFailure?.reason]).toEqual(["DISABLED", false, "declined"]);
    expect(checkThreshold(rule, "acct-1", 0n, 0n, at(30 + HOUR), POLICY, PACKS).request).toBeNull();
    // Set again: armed, the count forgotten, and it asks at once (the account is still low).
    setRule(rule, { ...byPack, maxPerMonth: 20 });
    expect([rule.state, rule.failuresInRow]).toEqual(["ARMED", 0]);
    expect(request(rule, 0n, at(40 + HOUR)).epoch).toBe(rule.epoch);
  });

  it("past max_per_month it waits for the next calendar month, and says until when", () => {
    const rule = armed({ ...byPack, maxPerMonth: 2 });
    for (let i = 0; i < 2; i++) recordCompletion(rule, request(rule, 10n, at(i * 1000)), `pay-${i}`, `b-${i}`, at(i * 1000 + 1), false);
    const waiting = checkThreshold(rule, "acct-1", 10n, 0n, at(5000), POLICY, PACKS);
    expect([waiting.request, waiting.waiting]).toEqual([null, { kind: "MONTHLY_LIMIT", until: new Date("2030-02-01T00:00:00Z") }]);
    expect(nextDue(rule, waiting.waiting)).toEqual(new Date("2030-02-01T00:00:00Z"));
    expect(request(rule, 10n, new Date("2030-02-01T00:00:00Z")).requestId).toBe("atu:3:acct-1");
    expect(rule.monthCount).toBe(1);
  });

  it("disabling keeps a request in flight answerable; enabling again with it out leaves the rule REQUESTED", () => {
    const rule = armed();
    const r = request(rule, 10n);
    const { events } = setRule(rule, { ...byPack, enabled: false });
    expect(events.map((e) => e.kind)).toEqual(["AUTO_TOP_UP_DISABLED"]);
    expect([rule.state, rule.outstanding?.requestId]).toEqual(["DISABLED", r.requestId]);
    setRule(rule, byPack);
    expect(rule.state).toBe("REQUESTED");
    expect(decideCompletion(rule, r)).toEqual({ ok: true, value: { kind: "GRANT", late: false } });
  });
});

describe("the rule under any sequence of changes and answers (property)", () => {
  type Op =
    | { kind: "change"; available: number; afterMs: number }
    | { kind: "complete"; which: number }
    | { kind: "fail"; which: number }
    | { kind: "set"; enabled: boolean };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant("change" as const), available: fc.integer({ min: 0, max: 300 }), afterMs: fc.integer({ min: 0, max: 3 * HOUR }) }),
    fc.record({ kind: fc.constant("complete" as const), which: fc.nat() }),
    fc.record({ kind: fc.constant("fail" as const), which: fc.nat() }),
    fc.record({ kind: fc.constant("set" as const), enabled: fc.boolean() }),
  );

  it("one request at most in flight, epochs and ids never reused, the month's count never past its cap, DISABLED only by setting or by failures in a row", () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 80 }), fc.constantFrom(byPack, byTarget), fc.integer({ min: 1, max: 4 }), (ops, settings, maxPerMonth) => {
        const rule = armed({ ...settings, maxPerMonth });
        const made: AutoTopUpRequest[] = [];
        let now = T0.getTime();
        let requested = 0;
        const check = (available: bigint) => {
          expireOutstanding(rule, new Date(now));
          const pending = made.filter((r) => r.outcome === "EXPIRED").reduce((s, r) => s + r.credits, 0n);
          const step = checkThreshold(rule, "acct-1", available, pending, new Date(now), POLICY, PACKS);
          if (step.request) {
            made.push(step.request);
            requested += step.events.filter((e) => e.kind === "AUTO_TOP_UP_REQUESTED").length;
          }
        };
        for (const op of ops) {
          const outBefore = rule.outstanding;
          if (op.kind === "change") {
            now += op.afterMs;
            check(BigInt(op.available));
            // A new request only once the one out was answered or expired.
            if (outBefore && outBefore.outcome === "REQUESTED" && rule.outstanding !== outBefore) throw new Error("a second request while one was out");
          } else if (op.kind === "set") {
            setRule(rule, { ...rule.settings, enabled: op.enabled, maxPerMonth });
          } else if (made.length > 0) {
            const r = made[op.which % made.length]!;
            if (op.kind === "complete") {
              const d = decideCompletion(rule, r);
              if (d.ok && d.value.kind === "GRANT") recordCompletion(rule, r, "pay", "b", new Date(now), d.value.late);
              else if (!d.ok) expect(r.outcome).toBe("FAILED");
            } else {
              const d = decideFailure(r);
              if (d.ok && d.value.kind === "RECORD") recordFailure(rule, r, "declined", new Date(now), POLICY);
              else if (!d.ok) expect(r.outcome).toBe("COMPLETED");
            }
          }
          expect(made.filter((r) => r.outcome === "REQUESTED").length).toBeLessThanOrEqual(1);
          expect(rule.outstanding === null || rule.outstanding.outcome === "REQUESTED").toBe(true);
          expect(rule.state === "REQUESTED").toBe(rule.outstanding !== null && rule.settings.enabled);
          expect(rule.monthCount).toBeLessThanOrEqual(maxPerMonth);
          expect(rule.failuresInRow).toBeLessThanOrEqual(POLICY.maxFailures);
          if (rule.state === "DISABLED") expect(rule.settings.enabled).toBe(false);
        }
        expect(new Set(made.map((r) => r.requestId)).size).toBe(made.length);
        expect(made.map((r) => r.epoch)).toEqual(made.map((_, i) => i + 1));
        expect(requested).toBe(made.length);
        for (const r of made) expect(r.credits > 0n).toBe(true);
      }),
      { numRuns: 300 }, // fast-check prints the seed and path of a failure, to replay it
    );
  });
});
