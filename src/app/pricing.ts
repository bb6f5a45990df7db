import { type Quote, quote as priceSpec, type GenerationSpec, type RateCard } from "../domain/pricing.js";
import type { TopUpPack } from "../domain/grants.js";
import { type AppDeps, type Reply, refuse } from "./deps.js";
import type { Encode } from "./holds.js";

/** Quote: the price of a generation with the current rate card (and the account's pricing if named). */
export async function quote(deps: AppDeps, spec: GenerationSpec, accountId: string | null, encode: Encode<Quote>): Promise<Reply> {
  let permille = 1000;
  if (accountId !== null) {
    const found = await deps.pricing.get(accountId);
    if (found === null) return refuse("ACCOUNT_NOT_FOUND", `account ${accountId} not found`, { account_id: accountId });
    permille = found;
  }
  const priced = priceSpec(deps.rateCards.current, spec, permille);
  return priced.ok ? { ok: true, bytes: encode(priced.value) } : { ok: false, failure: priced.failure };
}

/** GetRateCard: the current card and the default top-up packs. */
export function getRateCard(deps: AppDeps, encode: Encode<{ card: RateCard; packs: readonly TopUpPack[] }>): Reply {
  return { ok: true, bytes: encode({ card: deps.rateCards.current, packs: [...deps.topUpPacks.values()] }) };
}

/** SetAccountPricing: a business account's multiplier on rate card prices, for new quotes and holds. */
export async function setAccountPricing(deps: AppDeps, accountId: string, permille: number, encode: Encode<number>): Promise<Reply> {
  if (!(await deps.pricing.set(accountId, permille))) {
    return refuse("ACCOUNT_NOT_FOUND", `account ${accountId} not found`, { account_id: accountId });
  }
  return { ok: true, bytes: encode(permille) };
}
