import type { AccountBook } from "./account-book.js";
import { isUsable } from "./bucket.js";
import { fail, invariant, ok, type Result } from "./errors.js";
import { currentlyHeld, type ReleaseReason, type Reservation, type ReservationPricing } from "./reservation.js";

export interface ReserveCommand {
  readonly reservationId: string;
  readonly amount: bigint;
  readonly ttlMs: number;
  readonly metadata: Readonly<Record<string, string>>;
  readonly pricing?: ReservationPricing | null;
  /** "" when the hold is for no member in particular. */
  readonly memberId?: string;
}

/** A settlement result: `repeated` is true when the hold was already in the asked-for state. */
export interface Settled {
  readonly reservation: Reservation;
  readonly repeated: boolean;
}

/**
 * Takes `amount` free credits in consumption order onto the reservation. The caller has checked
 * that enough is available.
 */
function draw(book: AccountBook, reservation: Reservation, amount: bigint, now: Date): void {
  let left = amount;
  for (const bucket of book.usableBuckets(now)) {
    if (left === 0n) break;
    const take = bucket.remaining - bucket.held < left ? bucket.remaining - bucket.held : left;
    if (take > 0n) {
      book.hold(reservation, bucket.id, take);
      left -= take;
    }
  }
  invariant(left === 0n, `drew ${amount - left} of ${amount}`);
}

function insufficient(requested: bigint, available: bigint): Result<never> {
  return fail("INSUFFICIENT_CREDITS", `requested ${requested} credits, ${available} available`, {
    requested: requested.toString(),
    available: available.toString(),
  });
}

/** Reserve is all or nothing: it holds `amount` in consumption order, or fails and changes nothing. */
export function reserve(book: AccountBook, cmd: ReserveCommand, now: Date): Result<Reservation> {
  const available = book.available(now);
  if (available < cmd.amount) return insufficient(cmd.amount, available);
  const admitted = book.concurrency?.admits(cmd.memberId ?? "", cmd.amount);
  if (admitted && !admitted.ok) return admitted;
  const withinLimits = book.spend?.admits(cmd.memberId ?? "", cmd.amount, now, book.subscription, book.running);
  if (withinLimits && !withinLimits.ok) return withinLimits;
  const reservation: Reservation = {
    id: cmd.reservationId,
    accountId: book.accountId,
    status: "HELD",
    heldAmount: cmd.amount,
    capturedAmount: 0n,
    releasedAmount: 0n,
    allocations: [],
    expiresAt: new Date(now.getTime() + cmd.ttlMs),
    createdAt: now,
    settledAt: null,
    metadata: cmd.metadata,
    releaseReason: null,
    releaseDetail: "",
    pricing: cmd.pricing ?? null,
    memberId: cmd.memberId ?? "",
  };
  book.addReservation(reservation);
  book.concurrency?.count(reservation.memberId, reservation.heldAmount, 1);
  draw(book, reservation, cmd.amount, now);
  book.emit({ kind: "HOLD_CREATED", reservation });
  book.passSoftLimits(reservation, now);
  return ok(reservation);
}

/**
 * Gives every credit the reservation holds back to its bucket. Credits returning to a bucket
 * that is no longer usable expire at once.
 */
function returnAll(book: AccountBook, reservation: Reservation, now: Date, automatic: boolean): bigint {
  let returned = 0n;
  for (const { bucketId, amount } of [...reservation.allocations]) {
    book.release(reservation, bucketId, amount, automatic);
    if (!isUsable(book.bucket(bucketId), now)) book.expire(bucketId, amount, reservation);
    returned += amount;
  }
  return returned;
}

function notHeld(reservation: Reservation): Result<never> {
  if (reservation.status === "EXPIRED") {
    return fail("RESERVATION_EXPIRED", `reservation ${reservation.id} expired at ${reservation.expiresAt.toISOString()}`, {
      reservation_id: reservation.id,
      state: reservation.status,
    });
  }
  return fail("RESERVATION_NOT_HELD", `reservation ${reservation.id} is ${reservation.status}`, {
    reservation_id: reservation.id,
    state: reservation.status,
  });
}

