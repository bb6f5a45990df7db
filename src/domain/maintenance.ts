import type { AccountBook } from "./account-book.js";
import { freeCredits, isExpired } from "./bucket.js";
import { expiryNoticeAt, noticeExpiring } from "./expiry-notice.js";
import { expireReservation } from "./holds.js";
import { isOverdue } from "./reservation.js";
import { describe, rollSubscription } from "./subscription.js";

/**
 * Applies everything that has fallen due on the account by `now`, before any command reads its
 * balance: overdue holds are released (and end EXPIRED), the free credits of expired buckets
 * expire, then the subscription rolls to the period containing `now` (a scheduled change first,
 * then the period's allowance); last, buckets whose expiry notice is due (`noticeMs` before their
 * expiry; 0: none) state CREDITS_EXPIRING. Returns whether this call changed anything.
 */
export function applyDue(book: AccountBook, now: Date, newId: () => string, noticeMs = 0): boolean {
  const entriesBefore = book.entries.length;
  const eventsBefore = book.events.length;
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
  noticeExpiring(book, now, noticeMs);
  return (
    book.entries.length > entriesBefore ||
    book.events.length > eventsBefore ||
    book.changedReservations.size > reservationsBefore ||
    book.subscriptionChanged !== subscriptionBefore
  );
}

/**
 * The earliest instant after `now` at which the account's balance, or what applyDue finds due,
 * can change with no write: a bucket becoming valid or expiring, an allowance or billing period
 * ending, a scheduled plan change taking effect, or its earliest open hold falling due
 * (`nextHoldExpiry`: the book holds only the holds a command named), and, given `noticeMs`, a
 * bucket's expiry notice falling due (it changes no balance, but it is due work). null when
 * nothing is ever due by itself. A balance read at `now` stays exact until then unless the
 * account is written.
 */
export function nextChangeAt(book: AccountBook, now: Date, nextHoldExpiry: Date | null, noticeMs = 0): Date | null {
  const t = now.getTime();
  let next = Number.POSITIVE_INFINITY;
  const consider = (at: Date | null | undefined) => {
    if (at && at.getTime() > t && at.getTime() < next) next = at.getTime();
  };
  consider(nextHoldExpiry);
  for (const bucket of book.allBuckets()) {
    consider(bucket.validFrom);
    consider(bucket.expiresAt);
    consider(expiryNoticeAt(bucket, noticeMs));
  }
  const subscription = book.subscription;
  if (subscription) {
    consider(subscription.anchor);
    consider(subscription.scheduled?.effectiveAt);
    const view = describe(subscription, now);
    consider(view.allowancePeriod.end);
    consider(view.billingPeriod.end);
  }
  // A hold already due (or one a test clock stepped past) is due now: never later than that.
  if (nextHoldExpiry && nextHoldExpiry.getTime() <= t) return now;
  return Number.isFinite(next) ? new Date(next) : null;
}
