import { fail, ok, type Result } from "./errors.js";
import type { TopUpPack } from "./grants.js";

/**
 * Auto top-up (issue "Auto top-up"): the service decides when an account buys credits, billing
 * charges the card, and one request id joins the two. A rule is a state machine per account:
 *
 *   ARMED ──a committed change leaves available < threshold──▶ REQUESTED
 *     ▲  ▲                                                        │ │ │
 *     │  └──────── CompleteAutoTopUp (credits granted) ◀──────────┘ │ │
 *     ├─────────── FailAutoTopUp (a failure in a row) ◀─────────────┘ │
 *     ├─────────── no answer within the request timeout (EXPIRED) ◀───┘
 *     │
 *   DISABLED ◀── MAX_FAILURES failures in a row, or the rule set with enabled = false
 *
 * Every transition happens under the account's lock in the transaction of the change that caused
 * it, so one need makes one request however many changes cross the line and however many servers
 * run: a second request can only follow an answer (or an expiry) to the first. This module is the
 * rules alone, on plain values; the store keeps the rule with the account and every request as a
 * row of its own (what an answer to it is checked against).
 */

export type AutoTopUpSize = { readonly kind: "pack"; readonly packId: string } | { readonly kind: "target"; readonly targetCredits: bigint };

export type AutoTopUpState = "ARMED" | "REQUESTED" | "DISABLED";

/** What the account's owner set (SetAutoTopUp). */
export interface AutoTopUpSettings {
  readonly thresholdCredits: bigint;
  readonly size: AutoTopUpSize;
  /** Requests per calendar month (UTC, by the account's clock) at most: 1 to MAX_PER_MONTH. */
  readonly maxPerMonth: number;
  readonly enabled: boolean;
}

export interface AutoTopUpFailure {
  readonly requestId: string;
  readonly reason: string;
  readonly at: Date;
}

/** The rule as kept with the account. */
export interface AutoTopUpRule {
  settings: AutoTopUpSettings;
  state: AutoTopUpState;
  /** Requests made so far on this account; the next request is epoch + 1 (never reused, whatever the settings). */
  epoch: number;
  /** The request in flight (state REQUESTED), else null. */
  outstanding: AutoTopUpRequest | null;
  /** The first instant of the month `monthCount` counts (UTC month of the account's clock). */
  monthStart: Date | null;
  monthCount: number;
  failuresInRow: number;
  lastFailure: AutoTopUpFailure | null;
  /**
   * After a failed payment of the request in flight: when the rule judges the balance again by
   * itself if no change does it first (one request timeout later), so an account left with no
   * credits — whose refused Reserves change nothing — is not stranded. null: nothing pending.
   */
  retryAt: Date | null;
}

export type RequestOutcome = "REQUESTED" | "COMPLETED" | "FAILED" | "EXPIRED";

/** One request, from its making to its answer (stored apart from the rule: answers name it). */
export interface AutoTopUpRequest {
  readonly requestId: string;
  readonly epoch: number;
  readonly credits: bigint;
  /** The pack bought (size by pack), else null (size by target: a custom amount at the catalog's per-credit price is billing's business). */
  readonly pack: TopUpPack | null;
  readonly requestedAt: Date;
  readonly expiresAt: Date;
  outcome: RequestOutcome;
  /** Set when completed: the payment and the TOP_UP bucket it granted; set when failed: the reason. */
  paymentReference: string | null;
  bucketId: string | null;
  failureReason: string | null;
  answeredAt: Date | null;
}

export const MAX_PER_MONTH = 1_000;
export const DEFAULT_MAX_FAILURES = 3;
export const DEFAULT_REQUEST_TIMEOUT_MS = 3_600_000;

/** The server's settings (AUTO_TOP_UP_MAX_FAILURES, AUTO_TOP_UP_REQUEST_TIMEOUT). */
export interface AutoTopUpPolicy {
  readonly maxFailures: number;
  readonly requestTimeoutMs: number;
}

