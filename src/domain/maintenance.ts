import type { AccountBook } from "./account-book.js";
import { freeCredits, isExpired } from "./bucket.js";
import { expireReservation } from "./holds.js";
import { isOverdue } from "./reservation.js";
import { rollSubscription } from "./subscription.js";

/**
 * Applies everything that has fallen due on the account by `now`, before any command reads its
 * balance: overdue holds are released (and end EXPIRED), the free credits of expired buckets
 * expire, then the subscription rolls to the period containing `now` (a scheduled change first,
 * then the period's allowance). Returns whether this call changed anything.
 */
export function applyDue(book: AccountBook, now: Date, newId: () => string): boolean {
  const entriesBefore = book.entries.length;
  const reservationsBefore = book.changedReservations.size;
  const subscriptionBefore = book.subscriptionChanged;
  for (const reservation of book.allReservations()) {
    if (isOverdue(reservation, now)) expireReservation(book, reservation, now);
  }
  for (const bucket of book.allBuckets()) {
    const free = freeCredits(bucket);
    if (isExpired(bucket, now) && free > 0n) book.expire(bucket.id, free, null);
  }
  rollSubscription(book, now, newId);
  return (
    book.entries.length > entriesBefore ||
    book.changedReservations.size > reservationsBefore ||
    book.subscriptionChanged !== subscriptionBefore
  );
}
