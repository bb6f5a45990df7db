import type { TopUpPack } from "./grants.js";

/**
 * The default top-up catalog. Each pack's credits expire 2 calendar months after purchase.
 * Business accounts buy custom packs (size, price, validity) through PurchaseTopUp.custom_pack.
 */
export const DEFAULT_TOP_UP_PACKS: readonly TopUpPack[] = [
  { packId: "topup-500", credits: 500n, price: { currencyCode: "USD", amountMinor: 500n }, validityMonths: 2 },
  { packId: "topup-1000", credits: 1_000n, price: { currencyCode: "USD", amountMinor: 900n }, validityMonths: 2 },
  { packId: "topup-5000", credits: 5_000n, price: { currencyCode: "USD", amountMinor: 4_000n }, validityMonths: 2 },
  { packId: "topup-20000", credits: 20_000n, price: { currencyCode: "USD", amountMinor: 15_000n }, validityMonths: 2 },
];