/** What a step of the rule tells the feed (the apply stage turns these into events). */
export type AutoTopUpEvent =
  | { readonly kind: "AUTO_TOP_UP_REQUESTED"; readonly request: AutoTopUpRequest; readonly available: bigint }
  | { readonly kind: "AUTO_TOP_UP_COMPLETED"; readonly request: AutoTopUpRequest; readonly late: boolean }
  | { readonly kind: "AUTO_TOP_UP_FAILED"; readonly request: AutoTopUpRequest; readonly failuresInRow: number }
  | { readonly kind: "AUTO_TOP_UP_DISABLED"; readonly reason: "FAILURES" | "SET"; readonly failuresInRow: number }
  /** SetAutoTopUp's own record: the rule after it. */
  | { readonly kind: "AUTO_TOP_UP_SET"; readonly rule: AutoTopUpView };

/**
 * A request id names the account and the epoch, never the amount: `atu:<epoch>:<account id>`.
 * Billing uses it as its idempotency key for the charge; the same need can never be charged
 * under two ids, and two needs never share one.
 */
export function requestIdOf(accountId: string, epoch: number): string {
  return `atu:${epoch}:${accountId}`;
}

export function parseRequestId(requestId: string): { accountId: string; epoch: number } | null {
  const m = /^atu:([1-9][0-9]{0,15}):(.+)$/.exec(requestId);
  if (!m) return null;
  const epoch = Number(m[1]);
  return Number.isSafeInteger(epoch) ? { accountId: m[2]!, epoch } : null;
}

/** SetAutoTopUp's checks, before anything is read: INVALID_FIELD naming the field. */
export function validateSettings(s: AutoTopUpSettings, packs: readonly TopUpPack[]): Result<AutoTopUpSettings> {
  if (s.thresholdCredits <= 0n) return fail("INVALID_FIELD", "threshold_credits: must be positive", { field: "threshold_credits" });
  if (s.size.kind === "pack") {
    const packId = s.size.packId;
    if (!packs.some((p) => p.packId === packId)) return fail("INVALID_FIELD", `pack_id: unknown pack ${JSON.stringify(packId.slice(0, 64))}`, { field: "pack_id" });
  } else if (s.size.targetCredits <= s.thresholdCredits) {
    return fail("INVALID_FIELD", "target_credits: must be above threshold_credits", { field: "target_credits" });
  }
  if (!Number.isInteger(s.maxPerMonth) || s.maxPerMonth < 1 || s.maxPerMonth > MAX_PER_MONTH) {
    return fail("INVALID_FIELD", `max_per_month: must be 1 to ${MAX_PER_MONTH}`, { field: "max_per_month" });
  }
  return ok(s);
}

/**
 * SetAutoTopUp on an account (a new rule, or new settings for its rule). Enabling a disabled rule
 * arms it with its failures forgotten; disabling one stops new requests. A request in flight is
 * kept either way: billing may be charging for it, and its answer is still taken.
 */
export function setRule(current: AutoTopUpRule | null, settings: AutoTopUpSettings): { rule: AutoTopUpRule; events: AutoTopUpEvent[] } {
  const rule: AutoTopUpRule = current ?? { settings, state: "ARMED", epoch: 0, outstanding: null, monthStart: null, monthCount: 0, failuresInRow: 0, lastFailure: null, retryAt: null };
  rule.settings = settings;
  // Setting the rule judges the balance at once: a retry pending from a failure is moot.
  rule.retryAt = null;
  const events: AutoTopUpEvent[] = [];
  if (!settings.enabled) {
    if (rule.state !== "DISABLED") events.push({ kind: "AUTO_TOP_UP_DISABLED", reason: "SET", failuresInRow: rule.failuresInRow });
    rule.state = "DISABLED";
  } else if (rule.state === "DISABLED") {
    rule.state = rule.outstanding ? "REQUESTED" : "ARMED";
    rule.failuresInRow = 0;
  }
  return { rule, events };
}

/** The first instant of the UTC calendar month of `at`, and of the next one. */
export function monthOf(at: Date): { start: Date; next: Date } {
  return { start: new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), 1)), next: new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + 1, 1)) };
}

/**
 * Credits a request would buy now: the pack's, or what takes the account to its target counting
 * what earlier requests still may bring (`alreadyRequested`: expired ones not answered yet, which
 * a late payment still grants); nothing when that is there already.
 */
