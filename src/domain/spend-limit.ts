import { fail, ok, type Result } from "./errors.js";
import type { Running } from "./concurrency-limit.js";
import { type Subscription, describe } from "./subscription.js";
import { dayOf, monthOf, type Span, weekOf } from "./time-zone.js";

/**
 * Spend limits (issue "Spend controls for teams"): what one member of an account, or (member "")
 * the whole account, may spend per period. Spent in a period = credits captured by Commits of
 * holds that started in the period (`used`, a counter kept with the limit in the write
 * transaction) plus what the scope's running holds hold now (`held`, from the running sums the
 * book is loaded with: concurrency-limit.ts). Released and expired holds count nothing.
 *
 * A HARD limit refuses a Reserve (and a Commit's extra above its hold) that would take used + held
 * past max_credits; a SOFT one lets it through and states SPEND_LIMIT_REACHED once per period.
 * The account-wide limits apply to every member; a member's own apply on top.
 */
export type SpendPeriod = "DAY" | "WEEK" | "BILLING_PERIOD" | "LIFETIME";
export type LimitMode = "HARD" | "SOFT";

export const SPEND_PERIODS: readonly SpendPeriod[] = ["DAY", "WEEK", "BILLING_PERIOD", "LIFETIME"];

/** What SetSpendLimit sets. */
export interface SpendLimitSpec {
  readonly memberId: string;
  readonly period: SpendPeriod;
  readonly maxCredits: bigint;
  readonly mode: LimitMode;
  /** IANA zone of DAY and WEEK boundaries (and of the month of BILLING_PERIOD without a plan). */
  readonly timeZone: string;
}

/** A limit with its counter, as stored. */
export interface SpendLimitState extends SpendLimitSpec {
  /** Start of the period `used` counts (an older one than the current period's means `used` is 0 now). */
  periodStart: Date;
  used: bigint;
  /** A SOFT limit was passed in the period of `periodStart` (its SPEND_LIMIT_REACHED was stated). */
  reached: boolean;
}

/** A limit as GetSpendLimits and answers show it: the current period's figures. */
export interface SpendView extends SpendLimitSpec {
  readonly used: bigint;
  readonly held: bigint;
  readonly remaining: bigint;
  readonly periodStart: Date;
  /** null for LIFETIME. */
  readonly resetsAt: Date | null;
}

/** The most spend limits one account may have (its own and its members'): the book loads them all. */
export const MAX_SPEND_LIMITS = 200;

const LIFETIME: { start: Date; end: Date | null } = { start: new Date(0), end: null };

/** Recently computed day, week and month spans per zone: most checks fall in the same one (each span costs a few Intl lookups). */
const spans = new Map<string, Span>();

function cached(key: string, at: Date, compute: () => Span): Span {
  const hit = spans.get(key);
  if (hit && hit.start.getTime() <= at.getTime() && at.getTime() < hit.end.getTime()) return hit;
  const span = compute();
  if (spans.size > 1000) spans.clear();
  spans.set(key, span);
  return span;
}

/** The period of `spec` containing `at` (the account's time); LIFETIME has no end. */
export function spendWindow(spec: Pick<SpendLimitSpec, "period" | "timeZone">, at: Date, subscription: Subscription | null): { start: Date; end: Date | null } {
  switch (spec.period) {
    case "LIFETIME":
      return LIFETIME;
    case "DAY":
      return cached(`D${spec.timeZone}`, at, () => dayOf(spec.timeZone, at));
    case "WEEK":
      return cached(`W${spec.timeZone}`, at, () => weekOf(spec.timeZone, at));
    case "BILLING_PERIOD":
      if (subscription) return describe(subscription, at).allowancePeriod;
      return cached(`M${spec.timeZone}`, at, () => monthOf(spec.timeZone, at));
  }
}

export function limitKey(memberId: string, period: SpendPeriod): string {
  return `${memberId}\u0000${period}`;
}

/** The key of a backfill sum: captured credits of a scope's holds started at or after `since`. */
export function backfillKey(memberId: string, since: Date): string {
  return `${memberId}\u0000${since.getTime()}`;
}

/** A Commit of this batch, remembered for a limit set later in the same batch. */
interface Capture {
  readonly memberId: string;
  readonly startedAt: Date;
  readonly amount: bigint;
}

/** A soft limit just passed, for the book to state. */
export interface SoftCrossing {
  readonly limit: SpendView;
  readonly requested: bigint;
}

/**
 * The spend limits of an account with their counters. Only loaded for an account that has a limit
 * (or is about to be given one). Checks never change anything: a counter of a period that has
 * ended reads as 0, and is only written back (rolled) when something is counted or set.
 */
