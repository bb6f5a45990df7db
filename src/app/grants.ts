import type { BalanceView } from "../domain/account-book.js";
import type { Bucket } from "../domain/bucket.js";
import { grantAdjustment, purchaseTopUp as addTopUp, type TopUpPack } from "../domain/grants.js";
import { type AppDeps, type Reply, refuse } from "./deps.js";
import type { Encode } from "./holds.js";
import { mutate } from "./idempotent.js";
import type { IdempotencyClaim } from "./ports.js";

/** A new bucket and the balance after it. */
export interface GrantResult {
  readonly bucket: Bucket;
  readonly balance: BalanceView;
  readonly price: TopUpPack["price"] | null;
}

export interface PurchaseTopUpInput {
  readonly accountId: string;
  /** A catalog pack id, or a custom pack (business accounts). */
  readonly pack: { readonly packId: string } | { readonly custom: Omit<TopUpPack, "packId"> };
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

/** PurchaseTopUp: one payment reference, one TOP_UP bucket. The account is created if new. */
export async function purchaseTopUp(deps: AppDeps, input: PurchaseTopUpInput, encode: Encode<GrantResult>): Promise<Reply> {
  const pack =
    "packId" in input.pack
      ? (deps.topUpPacks.get(input.pack.packId) ?? (await deps.plans.findTopUpPack(input.accountId, input.pack.packId)))
      : { packId: "custom", ...input.pack.custom };
  if (!pack) {
    const packId = "packId" in input.pack ? input.pack.packId : "";
    return refuse("PACK_NOT_FOUND", `top-up pack ${packId} does not exist`, { pack_id: packId });
  }
  const bucketId = deps.newId();
  const paymentReference = input.claim.key;
  return mutate(deps, input.accountId, {
    target: { accountId: input.accountId },
    createAccount: true,
    idempotency: input.claim,
    caller: input.caller,
    run: (book, now) => addTopUp(book, { bucketId, pack, paymentReference }, now),
    encode: (bucket, book, now) => encode({ bucket, balance: book.balance(now), price: pack.price }),
  });
}

export interface AdjustCreditsInput {
  readonly accountId: string;
  readonly amount: bigint;
  readonly expiresAt: Date | null;
  readonly reason: string;
  readonly claim: IdempotencyClaim;
  /** The support agent or tool that made the adjustment. */
  readonly caller: string;
}

/** AdjustCredits: support grants an ADJUSTMENT bucket, recorded with actor and reason. */
export async function adjustCredits(deps: AppDeps, input: AdjustCreditsInput, encode: Encode<GrantResult>): Promise<Reply> {
  const now = deps.clock.now();
  if (input.expiresAt && input.expiresAt.getTime() <= now.getTime()) {
    return refuse("INVALID_FIELD", "expires_at must be in the future", { field: "expires_at" });
  }
  const bucketId = deps.newId();
  return mutate(deps, input.accountId, {
    target: { accountId: input.accountId },
    createAccount: true,
    idempotency: input.claim,
    caller: input.caller,
    run: (book, at) => grantAdjustment(book, { bucketId, amount: input.amount, expiresAt: input.expiresAt, reason: input.reason, actor: input.caller }, at),
    encode: (bucket, book, at) => encode({ bucket, balance: book.balance(at), price: null }),
  });
}
