import type { AlertPolicy } from "../domain/balance-alert.js";
import type { AutoTopUpPolicy } from "../domain/auto-top-up.js";
import type { BalanceCache } from "./balance-cache.js";
import type { Clock } from "../domain/clock.js";
import type { Failure } from "../domain/errors.js";
import type { TopUpPack } from "../domain/grants.js";
import type { AccountPricing, IdempotencyCache, LedgerStore, PlanCatalog, RateCards } from "./ports.js";

/** What the use cases need from the outside world, wired once in main.ts. */
export interface AppDeps {
  readonly store: LedgerStore;
  readonly cache: IdempotencyCache;
  /** GetBalance answers of accounts unchanged since they were read. */
  readonly balances: BalanceCache;
  readonly clock: Clock;
  /** New server-assigned ids (reservations, buckets). */
  readonly newId: () => string;
  readonly topUpPacks: ReadonlyMap<string, TopUpPack>;
  readonly plans: PlanCatalog;
  readonly rateCards: RateCards;
  readonly pricing: AccountPricing;
  /** Test clocks are refused in production. */
  readonly testClocksEnabled: boolean;
  /** Balance alerts' default (BALANCE_ALERT_DEFAULT_PERCENT). */
  readonly alerts: AlertPolicy;
  /** Auto top-up's settings (AUTO_TOP_UP_MAX_FAILURES, AUTO_TOP_UP_REQUEST_TIMEOUT). */
  readonly autoTopUp: AutoTopUpPolicy;
}

/** A use case's answer: the encoded response (fresh or replayed) or an expected failure. */
export type Reply = { readonly ok: true; readonly bytes: Uint8Array } | { readonly ok: false; readonly failure: Failure };

export function refuse(reason: Failure["reason"], message: string, metadata: Record<string, string> = {}): Reply {
  return { ok: false, failure: { reason, message, metadata } };
}