export class AccountSpend {
  readonly limits = new Map<string, SpendLimitState>();
  /** Keys whose row must be written (set, counted, passed) or deleted (`removed`). */
  readonly changed = new Set<string>();
  readonly removed = new Map<string, SpendLimitState>();
  private readonly captures: Capture[] = [];
  /** Captured credits per (scope, since), read for the limits this batch sets (backfillKey). */
  private readonly backfill = new Map<string, bigint>();

  constructor(states: readonly SpendLimitState[]) {
    for (const s of states) this.limits.set(limitKey(s.memberId, s.period), { ...s });
  }

  /** What the scope's Commits captured from holds started at or after `since`, as the store read it before the batch (for `set`). */
  learnCaptured(memberId: string, since: Date, captured: bigint): void {
    this.backfill.set(backfillKey(memberId, since), captured);
  }

  /** The limits that apply to a member's hold: the account's, then (for a member) the member's own. */
  applying(memberId: string): SpendLimitState[] {
    const out: SpendLimitState[] = [];
    for (const scope of memberId === "" ? [""] : ["", memberId]) {
      for (const period of SPEND_PERIODS) {
        const limit = this.limits.get(limitKey(scope, period));
        if (limit) out.push(limit);
      }
    }
    return out;
  }

  /** `used` in the period containing `at`: the counter, or 0 if it counts an earlier period. */
  usedNow(limit: SpendLimitState, at: Date, subscription: Subscription | null): bigint {
    return spendWindow(limit, at, subscription).start.getTime() === limit.periodStart.getTime() ? limit.used : 0n;
  }

  view(limit: SpendLimitState, at: Date, subscription: Subscription | null, running: (scope: string) => Running): SpendView {
    const window = spendWindow(limit, at, subscription);
    const used = window.start.getTime() === limit.periodStart.getTime() ? limit.used : 0n;
    const held = running(limit.memberId).heldCredits;
    const left = limit.maxCredits - used - held;
    const { periodStart: _p, used: _u, reached: _r, ...spec } = limit;
    return { ...spec, used, held, remaining: left > 0n ? left : 0n, periodStart: window.start, resetsAt: window.end };
  }

  /**
   * Whether `extra` more credits may be held or captured for `memberId` now: every HARD limit
   * that applies leaves room for them (used + held + extra ≤ max). Changes nothing.
   */
  admits(memberId: string, extra: bigint, at: Date, subscription: Subscription | null, running: (scope: string) => Running): Result<void> {
    for (const limit of this.applying(memberId)) {
      if (limit.mode !== "HARD") continue;
      const v = this.view(limit, at, subscription, running);
      if (v.used + v.held + extra > limit.maxCredits) return exceeded(v, extra);
    }
    return ok(undefined);
  }

  /**
   * The SOFT limits a hold of `amount` (already counted in `running`) takes past their max for
   * the first time this period; each is marked passed, for the caller to state.
   */
  passSoft(memberId: string, amount: bigint, at: Date, subscription: Subscription | null, running: (scope: string) => Running): SoftCrossing[] {
    const out: SoftCrossing[] = [];
    for (const limit of this.applying(memberId)) {
      if (limit.mode !== "SOFT") continue;
      const v = this.view(limit, at, subscription, running);
      if (v.used + v.held <= limit.maxCredits) continue;
      if (limit.reached && limit.periodStart.getTime() === v.periodStart.getTime()) continue;
      this.roll(limit, v.periodStart, v.used);
      limit.reached = true;
      this.changed.add(limitKey(limit.memberId, limit.period));
      // The figures before this hold: what a reader compares the request with.
      out.push({ limit: { ...v, held: v.held - amount, remaining: clamp(limit.maxCredits - v.used - v.held + amount) }, requested: amount });
    }
    return out;
  }

  /** A Commit captured `amount` of a hold of `memberId` that started at `startedAt`: the limits of that hold's period count it. */
  count(memberId: string, startedAt: Date, amount: bigint, at: Date, subscription: Subscription | null): void {
    this.captures.push({ memberId, startedAt, amount });
    if (amount === 0n) return;
    for (const limit of this.applying(memberId)) {
      const window = spendWindow(limit, at, subscription);
      this.roll(limit, window.start, this.usedNow(limit, at, subscription));
      if (startedAt.getTime() >= window.start.getTime()) {
        limit.used += amount;
        this.changed.add(limitKey(limit.memberId, limit.period));
      }
    }
  }