export function requestSize(settings: AutoTopUpSettings, available: bigint, alreadyRequested: bigint, packs: readonly TopUpPack[]): { credits: bigint; pack: TopUpPack | null } | null {
  if (settings.size.kind === "pack") {
    const packId = settings.size.packId;
    const pack = packs.find((p) => p.packId === packId);
    return pack ? { credits: pack.credits, pack } : null;
  }
  const credits = settings.size.targetCredits - (available + alreadyRequested);
  return credits > 0n ? { credits, pack: null } : null;
}

/** Why an armed rule below its threshold did not request (GetAutoTopUp says so), or null when it may. */
export type Waiting = { readonly kind: "MONTHLY_LIMIT"; readonly until: Date } | null;

/**
 * After a committed change: an armed, enabled rule whose account is now below its threshold makes
 * one request (REQUESTED, its epoch, this month's count) unless the month's requests are used up
 * (then it waits for the next month: `waiting`). Anything else: nothing.
 */
export function checkThreshold(
  rule: AutoTopUpRule,
  accountId: string,
  available: bigint,
  alreadyRequested: bigint,
  now: Date,
  policy: AutoTopUpPolicy,
  packs: readonly TopUpPack[],
): { request: AutoTopUpRequest | null; waiting: Waiting; events: AutoTopUpEvent[] } {
  const none = { request: null, waiting: null, events: [] };
  if (rule.state !== "ARMED" || !rule.settings.enabled || available >= rule.settings.thresholdCredits) return none;
  const month = monthOf(now);
  if (rule.monthStart === null || rule.monthStart.getTime() !== month.start.getTime()) {
    rule.monthStart = month.start;
    rule.monthCount = 0;
  }
  if (rule.monthCount >= rule.settings.maxPerMonth) return { request: null, waiting: { kind: "MONTHLY_LIMIT", until: month.next }, events: [] };
  const size = requestSize(rule.settings, available, alreadyRequested, packs);
  if (!size) return none;
  rule.epoch += 1;
  rule.monthCount += 1;
  const request: AutoTopUpRequest = {
    requestId: requestIdOf(accountId, rule.epoch),
    epoch: rule.epoch,
    credits: size.credits,
    pack: size.pack,
    requestedAt: now,
    expiresAt: new Date(now.getTime() + policy.requestTimeoutMs),
    outcome: "REQUESTED",
    paymentReference: null,
    bucketId: null,
    failureReason: null,
    answeredAt: null,
  };
  rule.outstanding = request;
  rule.state = "REQUESTED";
  rule.retryAt = null;
  return { request, waiting: null, events: [{ kind: "AUTO_TOP_UP_REQUESTED", request, available }] };
}

/**
 * A request left unanswered past its expiry: the rule re-arms (a later answer is still taken, see
 * complete) and the caller checks the threshold again in the same change, so an account still low
 * gets a new request with a new id.
 */
export function expireOutstanding(rule: AutoTopUpRule, now: Date): AutoTopUpRequest | null {
  const r = rule.outstanding;
  if (!r || now.getTime() < r.expiresAt.getTime()) return null;
  r.outcome = "EXPIRED";
  rule.outstanding = null;
  if (rule.state === "REQUESTED") rule.state = "ARMED";
  return r;
}

/** The instant the rule next changes by itself: the outstanding request's expiry, or the month a waiting rule may request again. */
export function nextDue(rule: AutoTopUpRule, waiting: Waiting): Date | null {
  if (rule.outstanding) return rule.outstanding.expiresAt;
  return waiting?.until ?? null;
}

/** CompleteAutoTopUp's decision: grant `credits` (to a TOP_UP bucket), or answer as the first answer did. */
export type CompleteDecision =
  | { readonly kind: "GRANT"; readonly late: boolean }
  /** Completed before: the same answer again, nothing granted. */
  | { readonly kind: "ALREADY_COMPLETED" };

/**
 * Completing a request: the outstanding one re-arms the rule and clears its failures; an expired
 * one (the customer paid late) still grants, the rule as it is; one completed before answers as
 * before; a failed one is stale (FAILED_PRECONDITION: billing was told it failed), nothing granted.
 * The caller grants the credits and then sets the request's answer (`recordCompletion`).
 */
