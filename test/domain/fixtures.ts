import { AccountBook } from "../../src/domain/account-book.js";
import type { Bucket } from "../../src/domain/bucket.js";
import type { Failure, Result } from "../../src/domain/errors.js";
import { changePlan, type PlanChange } from "../../src/domain/change-plan.js";
import { grantAdjustment, purchaseTopUp, type TopUpPack } from "../../src/domain/grants.js";
import { commit, reserve } from "../../src/domain/holds.js";
import type { EntryKind } from "../../src/domain/ledger-entry.js";
import type { BillingInterval, Plan } from "../../src/domain/plan.js";
import { reconcileBook, type EntrySums } from "../../src/domain/reconcile.js";
import type { Reservation } from "../../src/domain/reservation.js";
import type { Subscription } from "../../src/domain/subscription.js";

/** Shared builders for the pure domain tests. Fixed dates only: time is always passed in. */
export const T0 = new Date("2030-01-15T12:00:00Z");
export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

export function at(ms: number, from: Date = T0): Date {
  return new Date(from.getTime() + ms);
}

export function newBook(accountId = "acct-1"): AccountBook {
  return new AccountBook(accountId, [], []);
}

export function pack(credits: bigint, validityMonths = 2): TopUpPack {
  return { packId: `pack-${credits}`, credits, price: { currencyCode: "USD", amountMinor: credits }, validityMonths };
}

export function topUp(book: AccountBook, id: string, credits: bigint, now: Date = T0, validityMonths = 2): Bucket {
  return unwrap(purchaseTopUp(book, { bucketId: id, pack: pack(credits, validityMonths), paymentReference: `pay-${id}` }, now));
}

export function adjustment(book: AccountBook, id: string, amount: bigint, expiresAt: Date | null, now: Date = T0): Bucket {
  return unwrap(grantAdjustment(book, { bucketId: id, amount, expiresAt, reason: "goodwill", actor: "support@test" }, now));
}

/** A SUBSCRIPTION bucket: there is no grant helper for it in the domain, so it is added directly. */
export function subscription(book: AccountBook, id: string, amount: bigint, expiresAt: Date | null, now: Date = T0): Bucket {
  const bucket: Bucket = {
    id,
    accountId: book.accountId,
    kind: "SUBSCRIPTION",
    granted: amount,
    remaining: 0n,
    held: 0n,
    validFrom: now,
    expiresAt,
    sourceRef: `plan:${id}`,
    createdAt: now,
  };
  book.addBucket(bucket, "GRANT", { plan: "pro" });
  return bucket;
}

export function unwrap<T>(result: Result<T>): T {
  if (!result.ok) throw new Error(`expected ok, got ${result.failure.reason}: ${result.failure.message}`);
  return result.value;
}

export function failureOf<T>(result: Result<T>): Failure {
  if (result.ok) throw new Error("expected a failure, got ok");
  return result.failure;
}

export function hold(book: AccountBook, id: string, amount: bigint, now: Date = T0, ttlMs = 15 * MINUTE): Reservation {
  return unwrap(reserve(book, { reservationId: id, amount, ttlMs, metadata: { member_id: "m-1" } }, now));
}

/** Allocations as plain pairs, for readable equality checks. */
export function allocationsOf(reservation: Reservation): [string, bigint][] {
  return reservation.allocations.map((a) => [a.bucketId, a.amount]);
}

/** remaining/held of a bucket, for before/after comparisons. */
export function stateOf(bucket: Bucket): { remaining: bigint; held: bigint } {
  return { remaining: bucket.remaining, held: bucket.held };
}

/** "remaining/held" of each bucket, compact for multi-bucket checks. */
export function remainingHeld(...buckets: readonly Bucket[]): string[] {
  return buckets.map((b) => `${b.remaining}/${b.held}`);
}

/** Entries of the book as [kind, bucketId, amount] triples. */
export function movements(book: AccountBook, from = 0): [EntryKind, string, bigint][] {
  return book.entries.slice(from).map((e) => [e.kind, e.bucketId, e.amount]);
}

