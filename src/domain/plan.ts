import type { Money } from "./grants.js";

export type BillingInterval = "MONTH" | "YEAR";

/**
 * One version of a plan. Prices are per billing interval; the allowance is monthly whatever the
 * interval (a yearly plan grants it month by month). A subscriber keeps the version it bought.
 */
export interface Plan {
  readonly planId: string;
  readonly version: number;
  readonly name: string;
  readonly monthlyAllowance: bigint;
  readonly price: Money;
  readonly interval: BillingInterval;
  /** Set for a business plan made for one account; null for the public catalog. */
  readonly accountId: string | null;
}

/** Two plan versions describe the same offer (used to decide whether a catalog change needs a new version). */
export function sameTerms(a: Omit<Plan, "version">, b: Omit<Plan, "version">): boolean {
  return (
    a.planId === b.planId &&
    a.name === b.name &&
    a.monthlyAllowance === b.monthlyAllowance &&
    a.price.amountMinor === b.price.amountMinor &&
    a.price.currencyCode === b.price.currencyCode &&
    a.interval === b.interval &&
    a.accountId === b.accountId
  );
}