export function decideCompletion(rule: AutoTopUpRule, request: AutoTopUpRequest): Result<CompleteDecision> {
  switch (request.outcome) {
    case "COMPLETED":
      return ok({ kind: "ALREADY_COMPLETED" });
    case "FAILED":
      return fail("AUTO_TOP_UP_REQUEST_STALE", `request ${request.requestId} was answered as failed: it cannot be completed (a new request follows the next need)`, {
        request_id: request.requestId,
        outcome: "FAILED",
      });
    case "EXPIRED":
      return ok({ kind: "GRANT", late: true });
    case "REQUESTED":
      return ok({ kind: "GRANT", late: rule.outstanding?.requestId !== request.requestId });
  }
}

export function recordCompletion(rule: AutoTopUpRule, request: AutoTopUpRequest, paymentReference: string, bucketId: string, now: Date, late: boolean): AutoTopUpEvent[] {
  request.outcome = "COMPLETED";
  request.paymentReference = paymentReference;
  request.bucketId = bucketId;
  request.answeredAt = now;
  if (rule.outstanding?.requestId === request.requestId) {
    rule.outstanding = null;
    rule.failuresInRow = 0;
    if (rule.state === "REQUESTED") rule.state = "ARMED";
  }
  return [{ kind: "AUTO_TOP_UP_COMPLETED", request, late }];
}

/** FailAutoTopUp's decision: record the failure, or answer as the first answer did. */
export type FailDecision = { readonly kind: "RECORD" } | { readonly kind: "ALREADY_FAILED" };

/** Failing a request: one completed before is stale (its credits were granted); failed before answers as before. */
export function decideFailure(request: AutoTopUpRequest): Result<FailDecision> {
  switch (request.outcome) {
    case "FAILED":
      return ok({ kind: "ALREADY_FAILED" });
    case "COMPLETED":
      return fail("AUTO_TOP_UP_REQUEST_STALE", `request ${request.requestId} was completed: it cannot fail`, { request_id: request.requestId, outcome: "COMPLETED" });
    case "EXPIRED":
    case "REQUESTED":
      return ok({ kind: "RECORD" });
  }
}

/**
 * A failed payment: the outstanding request's failure counts toward MAX_FAILURES in a row (then
 * the rule is DISABLED until set again; else ARMED, and the next change below the threshold asks
 * again — the failure itself does not, so a declined card is not retried at once — or, if no
 * change comes, the rule itself one request timeout later: `retryAt`). A failure of
 * an expired request is recorded and counts nothing: a newer request may be in flight.
 */
export function recordFailure(rule: AutoTopUpRule, request: AutoTopUpRequest, reason: string, now: Date, policy: AutoTopUpPolicy): AutoTopUpEvent[] {
  request.outcome = "FAILED";
  request.failureReason = reason;
  request.answeredAt = now;
  rule.lastFailure = { requestId: request.requestId, reason, at: now };
  if (rule.outstanding?.requestId !== request.requestId) return [{ kind: "AUTO_TOP_UP_FAILED", request, failuresInRow: rule.failuresInRow }];
  rule.outstanding = null;
  rule.failuresInRow += 1;
  const events: AutoTopUpEvent[] = [{ kind: "AUTO_TOP_UP_FAILED", request, failuresInRow: rule.failuresInRow }];
  if (rule.state === "DISABLED") return events;
  if (rule.failuresInRow >= policy.maxFailures) {
    rule.state = "DISABLED";
    rule.settings = { ...rule.settings, enabled: false };
    events.push({ kind: "AUTO_TOP_UP_DISABLED", reason: "FAILURES", failuresInRow: rule.failuresInRow });
  } else if (rule.state === "REQUESTED") {
    rule.state = "ARMED";
    rule.retryAt = new Date(now.getTime() + policy.requestTimeoutMs);
  }
  return events;
}

/**
 * An account's rule as its book carries it: the rule, the pack a pack-sized rule buys (resolved
 * when the rule was set: a catalog or custom pack changed later takes a new SetAutoTopUp), and
 * the requests the book loaded (those an answer names) or made or answered, for the store.
 */