/**
 * Commit settles a hold with the real cost. actual <= held: capture `actual` in the order the
 * credits were held, return the rest. actual > held: draw the extra from available credits
 * (consumption order) or fail with INSUFFICIENT_CREDITS leaving the hold open. Repeating a
 * commit of the same amount returns the settled hold; any other amount is RESERVATION_NOT_HELD.
 */
export function commit(book: AccountBook, reservation: Reservation, actual: bigint, now: Date): Result<Settled> {
  if (reservation.status === "COMMITTED" && reservation.capturedAmount === actual) {
    return ok({ reservation, repeated: true });
  }
  if (reservation.status !== "HELD") return notHeld(reservation);
  const held = currentlyHeld(reservation);
  if (actual > held) {
    const available = book.available(now);
    if (available < actual - held) return insufficient(actual - held, available);
    // The extra counts against the hold's HARD limits like a Reserve of it: over one, the hold stays open.
    const withinLimits = book.spend?.admits(reservation.memberId, actual - held, now, book.subscription, book.running);
    if (withinLimits && !withinLimits.ok) return withinLimits;
    draw(book, reservation, actual - held, now);
  }
  let toCapture = actual;
  for (const { bucketId, amount } of [...reservation.allocations]) {
    const take = amount < toCapture ? amount : toCapture;
    if (take > 0n) book.capture(reservation, bucketId, take);
    toCapture -= take;
  }
  invariant(toCapture === 0n, "captured less than actual");
  reservation.releasedAmount = returnAll(book, reservation, now, false);
  reservation.capturedAmount = actual;
  book.spend?.count(reservation.memberId, reservation.createdAt, actual, now, book.subscription);
  settle(book, reservation, "COMMITTED", now);
  book.emit({ kind: "HOLD_COMMITTED", reservation });
  return ok({ reservation, repeated: false });
}

/**
 * Release voids a hold: every held credit returns to its bucket. Releasing a released or
 * expired hold returns it unchanged (the credits are already back); releasing a committed
 * hold is RESERVATION_NOT_HELD.
 */
export function release(
  book: AccountBook,
  reservation: Reservation,
  reason: ReleaseReason,
  detail: string,
  now: Date,
): Result<Settled> {
  if (reservation.status === "RELEASED" || reservation.status === "EXPIRED") {
    return ok({ reservation, repeated: true });
  }
  if (reservation.status !== "HELD") return notHeld(reservation);
  reservation.releasedAmount = returnAll(book, reservation, now, false);
  reservation.releaseReason = reason;
  reservation.releaseDetail = detail;
  settle(book, reservation, "RELEASED", now);
  book.emit({ kind: "HOLD_RELEASED", reservation });
  return ok({ reservation, repeated: false });
}

/** An overdue hold is released automatically and ends EXPIRED. */
export function expireReservation(book: AccountBook, reservation: Reservation, now: Date): void {
  invariant(reservation.status === "HELD", "only a held reservation expires");
  reservation.releasedAmount = returnAll(book, reservation, now, true);
  settle(book, reservation, "EXPIRED", now);
  book.emit({ kind: "HOLD_EXPIRED", reservation });
}

/** Extend pushes an open hold's expiry to now + ttl; an expiry never moves earlier. */
export function extend(book: AccountBook, reservation: Reservation, ttlMs: number, now: Date): Result<Reservation> {
  if (reservation.status !== "HELD") return notHeld(reservation);
  const next = now.getTime() + ttlMs;
  if (next > reservation.expiresAt.getTime()) {
    reservation.expiresAt = new Date(next);
    book.touch(reservation);
    book.emit({ kind: "HOLD_EXTENDED", reservation });
  }
  return ok(reservation);
}

function settle(book: AccountBook, reservation: Reservation, status: "COMMITTED" | "RELEASED" | "EXPIRED", now: Date): void {
  invariant(reservation.allocations.length === 0, "a settled reservation holds nothing");
  reservation.status = status;
  // It no longer runs: the next Reserve of this batch sees the room it left under the caps.
  book.concurrency?.count(reservation.memberId, reservation.heldAmount, -1);
  reservation.settledAt = now;
  book.touch(reservation);
}