  /**
   * Creates or replaces the limit of (member, period). A new limit (or one whose period now falls
   * differently: another time zone) starts from what the scope's Commits already captured in the
   * current period (the backfill read before the batch, plus this batch's own Commits).
   */
  set(spec: SpendLimitSpec, at: Date, subscription: Subscription | null): Result<SpendLimitState> {
    const key = limitKey(spec.memberId, spec.period);
    const before = this.limits.get(key);
    if (!before && this.limits.size >= MAX_SPEND_LIMITS) {
      return fail("INVALID_FIELD", `member_id: the account has ${MAX_SPEND_LIMITS} spend limits, its most`, { field: "member_id" });
    }
    const window = spendWindow(spec, at, subscription);
    let state: SpendLimitState;
    if (before && before.timeZone === spec.timeZone) {
      state = { ...spec, periodStart: before.periodStart, used: before.used, reached: before.reached };
      this.roll(state, window.start, this.usedNow(before, at, subscription));
      // A new maximum is judged afresh: a soft limit raised above what is spent may pass again.
      if (spec.maxCredits !== before.maxCredits || spec.mode !== before.mode) state.reached = false;
    } else {
      const stored = this.backfill.get(backfillKey(spec.memberId, window.start));
      if (stored === undefined) {
        // The batch read the backfill for another period start (the period turned while it ran): the caller retries.
        return fail("STORE_UNAVAILABLE", "the limit's period changed while it was being set; retry", {});
      }
      state = { ...spec, periodStart: window.start, used: stored + this.capturedInBatch(spec.memberId, window.start), reached: false };
    }
    this.limits.set(key, state);
    this.changed.add(key);
    this.removed.delete(key);
    return ok(state);
  }

  /**
   * A plan change moved the allowance period (a first plan, or a new billing period starting now):
   * each BILLING_PERIOD limit now counts from the new period's start, which is this instant, so
   * only holds started at this very instant (a test clock stands still between calls) were
   * captured in it. Their credits were read before the batch (backfill, keyed by this instant)
   * and this batch's own Commits are added; without that read, the counter starts from this batch's.
   */
  rebase(at: Date, subscription: Subscription | null): void {
    for (const limit of this.limits.values()) {
      if (limit.period !== "BILLING_PERIOD") continue;
      const start = spendWindow(limit, at, subscription).start;
      if (start.getTime() === limit.periodStart.getTime()) continue;
      const stored = this.backfill.get(backfillKey(limit.memberId, start)) ?? 0n;
      limit.periodStart = start;
      limit.used = stored + this.capturedInBatch(limit.memberId, start);
      limit.reached = false;
      this.changed.add(limitKey(limit.memberId, limit.period));
    }
  }

  /** What this batch's Commits captured for the scope from holds started at or after `since`. */
  private capturedInBatch(memberId: string, since: Date): bigint {
    return this.captures
      .filter((c) => (memberId === "" || c.memberId === memberId) && c.startedAt.getTime() >= since.getTime())
      .reduce((sum, c) => sum + c.amount, 0n);
  }

  remove(memberId: string, period: SpendPeriod): Result<SpendLimitState> {
    const key = limitKey(memberId, period);
    const limit = this.limits.get(key);
    if (!limit) {
      const scope = memberId === "" ? "the account" : `member ${memberId}`;
      return fail("SPEND_LIMIT_NOT_FOUND", `${scope} has no ${period} spend limit`, { member_id: memberId, period });
    }
    this.limits.delete(key);
    this.changed.delete(key);
    this.removed.set(key, limit);
    return ok(limit);
  }

  /** Moves a counter to the period starting at `start` (0 used, not passed) if it counted an earlier one. */
  private roll(limit: SpendLimitState, start: Date, usedNow: bigint): void {
    if (limit.periodStart.getTime() === start.getTime()) return;
    limit.periodStart = start;
    limit.used = usedNow;
    limit.reached = false;
    this.changed.add(limitKey(limit.memberId, limit.period));
  }
}

function clamp(n: bigint): bigint {
  return n > 0n ? n : 0n;
}

function exceeded(v: SpendView, requested: bigint): Result<never> {
  const scope = v.memberId === "" ? "the account" : `member ${v.memberId}`;
  return fail(
    "SPEND_LIMIT_EXCEEDED",
    `${scope} has used ${v.used} and holds ${v.held} of its ${v.period} limit of ${v.maxCredits} credits; ${requested} more would pass it`,
    {
      scope: v.memberId === "" ? "account" : "member",
      member_id: v.memberId,
      period: v.period,
      limit: String(v.maxCredits),
      used: String(v.used),
      held: String(v.held),
      requested: String(requested),
      resets_at: v.resetsAt ? v.resetsAt.toISOString() : "",
    },
  );
}