export interface AccountAutoTopUp {
  readonly rule: AutoTopUpRule;
  pack: TopUpPack | null;
  readonly requests: Map<number, AutoTopUpRequest>;
  /** Epochs of the requests to write back. */
  readonly changedRequests: Set<number>;
  /** The rule changed (to write back); not every change is a change record (an expiry with nothing after it is not). */
  changed: boolean;
}

/** The rule as answers and events show it, a copy as of `now`. */
export interface AutoTopUpView {
  readonly accountId: string;
  readonly settings: AutoTopUpSettings;
  readonly state: AutoTopUpState;
  readonly monthCount: number;
  /** This month's requests are used up: none before this instant. */
  readonly waitingUntil: Date | null;
  readonly outstanding: AutoTopUpRequest | null;
  readonly lastFailure: AutoTopUpFailure | null;
  readonly failuresInRow: number;
  /** After a failed payment: when the rule asks again by itself if the account is still low. */
  readonly retryAt: Date | null;
}

/** Where a month-capped rule stands at `now`: the month it counts is over, or its count is used up (then: until when). */
export function monthlyWait(rule: AutoTopUpRule, now: Date): Waiting {
  if (rule.state !== "ARMED" || !rule.settings.enabled || rule.monthStart === null) return null;
  const month = monthOf(rule.monthStart);
  if (now.getTime() >= month.next.getTime() || rule.monthCount < rule.settings.maxPerMonth) return null;
  return { kind: "MONTHLY_LIMIT", until: month.next };
}

export function describeAutoTopUp(accountId: string, rule: AutoTopUpRule, now: Date): AutoTopUpView {
  const month = monthOf(now);
  const sameMonth = rule.monthStart !== null && rule.monthStart.getTime() === month.start.getTime();
  return {
    accountId,
    settings: rule.settings,
    state: rule.state,
    monthCount: sameMonth ? rule.monthCount : 0,
    waitingUntil: monthlyWait(rule, now)?.until ?? null,
    outstanding: rule.outstanding ? { ...rule.outstanding } : null,
    lastFailure: rule.lastFailure,
    failuresInRow: rule.failuresInRow,
    retryAt: rule.state === "ARMED" && rule.settings.enabled ? rule.retryAt : null,
  };
}

/**
 * The instant the rule next acts with no call (the sweeper's index): the outstanding request's
 * expiry, the retry after a failed payment, or the start of the next month for a rule whose
 * month's requests are used up. null:
 * nothing falls due.
 */
export function autoTopUpDueAt(rule: AutoTopUpRule): Date | null {
  if (rule.outstanding) return rule.outstanding.expiresAt;
  if (rule.retryAt && rule.state === "ARMED" && rule.settings.enabled) return rule.retryAt;
  if (rule.state !== "ARMED" || !rule.settings.enabled || rule.monthStart === null || rule.monthCount < rule.settings.maxPerMonth) return null;
  return monthOf(rule.monthStart).next;
}

/**
 * What fell due on the rule by `now`, before anything else reads it: an unanswered request past
 * its expiry (the rule re-arms), a month past the one it counts (its count starts again), and the
 * retry one request timeout after a failed payment.
 * Neither is a change record by itself; true when either happened (the caller then judges the
 * threshold again, so an account still low gets a new request with a new id).
 */
export function settleAutoTopUp(a: AccountAutoTopUp, now: Date): boolean {
  const rule = a.rule;
  const expired = expireOutstanding(rule, now);
  if (expired) {
    a.requests.set(expired.epoch, expired);
    a.changedRequests.add(expired.epoch);
  }
  let rolled = false;
  if (rule.monthStart !== null && now.getTime() >= monthOf(rule.monthStart).next.getTime()) {
    rule.monthStart = monthOf(now).start;
    rule.monthCount = 0;
    rolled = true;
  }
  // A retry after a failed payment fell due: judge the balance again (a request follows if still low).
  const retry = rule.retryAt !== null && now.getTime() >= rule.retryAt.getTime();
  if (retry) rule.retryAt = null;
  if (expired || rolled || retry) a.changed = true;
  return expired !== null || rolled || retry;
}
