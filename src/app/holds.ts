import type { AccountBook } from "../domain/account-book.js";
import { invariant, ok, type Result } from "../domain/errors.js";
import { commit as commitHold, extend as extendHold, release as releaseHold, reserve as reserveHold } from "../domain/holds.js";
import { quote } from "../domain/pricing.js";
import type { ReleaseReason, Reservation, ReservationPricing } from "../domain/reservation.js";
import type { ActionValues, CommitAction, Cost, ExtendAction, HoldResult, ReleaseAction, ReserveAction } from "./commands.js";
import { type AppDeps, type Reply, refuse } from "./deps.js";
import { mutate } from "./idempotent.js";
import type { IdempotencyClaim } from "./ports.js";

export type { Cost, HoldResult } from "./commands.js";

export type Encode<T> = (value: T) => Uint8Array;

interface Mutation {
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

export interface ReserveInput extends Mutation {
  readonly accountId: string;
  readonly cost: Cost;
  readonly ttlMs: number;
  readonly metadata: Readonly<Record<string, string>>;
  /** "" when the hold is for no member in particular. */
  readonly memberId: string;
}

/** Reserve: hold credits before a generation (all or nothing); a spec is priced and held in one transaction. */
export async function reserve(deps: AppDeps, input: ReserveInput): Promise<Reply> {
  const card = deps.rateCards.current;
  if ("spec" in input.cost) {
    // Validate the spec before anything is touched: bad input changes nothing.
    const check = quote(card, input.cost.spec);
    if (!check.ok) return { ok: false, failure: check.failure };
  }
  const cost = "spec" in input.cost ? { spec: input.cost.spec, card } : input.cost;
  const action: ReserveAction = { kind: "Reserve", reservationId: deps.newId(), cost, ttlMs: input.ttlMs, metadata: input.metadata, memberId: input.memberId };
  return mutate(deps, { target: { accountId: input.accountId }, createAccount: false, idempotency: input.claim, caller: input.caller, action });
}

/** Reserve on the locked book: a spec is priced here, with the account's own pricing, so the quote and the balance check agree. */
export function applyReserve(book: AccountBook, action: ReserveAction, now: Date): Result<HoldResult> {
  let amount: bigint;
  let pricing: ReservationPricing | null = null;
  if ("spec" in action.cost) {
    const priced = quote(action.cost.card, action.cost.spec, book.pricingPermille);
    if (!priced.ok) return priced;
    amount = priced.value.credits;
    pricing = { spec: action.cost.spec, rateCardVersion: action.cost.card.version, accountPermille: book.pricingPermille, quotedCredits: amount };
  } else {
    amount = action.cost.amount;
  }
  const held = reserveHold(book, { reservationId: action.reservationId, amount, ttlMs: action.ttlMs, metadata: action.metadata, pricing, memberId: action.memberId }, now);
  return held.ok ? ok({ reservation: held.value, balance: book.balance(now) }) : held;
}

export interface CommitInput extends Mutation {
  readonly reservationId: string;
  readonly actual: Cost;
}

/**
 * Commit: settle a hold with the generation's real cost. A spec is priced with the rate card
 * version and account pricing the hold was reserved with (the current ones for a hold of a raw
 * amount), so a rate card change never reprices a generation already running.
 */
export async function commit(deps: AppDeps, input: CommitInput): Promise<Reply> {
  const actual = input.actual;
  if (!("spec" in actual)) return onReservation(deps, input, { kind: "Commit", reservationId: input.reservationId, actual });
  const existing = await deps.store.findReservation(input.reservationId);
  const version = existing?.pricing?.rateCardVersion;
  const card = version ? await deps.rateCards.version(version) : deps.rateCards.current;
  if (!card) return refuse("RATE_CARD_NOT_FOUND", `rate card ${version} is not stored`, { rate_card_version: version ?? "" });
  const check = quote(card, actual.spec);
  if (!check.ok) return { ok: false, failure: check.failure };
  return onReservation(deps, input, { kind: "Commit", reservationId: input.reservationId, actual: { spec: actual.spec, card } });
}

/** Commit on the locked book: the spec priced with the hold's own account pricing. */
export function applyCommit(book: AccountBook, action: CommitAction, now: Date): Result<HoldResult> {
  const reservation = target(book, action.reservationId);
  let amount: bigint;
  if ("spec" in action.actual) {
    const priced = quote(action.actual.card, action.actual.spec, reservation.pricing?.accountPermille ?? book.pricingPermille);
    if (!priced.ok) return priced;
    amount = priced.value.credits;
  } else {
    amount = action.actual.amount;
  }
  return withBalance(book, commitHold(book, reservation, amount, now), now);
}

export interface ReleaseInput extends Mutation {
  readonly reservationId: string;
  readonly reason: ReleaseReason;
  readonly detail: string;
}

/** Release: void a hold; every held credit returns to its bucket. */
export function release(deps: AppDeps, input: ReleaseInput): Promise<Reply> {
  return onReservation(deps, input, { kind: "Release", reservationId: input.reservationId, reason: input.reason, detail: input.detail });
}

export function applyRelease(book: AccountBook, action: ReleaseAction, now: Date): Result<HoldResult> {
  return withBalance(book, releaseHold(book, target(book, action.reservationId), action.reason, action.detail, now), now);
}

export interface ExtendInput extends Mutation {
  readonly reservationId: string;
  readonly ttlMs: number;
}

/** ExtendReservation: push an open hold's expiry out. */
export function extendReservation(deps: AppDeps, input: ExtendInput): Promise<Reply> {
  return onReservation(deps, input, { kind: "ExtendReservation", reservationId: input.reservationId, ttlMs: input.ttlMs });
}

export function applyExtend(book: AccountBook, action: ExtendAction, now: Date): Result<ActionValues["ExtendReservation"]> {
  const extended = extendHold(book, target(book, action.reservationId), action.ttlMs, now);
  return extended.ok ? ok({ reservation: extended.value }) : extended;
}

/** A command on one hold: the store locks the hold's account and loads the hold with the book. */
function onReservation(deps: AppDeps, input: Mutation & { readonly reservationId: string }, action: CommitAction | ReleaseAction | ExtendAction): Promise<Reply> {
  return mutate(deps, { target: { reservationId: input.reservationId }, createAccount: false, idempotency: input.claim, caller: input.caller, action });
}

function target(book: AccountBook, reservationId: string): Reservation {
  const reservation = book.reservation(reservationId);
  invariant(reservation, "the target reservation is loaded");
  return reservation;
}

function withBalance(book: AccountBook, settled: Result<{ readonly reservation: Reservation }>, now: Date): Result<HoldResult> {
  return settled.ok ? ok({ reservation: settled.value.reservation, balance: book.balance(now) }) : settled;
}
