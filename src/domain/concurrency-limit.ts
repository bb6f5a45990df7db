import { fail, ok, type Result } from "./errors.js";

/**
 * Caps on running holds (issue "Spend controls for teams"): for one member of an account, or
 * (member "") for the whole account, the number of holds that may run at once and the credits
 * they may hold together; 0 is no cap. Reserve checks every cap that applies to its member — the
 * account's and the member's own — under the account's lock, with the hold it would add, so no
 * concurrency can overshoot a cap.
 *
 * What runs is not counted in a stored counter: the book is loaded with the running holds of the
 * account summed per member (an index range over the account's open holds), so the figure cannot
 * drift from the reservations. The book keeps the sums current while a batch of commands runs
 * (a hold reserved or settled earlier in the batch counts for the commands after it).
 */
export interface ConcurrencyLimit {
  readonly memberId: string;
  readonly maxOpenHolds: number;
  readonly maxHeldCredits: bigint;
}

/** Running holds of one scope. */
export interface Running {
  openHolds: number;
  heldCredits: bigint;
}

/** A scope's caps with what runs there now, as answers and GetSpendLimits show them. */
export interface ConcurrencyView extends ConcurrencyLimit {
  readonly openHolds: number;
  readonly heldCredits: bigint;
}

/** The most cap rows one account may have (its own and its members'): the book loads them all. */
export const MAX_CONCURRENCY_LIMITS = 200;

/** The largest max_open_holds accepted (a cap above it would be no cap). */
export const MAX_OPEN_HOLDS_CAP = 1_000_000;

const NONE: Running = { openHolds: 0, heldCredits: 0n };

/**
 * The caps of an account and its running holds per member ("" sums every member's, the
 * account's total). Only loaded, and only kept, for an account that has at least one cap.
 */
export class AccountConcurrency {
  readonly limits = new Map<string, ConcurrencyLimit>();
  readonly running = new Map<string, Running>();
  /** Members whose cap was set by this change record (persisted with the book). */
  readonly changed = new Set<string>();

  constructor(limits: readonly ConcurrencyLimit[], running: ReadonlyMap<string, Running>) {
    for (const l of limits) this.limits.set(l.memberId, l);
    for (const [member, r] of running) this.running.set(member, { ...r });
  }

  /** Running holds of a scope ("" = the account). */
  runningOf(memberId: string): Running {
    return this.running.get(memberId) ?? NONE;
  }

  view(memberId: string): ConcurrencyView {
    const limit = this.limits.get(memberId) ?? { memberId, maxOpenHolds: 0, maxHeldCredits: 0n };
    const r = this.runningOf(memberId);
    return { ...limit, openHolds: r.openHolds, heldCredits: r.heldCredits };
  }

  /** A hold of `amount` for `memberId` may start: every cap that applies (the account's, then the member's) leaves room for it. */
  admits(memberId: string, amount: bigint): Result<void> {
    for (const scope of memberId === "" ? [""] : ["", memberId]) {
      const limit = this.limits.get(scope);
      if (!limit) continue;
      const r = this.runningOf(scope);
      if (limit.maxOpenHolds > 0 && r.openHolds + 1 > limit.maxOpenHolds) return refused(limit, "max_open_holds", String(limit.maxOpenHolds), r);
      if (limit.maxHeldCredits > 0n && r.heldCredits + amount > limit.maxHeldCredits) return refused(limit, "max_held_credits", String(limit.maxHeldCredits), r);
    }
    return ok(undefined);
  }

  /** A hold started (+1) or settled (−1) for `memberId`: its scope and the account's total move. */
  count(memberId: string, heldAmount: bigint, direction: 1 | -1): void {
    for (const scope of memberId === "" ? [""] : ["", memberId]) {
      const r = this.running.get(scope) ?? { openHolds: 0, heldCredits: 0n };
      r.openHolds += direction;
      r.heldCredits += direction === 1 ? heldAmount : -heldAmount;
      this.running.set(scope, r);
    }
  }

  /** Sets (or, with both caps 0, keeps as "no cap") a scope's caps. */
  set(limit: ConcurrencyLimit): Result<void> {
    if (!this.limits.has(limit.memberId) && this.limits.size >= MAX_CONCURRENCY_LIMITS) {
      return fail("INVALID_FIELD", `member_id: the account has ${MAX_CONCURRENCY_LIMITS} concurrency limits, its most`, { field: "member_id" });
    }
    this.limits.set(limit.memberId, limit);
    this.changed.add(limit.memberId);
    return ok(undefined);
  }
}

function refused(limit: ConcurrencyLimit, cap: string, value: string, r: Running): Result<never> {
  const scope = limit.memberId === "" ? "account" : `member ${limit.memberId}`;
  return fail("CONCURRENCY_LIMIT_EXCEEDED", `the ${scope} has ${r.openHolds} holds running with ${r.heldCredits} credits held: ${cap} is ${value}`, {
    scope: limit.memberId === "" ? "account" : "member",
    member_id: limit.memberId,
    cap,
    limit: value,
    open_holds: String(r.openHolds),
    held_credits: String(r.heldCredits),
  });
}
