import type { AccountBook } from "../domain/account-book.js";
import { ok, type Result } from "../domain/errors.js";
import { grantAdjustment, purchaseTopUp as addTopUp, type TopUpPack } from "../domain/grants.js";
import type { AdjustCreditsAction, GrantResult, PurchaseTopUpAction } from "./commands.js";
import { type AppDeps, type Reply, refuse } from "./deps.js";
import { mutate } from "./idempotent.js";
import type { IdempotencyClaim } from "./ports.js";

export type { GrantResult } from "./commands.js";

export interface PurchaseTopUpInput {
  readonly accountId: string;
  /** A catalog pack id, or a custom pack (business accounts). */
  readonly pack: { readonly packId: string } | { readonly custom: Omit<TopUpPack, "packId"> };
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

/** PurchaseTopUp: one payment reference, one TOP_UP bucket. The account is created if new. */
export async function purchaseTopUp(deps: AppDeps, input: PurchaseTopUpInput): Promise<Reply> {
  const pack =
    "packId" in input.pack
      ? (deps.topUpPacks.get(input.pack.packId) ?? (await deps.plans.findTopUpPack(input.accountId, input.pack.packId)))
      : { packId: "custom", ...input.pack.custom };
  if (!pack) {
    const packId = "packId" in input.pack ? input.pack.packId : "";
    return refuse("PACK_NOT_FOUND", `top-up pack ${packId} does not exist`, { pack_id: packId });
  }
  const action: PurchaseTopUpAction = { kind: "PurchaseTopUp", bucketId: deps.newId(), pack, paymentReference: input.claim.key };
  return mutate(deps, { target: { accountId: input.accountId }, createAccount: true, idempotency: input.claim, caller: input.caller, action });
}

export function applyPurchaseTopUp(book: AccountBook, action: PurchaseTopUpAction, now: Date): Result<GrantResult> {
  const added = addTopUp(book, action, now);
  return added.ok ? ok({ bucket: added.value, balance: book.balance(now), price: action.pack.price }) : added;
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
export async function adjustCredits(deps: AppDeps, input: AdjustCreditsInput): Promise<Reply> {
  const now = deps.clock.now();
  if (input.expiresAt && input.expiresAt.getTime() <= now.getTime()) {
    return refuse("INVALID_FIELD", "expires_at must be in the future", { field: "expires_at" });
  }
  const action: AdjustCreditsAction = {
    kind: "AdjustCredits",
    bucketId: deps.newId(),
    amount: input.amount,
    expiresAt: input.expiresAt,
    reason: input.reason,
    actor: input.caller,
  };
  return mutate(deps, { target: { accountId: input.accountId }, createAccount: true, idempotency: input.claim, caller: input.caller, action });
}

export function applyAdjustCredits(book: AccountBook, action: AdjustCreditsAction, now: Date): Result<GrantResult> {
  const granted = grantAdjustment(book, action, now);
  return granted.ok ? ok({ bucket: granted.value, balance: book.balance(now), price: null }) : granted;
}
