import type { AlertState, AlertThreshold, BalanceAlert } from "./balance-alert.js";
import type { AccountAutoTopUp, AutoTopUpEvent } from "./auto-top-up.js";
import { type Bucket, compareConsumption, freeCredits, isUsable } from "./bucket.js";
import type { AccountConcurrency, ConcurrencyLimit, Running } from "./concurrency-limit.js";
import { type AccountSpend, limitKey, type SpendLimitSpec, type SpendPeriod, type SpendView } from "./spend-limit.js";
import { invariant, type Result } from "./errors.js";
import { MAX_BALANCE_BUCKETS } from "./limits.js";
import type { EntryDraft, EntryKind } from "./ledger-entry.js";
import type { LedgerEvent } from "./events.js";
import type { Reservation } from "./reservation.js";
import { describe, type Subscription, type SubscriptionView } from "./subscription.js";

/** A bucket's three amounts. */
export type BucketAmounts = Readonly<Pick<Bucket, "granted" | "remaining" | "held">>;

const NO_AMOUNTS: BucketAmounts = { granted: 0n, remaining: 0n, held: 0n };

/** The spendable state of an account as callers see it. */
export interface BalanceView {
  readonly accountId: string;
  readonly available: bigint;
  readonly held: bigint;
  /** Usable buckets with credits left, in consumption order: the first MAX_BALANCE_BUCKETS of them. */
  readonly buckets: readonly Bucket[];
  /** How many usable buckets with credits left there are; more than `buckets` lists when it was cut short. */
  readonly bucketCount: number;
  readonly subscription: SubscriptionView | null;
  readonly asOf: Date;
}

/**
 * The working set of one command on one locked account: the buckets with credits left and the
 * reservations the command needs. Every movement goes through one of the methods below, which
 * change the state and append the matching ledger entry together, so the two cannot drift.
 * The store persists what changed; nothing here does I/O.
 */
export class AccountBook {
  readonly entries: EntryDraft[] = [];
  /** What each change stated happened (events.ts), in order; the apply stage stamps and encodes them. */
  readonly events: LedgerEvent[] = [];
  readonly changedBuckets = new Set<string>();
  readonly newBuckets = new Set<string>();
  readonly changedReservations = new Set<string>();
  readonly newReservations = new Set<string>();
  /** Set when the subscription (plan, anchor, granted period, scheduled change) changed. */
  subscriptionChanged = false;
  /** Milliseconds this account's test clock runs ahead of server time (0 outside test clocks). */
  clockOffsetMs: number;
  clockChanged = false;
  /** The account's balance alert (domain/balance-alert.ts); persisted with the account's head. */
  readonly alert: BalanceAlert;
  /** Set when the alert's threshold or state changed. */
  alertChanged = false;
  /**
   * The number of the account's latest change record (0: none yet). Every command (or due work
   * alone) that changes the book takes the next one (app/apply.ts); it is persisted with the book.
   */
  sequence: bigint;
  /** `sequence` as loaded: a book that changed must have moved past it before it is written. */
  readonly loadedSequence: bigint;
  /** Counts every change made to the book; apply.ts compares it around a command to tell whether the command changed anything. */
  private mutations = 0;
  /** Business pricing: multiplier on rate card prices in permille (1000 = list price). */
  readonly pricingPermille: number;
  private readonly buckets = new Map<string, Bucket>();
  private readonly reservations = new Map<string, Reservation>();
  /** Each loaded bucket's amounts as loaded: what conservation (conservation.ts) measures the book's movements from. */
  private readonly loaded = new Map<string, BucketAmounts>();

  constructor(
    readonly accountId: string,
    buckets: readonly Bucket[],
    reservations: readonly Reservation[],
    public subscription: Subscription | null = null,
    clockOffsetMs = 0,
    pricingPermille = 1000,
    sequence = 0n,
    alert: BalanceAlert = { threshold: null, state: "ARMED" },
    /** The caps on running holds and what runs, when the account has a cap (or is about to): else null. */
    readonly concurrency: AccountConcurrency | null = null,
    /** The spend limits and their counters, when the account has a limit (or is about to): else null. Needs `concurrency` (the held part). */
    readonly spend: AccountSpend | null = null,
    /** The auto top-up rule (domain/auto-top-up.ts), with the requests an answer names; null: none yet. */
    public autoTopUp: AccountAutoTopUp | null = null,
  ) {
    invariant(spend === null || concurrency !== null, "spend limits need the running holds");
    this.alert = { ...alert };
    this.sequence = sequence;
    this.loadedSequence = sequence;
    this.clockOffsetMs = clockOffsetMs;
    this.pricingPermille = pricingPermille;
    for (const b of buckets) {
      this.buckets.set(b.id, b);
      this.loaded.set(b.id, { granted: b.granted, remaining: b.remaining, held: b.held });
    }
    for (const r of reservations) this.reservations.set(r.id, r);
  }

