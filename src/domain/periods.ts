import { addMonths } from "./calendar.js";
import type { BillingInterval } from "./plan.js";

export interface Period {
  readonly start: Date;
  readonly end: Date;
}

/**
 * The index k of the allowance period containing `now`: periods are monthly from the billing
 * anchor, [anchor + k months, anchor + (k+1) months), with month-end clamping counted from the
 * anchor each time (Jan 31 → Feb 28 → Mar 31).
 */
export function allowancePeriodIndex(anchor: Date, now: Date): number {
  if (now.getTime() < anchor.getTime()) throw new RangeError("now is before the billing anchor");
  let k = (now.getUTCFullYear() - anchor.getUTCFullYear()) * 12 + (now.getUTCMonth() - anchor.getUTCMonth());
  while (k > 0 && addMonths(anchor, k).getTime() > now.getTime()) k -= 1;
  while (addMonths(anchor, k + 1).getTime() <= now.getTime()) k += 1;
  return k;
}

export function allowancePeriod(anchor: Date, index: number): Period {
  return { start: addMonths(anchor, index), end: addMonths(anchor, index + 1) };
}

/** The billing period containing `now`: the allowance period on a monthly plan, the anchor year on a yearly one. */
export function billingPeriod(anchor: Date, interval: BillingInterval, now: Date): Period {
  const k = allowancePeriodIndex(anchor, now);
  if (interval === "MONTH") return allowancePeriod(anchor, k);
  const year = Math.floor(k / 12);
  return { start: addMonths(anchor, 12 * year), end: addMonths(anchor, 12 * (year + 1)) };
}

/**
 * `amountMinor × remaining / total`, rounded to the nearest minor unit with halves away from
 * zero (12.5 cents → 13, −12.5 → −13). Integer arithmetic only.
 */
export function prorate(amountMinor: bigint, remainingMs: number, totalMs: number): bigint {
  if (totalMs <= 0 || remainingMs < 0 || remainingMs > totalMs) throw new RangeError("bad proration window");
  const numerator = amountMinor * BigInt(Math.round(remainingMs));
  const denominator = BigInt(Math.round(totalMs));
  const negative = numerator < 0n;
  const abs = negative ? -numerator : numerator;
  const rounded = (2n * abs + denominator) / (2n * denominator);
  return negative ? -rounded : rounded;
}
