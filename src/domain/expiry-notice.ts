import type { AccountBook } from "./account-book.js";
import { type Bucket, freeCredits, isUsable } from "./bucket.js";

/**
 * CREDITS_EXPIRING: a notice, once per bucket, that credits someone paid for or was given will
 * expire unused — stated when the account's clock reaches `expires_at − notice` while the bucket
 * still has free credits. SUBSCRIPTION buckets get none: their allowance resets each period (a
 * fresh one replaces it), it is not credits running out. A bucket whose credits are all held at
 * that instant gets its notice once a hold returns some (if it has not expired by then).
 */

/** The instant the bucket's notice falls due; null when it gets none (noticed already, no expiry, a subscription, nothing free). */
export function expiryNoticeAt(bucket: Bucket, noticeMs: number): Date | null {
  if (noticeMs <= 0 || bucket.kind === "SUBSCRIPTION" || bucket.expiresAt === null || bucket.expiryNoticed || freeCredits(bucket) <= 0n) return null;
  return new Date(bucket.expiresAt.getTime() - noticeMs);
}

/** States CREDITS_EXPIRING for every usable bucket whose notice is due at `now`, and marks it noticed. */
export function noticeExpiring(book: AccountBook, now: Date, noticeMs: number): void {
  for (const bucket of book.allBuckets()) {
    const due = expiryNoticeAt(bucket, noticeMs);
    if (due && due.getTime() <= now.getTime() && isUsable(bucket, now)) book.noticeExpiry(bucket.id);
  }
}
