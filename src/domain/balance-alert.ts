import type { AccountBook } from "./account-book.js";
import { invariant } from "./errors.js";

/**
 * Balance alerts (docs/events.md "Balance alerts"): an account's available credits are watched
 * against a threshold, and the change record that crosses a line states it, once:
 *
 *   ARMED ──available < threshold──▶ LOW ──available = 0──▶ EXHAUSTED
 *     ▲                                 │                       │
 *     └────── available ≥ threshold + hysteresis (BALANCE_RECOVERED) ◀──┘
 *
 * A fall straight from above the threshold to 0 states BALANCE_LOW and then BALANCE_EXHAUSTED (a
 * consumer that listens for LOW alone still hears it). Nothing is stated again while the account
 * stays below the line, whatever happens there: only recovering past the hysteresis re-arms it,
 * so a balance that hovers around the threshold does not flap.
 */

/** What an account's alert was set to: a fixed number of credits, or a percent of its plan's monthly allowance. */
export type AlertThreshold = { readonly kind: "credits"; readonly credits: bigint } | { readonly kind: "percent"; readonly percent: number };

export type AlertState = "ARMED" | "LOW" | "EXHAUSTED";

/** The alert as stored with the account: what was set (null: the default applies) and where it stands. */
export interface BalanceAlert {
  threshold: AlertThreshold | null;
  state: AlertState;
}

/** The server's alert settings (configuration). */
export interface AlertPolicy {
  /** Percent of the plan's monthly allowance for accounts with a plan and no alert of their own; 0: no default. */
  readonly defaultPercent: number;
}

export const NO_ALERT_DEFAULT: AlertPolicy = { defaultPercent: 0 };

/** An account's alert as answers and events show it. */
export interface AlertView {
  readonly threshold: AlertThreshold | null;
  /** The default applies (no alert of its own). */
  readonly isDefault: boolean;
  /** The threshold in credits now; null: none applies (a percent without a plan, or no default). */
  readonly thresholdCredits: bigint | null;
  readonly recoverAt: bigint | null;
  readonly state: AlertState;
}

export const MAX_ALERT_PERCENT = 100;

/** A percent threshold is 1 to 100; a credits threshold is not negative (0: only EXHAUSTED fires). */
export function validThreshold(threshold: AlertThreshold): boolean {
  return threshold.kind === "credits" ? threshold.credits >= 0n : Number.isInteger(threshold.percent) && threshold.percent >= 1 && threshold.percent <= MAX_ALERT_PERCENT;
}

/**
 * The hysteresis above the threshold before the alert re-arms: a tenth of the threshold (rounded
 * down), at least 1 credit. Enough that a few credits returned by a Release do not re-arm an alert
 * that the next Reserve would fire again.
 */
export function hysteresis(threshold: bigint): bigint {
  const tenth = threshold / 10n;
  return tenth > 1n ? tenth : 1n;
}

/**
 * The threshold in credits that applies to the book now: its own (a percent is of the current
 * plan's monthly allowance, rounded down), or the default percent for an account with a plan.
 * null: no alert applies. A percent that comes to 0 credits (a plan with no allowance) is none.
 */
export function thresholdCredits(book: AccountBook, policy: AlertPolicy): bigint | null {
  const own = book.alert.threshold;
  if (own?.kind === "credits") return own.credits;
  const percent = own?.kind === "percent" ? own.percent : policy.defaultPercent;
  const allowance = book.subscription?.plan.monthlyAllowance;
  if (percent <= 0 || allowance === undefined) return null;
  const credits = (allowance * BigInt(percent)) / 100n;
  return credits > 0n ? credits : null;
}

export function describeAlert(book: AccountBook, policy: AlertPolicy): AlertView {
  const threshold = thresholdCredits(book, policy);
  return {
    threshold: book.alert.threshold,
    isDefault: book.alert.threshold === null,
    thresholdCredits: threshold,
    recoverAt: threshold === null ? null : threshold + hysteresis(threshold),
    state: book.alert.state,
  };
}

/** The transitions of the cycle above: the state after `available`, and the events crossing to it states, in order. */
export function crossing(state: AlertState, available: bigint, threshold: bigint): { state: AlertState; events: ("BALANCE_LOW" | "BALANCE_EXHAUSTED" | "BALANCE_RECOVERED")[] } {
  invariant(available >= 0n && threshold >= 0n, "alert amounts are not negative");
  switch (state) {
    case "ARMED":
      if (available === 0n) return { state: "EXHAUSTED", events: threshold > 0n ? ["BALANCE_LOW", "BALANCE_EXHAUSTED"] : ["BALANCE_EXHAUSTED"] };
      if (available < threshold) return { state: "LOW", events: ["BALANCE_LOW"] };
      return { state, events: [] };
    case "LOW":
      if (available === 0n) return { state: "EXHAUSTED", events: ["BALANCE_EXHAUSTED"] };
      if (available >= threshold + hysteresis(threshold)) return { state: "ARMED", events: ["BALANCE_RECOVERED"] };
      return { state, events: [] };
    case "EXHAUSTED":
      if (available >= threshold + hysteresis(threshold)) return { state: "ARMED", events: ["BALANCE_RECOVERED"] };
      return { state, events: [] };
  }
}

/**
 * Judges the book's available credits at `now` against its alert and states the crossing, if
 * any, as events of the change record being written (app/apply.ts runs it after every command
 * or due work that changed the book, so the events carry that change's sequence and commit with
 * it). With no threshold nothing is stated and the state is kept as it is.
 */
export function checkBalanceAlert(book: AccountBook, now: Date, policy: AlertPolicy): void {
  const threshold = thresholdCredits(book, policy);
  if (threshold === null) return;
  const available = book.available(now);
  const next = crossing(book.alert.state, available, threshold);
  if (next.events.length === 0) return;
  book.setAlertState(next.state);
  const view = describeAlert(book, policy);
  for (const kind of next.events) book.emit({ kind, available, alert: view });
}

/** SetBalanceAlert's rule: sets the account's own threshold (a change record, BALANCE_ALERT_SET) and judges the balance on it at once. */
export function setBalanceAlert(book: AccountBook, threshold: AlertThreshold, now: Date, policy: AlertPolicy): AlertView {
  invariant(validThreshold(threshold), "the alert threshold was validated at the edge");
  book.setAlertThreshold(threshold);
  book.emit({ kind: "BALANCE_ALERT_SET", available: book.available(now), alert: describeAlert(book, policy) });
  checkBalanceAlert(book, now, policy);
  return describeAlert(book, policy);
}