/** The EntrySums the store would compute: entries grouped by bucket, reservation and kind. */
export function entrySums(book: AccountBook): EntrySums[] {
  const groups = new Map<string, EntrySums>();
  for (const e of book.entries) {
    const key = `${e.bucketId}|${e.reservationId ?? ""}|${e.kind}`;
    const prev = groups.get(key);
    groups.set(key, { bucketId: e.bucketId, reservationId: e.reservationId, kind: e.kind, total: (prev?.total ?? 0n) + e.amount });
  }
  return [...groups.values()];
}

export function sumEntries(book: AccountBook, kinds: readonly EntryKind[]): bigint {
  return book.entries.filter((e) => kinds.includes(e.kind)).reduce((t, e) => t + e.amount, 0n);
}

let nextId = 0;
/** Sequential ids for buckets the domain creates itself (subscription periods). */
export function newId(): string {
  nextId += 1;
  return `generated-${nextId}`;
}

// ---------------------------------------------------------------------------------------------
// Plans and subscriptions

/** A plan version built in the test (the catalog is not read by domain tests). */
export function makePlan(
  planId: string,
  monthlyAllowance: bigint,
  priceMinor: bigint,
  interval: BillingInterval = "MONTH",
  currencyCode = "USD",
): Plan {
  return { planId, version: 1, name: planId, monthlyAllowance, price: { currencyCode, amountMinor: priceMinor }, interval, accountId: null };
}

export const BASIC = makePlan("basic-monthly", 1000n, 1000n);
export const PRO = makePlan("pro-monthly", 5000n, 3000n);
export const MAX = makePlan("max-monthly", 20000n, 10000n);
export const BASIC_YEARLY = makePlan("basic-yearly", 1000n, 10000n, "YEAR");
export const PRO_YEARLY = makePlan("pro-yearly", 5000n, 30000n, "YEAR");
export const MAX_YEARLY = makePlan("max-yearly", 20000n, 100000n, "YEAR");

/** A UTC instant from an ISO string ("2030-04-01T00:00:00Z"). */
export function utc(iso: string): Date {
  return new Date(iso);
}

/** A new account subscribed to `plan` at `anchor` through changePlan on an empty book. */
export function subscribed(plan: Plan, anchor: Date, accountId = "acct"): { book: AccountBook; change: PlanChange; sub: Subscription } {
  const book = new AccountBook(accountId, [], []);
  const change = unwrap(changePlan(book, plan, anchor, newId));
  const sub = book.subscription;
  if (!sub) throw new Error("changePlan did not create a subscription");
  return { book, change, sub };
}

/** The SUBSCRIPTION bucket of the period granted last. */
export function allowanceBucket(book: AccountBook): Bucket {
  const id = book.subscription?.currentBucketId;
  if (!id) throw new Error("the subscription has no current bucket");
  return book.bucket(id);
}

export function subscriptionBuckets(book: AccountBook): Bucket[] {
  return book.allBuckets().filter((b) => b.kind === "SUBSCRIPTION");
}

/** Reserve and commit `amount` at once: a generation that cost exactly what it held. */
export function spend(book: AccountBook, id: string, amount: bigint, now: Date): Reservation {
  const r = hold(book, id, amount, now);
  unwrap(commit(book, r, amount, now));
  return r;
}

/**
 * What is wrong with the book: each reconciliation difference, and each bucket with a negative
 * remaining, held or free amount. Empty when the book is sound.
 */
export function ledgerProblems(book: AccountBook): string[] {
  const problems = reconcileBook(book.allBuckets(), book.allReservations(), entrySums(book)).map(
    (d) => `${d.subject} ${d.field}: stored ${d.stored}, entries ${d.fromEntries}`,
  );
  for (const b of book.allBuckets()) {
    if (b.remaining < 0n || b.held < 0n || b.remaining < b.held) problems.push(`bucket ${b.id} negative: ${b.remaining}/${b.held}`);
  }
  return problems;
}