  /** How many changes the book has had since it was loaded (any of the methods below that write). */
  get changeCount(): number {
    return this.mutations;
  }

  bucket(id: string): Bucket {
    const b = this.buckets.get(id);
    invariant(b, `bucket ${id} is not loaded`);
    return b;
  }

  /** A bucket's amounts when the book was loaded (zero for a bucket added since). */
  loadedAmounts(id: string): BucketAmounts {
    return this.loaded.get(id) ?? NO_AMOUNTS;
  }

  reservation(id: string): Reservation | undefined {
    return this.reservations.get(id);
  }

  allBuckets(): Bucket[] {
    return [...this.buckets.values()];
  }

  allReservations(): Reservation[] {
    return [...this.reservations.values()];
  }

  /** Usable buckets in consumption order. */
  usableBuckets(now: Date): Bucket[] {
    return this.allBuckets()
      .filter((b) => isUsable(b, now))
      .sort(compareConsumption);
  }

  /** Credits a new hold can take: the free credits of usable buckets. */
  available(now: Date): bigint {
    return this.allBuckets().reduce((sum, b) => (isUsable(b, now) ? sum + freeCredits(b) : sum), 0n);
  }

  /** Credits held by open reservations (also those taken from buckets that expired since). */
  held(): bigint {
    return this.allBuckets().reduce((sum, b) => sum + b.held, 0n);
  }

  /**
   * The balance as answers carry it: exact totals, and the first MAX_BALANCE_BUCKETS buckets (the
   * ones consumed next), so that no account, however many buckets it holds, makes an answer too
   * large to send.
   */
  balance(now: Date): BalanceView {
    const live = this.usableBuckets(now).filter((b) => b.remaining > 0n);
    return {
      accountId: this.accountId,
      available: this.available(now),
      held: this.held(),
      buckets: live.slice(0, MAX_BALANCE_BUCKETS),
      bucketCount: live.length,
      subscription: this.subscription ? describe(this.subscription, now) : null,
      asOf: now,
    };
  }

  /** States what a change did, for the event feed; called by the rule that made the change, in the same step. */
  emit(event: LedgerEvent): void {
    this.events.push(event);
  }

  /** Adds a bucket and grants its credits; `automatic` for grants nobody asked for (a period roll-over). */
  addBucket(bucket: Bucket, kind: "GRANT" | "ADJUST", metadata: Record<string, string>, automatic = false): void {
    invariant(!this.buckets.has(bucket.id), `bucket ${bucket.id} exists`);
    invariant(bucket.granted > 0n && bucket.remaining === 0n && bucket.held === 0n, "a new bucket starts empty");
    this.buckets.set(bucket.id, bucket);
    this.newBuckets.add(bucket.id);
    this.credit(bucket, bucket.granted, kind, metadata, automatic);
    this.emit({ kind: "CREDITS_GRANTED", bucket, amount: bucket.granted, source: bucket.sourceRef });
  }

  /** Grows a bucket (an upgrade's extra allowance). */
  grant(bucketId: string, amount: bigint, metadata: Record<string, string>): void {
    const bucket = this.bucket(bucketId);
    bucket.granted += amount;
    this.credit(bucket, amount, "GRANT", metadata);
    this.emit({ kind: "CREDITS_GRANTED", bucket, amount, source: metadata["reason"] ?? bucket.sourceRef });
  }

  addReservation(reservation: Reservation): void {
    invariant(!this.reservations.has(reservation.id), `reservation ${reservation.id} exists`);
    invariant(reservation.allocations.length === 0, "a new reservation holds nothing yet");
    this.reservations.set(reservation.id, reservation);
    this.newReservations.add(reservation.id);
    this.mutations++;
  }

