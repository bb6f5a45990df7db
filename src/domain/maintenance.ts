import type { AccountBook } from "./account-book.js";
import { freeCredits, isExpired } from "./bucket.js";
import { expireReservation } from "./holds.js";
import { isOverdue } from "./reservation.js";

/**
 * Applies everything that has fallen due on the account by `now`, before any command reads its
 * balance: overdue holds are released (and end EXPIRED), then the free credits of expired
 * buckets expire. Returns whether anything changed.
 */
export function applyDue(book: AccountBook, now: Date): boolean {
  const before = book.entries.length;
  for (const reservation of book.allReservations()) {
    if (isOverdue(reservation, now)) expireReservation(book, reservation, now);
  }
  for (const bucket of book.allBuckets()) {
    const free = freeCredits(bucket);
    if (isExpired(bucket, now) && free > 0n) book.expire(bucket.id, free, null);
  }
  return book.entries.length > before || book.changedReservations.size > 0;
}
