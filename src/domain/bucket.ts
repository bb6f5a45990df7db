import { MAX_SOURCE_REF_BYTES } from "./limits.js";

export type BucketKind = "SUBSCRIPTION" | "TOP_UP" | "ADJUSTMENT";

/**
 * One grant of credits. `remaining` counts credits not yet captured or expired, including
 * the `held` ones; `remaining - held` is what a new hold can take.
 */
export interface Bucket {
  readonly id: string;
  readonly accountId: string;
  readonly kind: BucketKind;
  granted: bigint;
  remaining: bigint;
  held: bigint;
  readonly validFrom: Date;
  /** Fixed at grant; only a billing-period change cuts it short (AccountBook.closeBucket). */
  expiresAt: Date | null;
  readonly sourceRef: string;
  readonly createdAt: Date;
  /** CREDITS_EXPIRING was stated for it (domain/expiry-notice.ts); absent on a new bucket: not yet. */
  expiryNoticed?: boolean;
}

/** A bucket's credits can be held only inside its validity window [validFrom, expiresAt). */
export function isUsable(bucket: Bucket, now: Date): boolean {
  return bucket.validFrom.getTime() <= now.getTime() && !isExpired(bucket, now);
}

export function isExpired(bucket: Bucket, now: Date): boolean {
  return bucket.expiresAt !== null && bucket.expiresAt.getTime() <= now.getTime();
}

/** Credits of the bucket that are neither held nor spent. */
export function freeCredits(bucket: Bucket): bigint {
  return bucket.remaining - bucket.held;
}

const KIND_RANK: Readonly<Record<BucketKind, number>> = { TOP_UP: 0, ADJUSTMENT: 1, SUBSCRIPTION: 2 };

/**
 * THE consumption order, the only place it is written: top-ups first, then adjustments, then
 * the subscription allowance; within a kind the earliest expiry first (never-expiring last),
 * then the oldest, then by id so that the order is total.
 */
export function compareConsumption(a: Bucket, b: Bucket): number {
  const byKind = KIND_RANK[a.kind] - KIND_RANK[b.kind];
  if (byKind !== 0) return byKind;
  const aExp = a.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY;
  const bExp = b.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY;
  if (aExp !== bExp) return aExp < bExp ? -1 : 1;
  const byAge = a.createdAt.getTime() - b.createdAt.getTime();
  if (byAge !== 0) return byAge;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * A source reference no longer than MAX_SOURCE_REF_BYTES in UTF-8: a longer one is cut at a
 * character boundary and ends with "…". Applied when a bucket is made and again when one is
 * answered, so references stored before the bound never make an answer larger either.
 */
export function boundedSourceRef(ref: string): string {
  // Fast path: even at three bytes per UTF-16 unit it fits.
  if (ref.length * 3 <= MAX_SOURCE_REF_BYTES) return ref;
  const room = MAX_SOURCE_REF_BYTES - ELLIPSIS_BYTES;
  let bytes = 0;
  let end = 0;
  let cut = -1;
  for (const char of ref) {
    const size = utf8Size(char.codePointAt(0)!);
    if (cut < 0 && bytes + size > room) cut = end;
    bytes += size;
    if (bytes > MAX_SOURCE_REF_BYTES) return `${ref.slice(0, cut)}…`;
    end += char.length;
  }
  return ref;
}

const ELLIPSIS_BYTES = 3;

function utf8Size(codePoint: number): number {
  return codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4;
}