  /** Moves free credits of a bucket onto a reservation. */
  hold(reservation: Reservation, bucketId: string, amount: bigint, automatic = false): void {
    const bucket = this.bucket(bucketId);
    invariant(amount > 0n && amount <= freeCredits(bucket), `hold ${amount} > free ${freeCredits(bucket)}`);
    bucket.held += amount;
    const existing = reservation.allocations.find((a) => a.bucketId === bucketId);
    if (existing) existing.amount += amount;
    else reservation.allocations.push({ bucketId, amount });
    this.record("HOLD", bucket, reservation, amount, automatic);
  }

  /** Returns held credits to their bucket. */
  release(reservation: Reservation, bucketId: string, amount: bigint, automatic = false): void {
    const bucket = this.takeFromAllocation(reservation, bucketId, amount);
    bucket.held -= amount;
    this.record("RELEASE", bucket, reservation, amount, automatic);
  }

  /** Spends held credits. */
  capture(reservation: Reservation, bucketId: string, amount: bigint): void {
    const bucket = this.takeFromAllocation(reservation, bucketId, amount);
    bucket.held -= amount;
    bucket.remaining -= amount;
    this.record("CAPTURE", bucket, reservation, amount, false);
  }

  /** Removes free credits of a bucket at (or after) its expiry. */
  expire(bucketId: string, amount: bigint, reservation: Reservation | null): void {
    const bucket = this.bucket(bucketId);
    invariant(amount > 0n && amount <= freeCredits(bucket), `expire ${amount} > free ${freeCredits(bucket)}`);
    bucket.remaining -= amount;
    this.changedBuckets.add(bucket.id);
    this.mutations++;
    this.entries.push({
      kind: "EXPIRE",
      bucketId,
      reservationId: reservation?.id ?? null,
      amount,
      metadata: reservation?.metadata ?? {},
      automatic: true,
      memberId: reservation?.memberId ?? "",
    });
    this.emit({ kind: "CREDITS_EXPIRED", bucket, amount, reservationId: reservation?.id ?? null });
  }

  /** Moves this account's test clock forward. */
  advanceClock(byMs: number, serverNow: Date): void {
    invariant(byMs > 0, "a clock only moves forward");
    this.clockOffsetMs += byMs;
    this.clockChanged = true;
    this.mutations++;
    this.emit({ kind: "TEST_CLOCK_ADVANCED", advancedMs: byMs, now: new Date(serverNow.getTime() + this.clockOffsetMs) });
  }

  /** Sets the caps on running holds of a member or the account (SetConcurrencyLimit). */
  setConcurrencyLimit(limit: ConcurrencyLimit): Result<void> {
    invariant(this.concurrency, "the account's running holds were loaded for SetConcurrencyLimit");
    const set = this.concurrency.set(limit);
    if (!set.ok) return set;
    this.mutations++;
    this.emit({ kind: "CONCURRENCY_LIMIT_SET", limit });
    return set;
  }

  /** Running holds of a scope ("" = the account); only known on a book loaded with them. */
  readonly running = (scope: string): Running => {
    invariant(this.concurrency, "the account's running holds were not loaded");
    return this.concurrency.runningOf(scope);
  };

  /** A spend limit as it stands at `at`. */
  spendView(memberId: string, period: SpendPeriod, at: Date): SpendView | null {
    const limit = this.spend?.limits.get(limitKey(memberId, period));
    return limit && this.spend ? this.spend.view(limit, at, this.subscription, this.running) : null;
  }

  /** Creates or replaces a spend limit (SetSpendLimit). */
  setSpendLimit(spec: SpendLimitSpec, at: Date): Result<SpendView> {
    invariant(this.spend, "the account's spend limits were loaded for SetSpendLimit");
    const set = this.spend.set(spec, at, this.subscription);
    if (!set.ok) return set;
    this.mutations++;
    const limit = this.spend.view(set.value, at, this.subscription, this.running);
    this.emit({ kind: "SPEND_LIMIT_SET", limit });
    return { ok: true, value: limit };
  }

