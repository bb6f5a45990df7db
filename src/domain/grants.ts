import type { AccountBook } from "./account-book.js";
import { grantWithinLimit } from "./balance-limit.js";
import { type Bucket, boundedSourceRef } from "./bucket.js";
import { addMonths } from "./calendar.js";
import { ok, type Result } from "./errors.js";

export interface Money {
  readonly currencyCode: string;
  readonly amountMinor: bigint;
}

/** A pack of credits a customer can buy. Business custom packs use the same shape. */
export interface TopUpPack {
  readonly packId: string;
  readonly credits: bigint;
  readonly price: Money;
  /** Calendar months from purchase until the pack's unspent credits expire. */
  readonly validityMonths: number;
}

export interface TopUpPurchase {
  readonly bucketId: string;
  readonly pack: TopUpPack;
  readonly paymentReference: string;
  /** What else the GRANT entry records (an auto top-up's request id). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** The pack's price is not known here (an auto top-up sized by target: billing prices it): the entry records none. */
  readonly unpriced?: boolean;
}

/**
 * A top-up is a new TOP_UP bucket, usable at once, expiring `validityMonths` calendar months after
 * purchase; BALANCE_LIMIT if it would take the account past the cap.
 */
export function purchaseTopUp(book: AccountBook, purchase: TopUpPurchase, now: Date): Result<Bucket> {
  const limited = grantWithinLimit(book, purchase.pack.credits, now);
  if (!limited.ok) return limited;
  const bucket = emptyBucket(book, purchase.bucketId, "TOP_UP", now, addMonths(now, purchase.pack.validityMonths), `pack:${purchase.pack.packId};payment:${purchase.paymentReference}`, purchase.pack.credits);
  book.addBucket(bucket, "GRANT", {
    pack_id: purchase.pack.packId,
    payment_reference: purchase.paymentReference,
    ...(purchase.unpriced ? {} : { price: `${purchase.pack.price.amountMinor} ${purchase.pack.price.currencyCode}` }),
    ...purchase.metadata,
  });
  return ok(bucket);
}

export interface Adjustment {
  readonly bucketId: string;
  readonly amount: bigint;
  readonly expiresAt: Date | null;
  readonly reason: string;
  readonly actor: string;
}

/**
 * Support grants credits as a new ADJUSTMENT bucket, recorded with who did it and why (the whole
 * reason on the ADJUST entry, a bounded copy in the bucket's reference); BALANCE_LIMIT if it
 * would take the account past the cap.
 */
export function grantAdjustment(book: AccountBook, adjustment: Adjustment, now: Date): Result<Bucket> {
  const limited = grantWithinLimit(book, adjustment.amount, now);
  if (!limited.ok) return limited;
  const sourceRef = boundedSourceRef(`adjustment:${adjustment.reason}`);
  const bucket = emptyBucket(book, adjustment.bucketId, "ADJUSTMENT", now, adjustment.expiresAt, sourceRef, adjustment.amount);
  book.addBucket(bucket, "ADJUST", { reason: adjustment.reason, actor: adjustment.actor });
  return ok(bucket);
}

function emptyBucket(
  book: AccountBook,
  id: string,
  kind: Bucket["kind"],
  now: Date,
  expiresAt: Date | null,
  sourceRef: string,
  granted: bigint,
): Bucket {
  return {
    id,
    accountId: book.accountId,
    kind,
    granted,
    remaining: 0n,
    held: 0n,
    validFrom: now,
    expiresAt,
    sourceRef,
    createdAt: now,
  };
}
