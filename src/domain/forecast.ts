import type { AccountBook } from "./account-book.js";
import type { Bucket } from "./bucket.js";
import { describe } from "./subscription.js";

/**
 * ForecastBalance (issue "Usage for the dashboard"): at the recent pace, when the account's
 * available credits run out and which credits expire before they are used. Deterministic for a
 * given ledger and clock: integer credits and milliseconds only.
 *
 * - Pace: credits captured over the last 7 days (or, for a younger account, over its age in whole
 *   days, at least one), per day, evenly weighted: a week covers a team's weekly rhythm, and an
 *   even weight keeps one busy afternoon from swinging the answer. Days end at the current
 *   hour's end (the hourly level of the rollup, read in a few hundred rows).
 * - The available credits are drained at that pace in consumption order (top-ups, then
 *   adjustments, then the allowance; sooner-expiring first within a kind), and a bucket that
 *   reaches its expiry with credits left loses them: those are `expiringUnused`.
 * - Up to the next reset (the allowance period's end, when the next allowance is granted and the
 *   forecast would start over) or, without a plan, 400 days. Held credits are not counted: they
 *   are neither available nor spent yet.
 */
export const PACE_WINDOW_DAYS = 7;
export const NO_PLAN_HORIZON_MS = 400 * 86_400_000;
const DAY = 86_400_000n;

export interface ExpiringUnused {
  readonly bucket: Bucket;
  readonly amount: bigint;
  readonly expiresAt: Date;
}

export interface Forecast {
  readonly runsOutAt: Date | null;
  readonly nextResetAt: Date | null;
  readonly burnRatePerDay: bigint;
  readonly expiringUnused: ExpiringUnused[];
  readonly asOf: Date;
}

/** The days the pace is measured over, ending now, for an account created at `createdAt` (by its clock). */
export function paceWindowDays(at: Date, createdAt: Date): number {
  const age = Math.ceil((at.getTime() - createdAt.getTime()) / 86_400_000);
  return Math.max(1, Math.min(PACE_WINDOW_DAYS, age));
}

/** `perDay[i]`: credits captured in the i-th day back from now (0: the latest); the first `days` of them make the pace. */
export function forecast(book: AccountBook, at: Date, perDay: readonly bigint[], days: number): Forecast {
  const consumed = perDay.slice(0, days).reduce((a, b) => a + b, 0n);
  const rate = consumed / BigInt(days);
  const nextResetAt = book.subscription ? describe(book.subscription, at).allowancePeriod.end : null;
  const horizon = nextResetAt?.getTime() ?? at.getTime() + NO_PLAN_HORIZON_MS;
  const queue = book
    .usableBuckets(at)
    .map((bucket) => ({ bucket, free: bucket.remaining - bucket.held }))
    .filter((q) => q.free > 0n);
  const expiringUnused: ExpiringUnused[] = [];
  let t = at.getTime();
  // Buckets whose expiry has come by `t` lose what is left in them.
  const expire = () => {
    for (let i = 0; i < queue.length; ) {
      const q = queue[i]!;
      const exp = q.bucket.expiresAt?.getTime();
      if (exp !== undefined && exp <= t) {
        expiringUnused.push({ bucket: q.bucket, amount: q.free, expiresAt: q.bucket.expiresAt! });
        queue.splice(i, 1);
      } else i++;
    }
  };
  while (queue.length > 0 && t < horizon) {
    const nextExpiry = Math.min(horizon, ...queue.map((q) => q.bucket.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY));
    const current = queue[0]!;
    if (rate > 0n) {
      // Milliseconds to drain the current bucket, rounded up: its last credit is gone by then.
      const drain = Number((current.free * DAY + rate - 1n) / rate);
      if (t + drain <= nextExpiry) {
        t += drain;
        queue.shift();
        expire();
        continue;
      }
      current.free -= (BigInt(nextExpiry - t) * rate) / DAY;
    }
    t = nextExpiry;
    expire();
  }
  // What is left at the horizon and expires there (an allowance at its period's end) is lost too.
  if (t >= horizon) expire();
  const runsOutAt = rate > 0n && queue.length === 0 && t < horizon ? new Date(t) : null;
  return { runsOutAt, nextResetAt, burnRatePerDay: rate, expiringUnused, asOf: at };
}