  /** Removes a spend limit (RemoveSpendLimit). */
  removeSpendLimit(memberId: string, period: SpendPeriod, at: Date): Result<SpendView> {
    invariant(this.spend, "the account's spend limits were loaded for RemoveSpendLimit");
    const removed = this.spend.remove(memberId, period);
    if (!removed.ok) return removed;
    this.mutations++;
    const limit = this.spend.view(removed.value, at, this.subscription, this.running);
    this.emit({ kind: "SPEND_LIMIT_REMOVED", limit });
    return { ok: true, value: limit };
  }

  /** States the SOFT limits a new hold (counted in the running sums already) took past their max for the first time this period. */
  passSoftLimits(reservation: Reservation, at: Date): void {
    if (!this.spend) return;
    for (const { limit, requested } of this.spend.passSoft(reservation.memberId, reservation.heldAmount, at, this.subscription, this.running)) {
      this.mutations++;
      this.emit({ kind: "SPEND_LIMIT_REACHED", limit, requested, reservationId: reservation.id, memberId: reservation.memberId });
    }
  }

  /**
   * States what the auto top-up rule did (domain/auto-top-up-steps.ts changed it already): each
   * event is a change of the book, so the command or due work it belongs to is a change record.
   */
  recordAutoTopUp(events: readonly AutoTopUpEvent[]): void {
    invariant(this.autoTopUp, "the account has an auto top-up rule");
    this.autoTopUp.changed = true;
    for (const event of events) {
      this.mutations++;
      this.emit(event);
    }
  }

  /** Sets the account's own alert threshold (SetBalanceAlert). */
  setAlertThreshold(threshold: AlertThreshold): void {
    this.alert.threshold = threshold;
    this.alertChanged = true;
    this.mutations++;
  }

  /** Moves the alert along its cycle; only ever inside a change record that changed the book already (or sets the alert). */
  setAlertState(state: AlertState): void {
    this.alert.state = state;
    this.alertChanged = true;
    this.mutations++;
  }

  /** States that a bucket's free credits will expire soon, once: the bucket remembers it was noticed. */
  noticeExpiry(bucketId: string): void {
    const bucket = this.bucket(bucketId);
    invariant(!bucket.expiryNoticed && bucket.expiresAt !== null, `bucket ${bucketId} was noticed already or never expires`);
    bucket.expiryNoticed = true;
    this.changedBuckets.add(bucketId);
    this.mutations++;
    this.emit({ kind: "CREDITS_EXPIRING", bucket, amount: freeCredits(bucket), expiresAt: bucket.expiresAt });
  }

  touchSubscription(): void {
    this.subscriptionChanged = true;
    this.mutations++;
  }

  /** Ends a bucket's validity at `at` (a plan's period cut short); its free credits expire. */
  closeBucket(bucketId: string, at: Date): void {
    const bucket = this.bucket(bucketId);
    bucket.expiresAt = at;
    this.changedBuckets.add(bucketId);
    this.mutations++;
    const free = freeCredits(bucket);
    if (free > 0n) this.expire(bucketId, free, null);
  }

  /** Marks a reservation's own fields (status, expiry) as changed. */
  touch(reservation: Reservation): void {
    this.changedReservations.add(reservation.id);
    this.mutations++;
  }

  private credit(bucket: Bucket, amount: bigint, kind: EntryKind, metadata: Record<string, string>, automatic = false): void {
    invariant(amount > 0n, "a grant is positive");
    bucket.remaining += amount;
    this.changedBuckets.add(bucket.id);
    this.mutations++;
    this.entries.push({ kind, bucketId: bucket.id, reservationId: null, amount, metadata, automatic, memberId: "" });
  }

  private takeFromAllocation(reservation: Reservation, bucketId: string, amount: bigint): Bucket {
    const allocation = reservation.allocations.find((a) => a.bucketId === bucketId);
    invariant(allocation && amount > 0n && amount <= allocation.amount, `reservation ${reservation.id} holds less`);
    allocation.amount -= amount;
    reservation.allocations = reservation.allocations.filter((a) => a.amount > 0n);
    return this.bucket(bucketId);
  }

  private record(kind: EntryKind, bucket: Bucket, reservation: Reservation, amount: bigint, automatic: boolean): void {
    this.mutations++;
    this.changedBuckets.add(bucket.id);
    this.changedReservations.add(reservation.id);
    this.entries.push({
      kind,
      bucketId: bucket.id,
      reservationId: reservation.id,
      amount,
      metadata: reservation.metadata,
      automatic,
      memberId: reservation.memberId,
    });
  }
}
