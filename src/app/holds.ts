import type { AccountBook, BalanceView } from "../domain/account-book.js";
import { invariant, ok, type Result } from "../domain/errors.js";
import { commit as commitHold, extend as extendHold, release as releaseHold, reserve as reserveHold } from "../domain/holds.js";
import { type GenerationSpec, quote } from "../domain/pricing.js";
import type { ReleaseReason, Reservation, ReservationPricing } from "../domain/reservation.js";
import { type AppDeps, type Reply, refuse } from "./deps.js";
import { mutate } from "./idempotent.js";
import type { IdempotencyClaim } from "./ports.js";

/** A hold and the account's balance right after the command that touched it. */
export interface HoldResult {
  readonly reservation: Reservation;
  readonly balance: BalanceView;
}

export type Encode<T> = (value: T) => Uint8Array;

interface Mutation {
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

/** A raw amount of credits, or a generation the rate card prices. */
export type Cost = { readonly amount: bigint } | { readonly spec: GenerationSpec };

export interface ReserveInput extends Mutation {
  readonly accountId: string;
  readonly cost: Cost;
  readonly ttlMs: number;
  readonly metadata: Readonly<Record<string, string>>;
}

/** Reserve: hold credits before a generation (all or nothing); a spec is priced and held in one transaction. */
export async function reserve(deps: AppDeps, input: ReserveInput, encode: Encode<HoldResult>): Promise<Reply> {
  const card = deps.rateCards.current;
  const cost = input.cost;
  if ("spec" in cost) {
    // Validate the spec before anything is touched: bad input changes nothing.
    const check = quote(card, cost.spec);
    if (!check.ok) return { ok: false, failure: check.failure };
  }
  const reservationId = deps.newId();
  return mutate(deps, input.accountId, {
    target: { accountId: input.accountId },
    createAccount: false,
    idempotency: input.claim,
    caller: input.caller,
    run: (book, now) => {
      let amount: bigint;
      let pricing: ReservationPricing | null = null;
      if ("spec" in cost) {
        // Priced under the account lock with the account's own pricing: the quote and the balance check agree.
        const priced = quote(card, cost.spec, book.pricingPermille);
        if (!priced.ok) return priced;
        amount = priced.value.credits;
        pricing = { spec: cost.spec, rateCardVersion: card.version, accountPermille: book.pricingPermille, quotedCredits: amount };
      } else {
        amount = cost.amount;
      }
      return reserveHold(book, { reservationId, amount, ttlMs: input.ttlMs, metadata: input.metadata, pricing }, now);
    },
    encode: (reservation, book, now) => encode({ reservation, balance: book.balance(now) }),
  });
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
export async function commit(deps: AppDeps, input: CommitInput, encode: Encode<HoldResult>): Promise<Reply> {
  const actual = input.actual;
  if (!("spec" in actual)) {
    return onReservation(deps, input, encode, (book, reservation, now) => commitHold(book, reservation, actual.amount, now));
  }
  const existing = await deps.store.findReservation(input.reservationId);
  const version = existing?.pricing?.rateCardVersion;
  const card = version ? await deps.rateCards.version(version) : deps.rateCards.current;
  if (!card) return refuse("RATE_CARD_NOT_FOUND", `rate card ${version} is not stored`, { rate_card_version: version ?? "" });
  const check = quote(card, actual.spec);
  if (!check.ok) return { ok: false, failure: check.failure };
  return onReservation(deps, input, encode, (book, reservation, now) => {
    const priced = quote(card, actual.spec, reservation.pricing?.accountPermille ?? book.pricingPermille);
    return priced.ok ? commitHold(book, reservation, priced.value.credits, now) : priced;
  });
}

export interface ReleaseInput extends Mutation {
  readonly reservationId: string;
  readonly reason: ReleaseReason;
  readonly detail: string;
}

/** Release: void a hold; every held credit returns to its bucket. */
export function release(deps: AppDeps, input: ReleaseInput, encode: Encode<HoldResult>): Promise<Reply> {
  return onReservation(deps, input, encode, (book, reservation, now) => releaseHold(book, reservation, input.reason, input.detail, now));
}

export interface ExtendInput extends Mutation {
  readonly reservationId: string;
  readonly ttlMs: number;
}

/** ExtendReservation: push an open hold's expiry out. */
export function extendReservation(deps: AppDeps, input: ExtendInput, encode: Encode<HoldResult>): Promise<Reply> {
  return onReservation(deps, input, encode, (book, reservation, now) => {
    const extended = extendHold(book, reservation, input.ttlMs, now);
    return extended.ok ? ok({ reservation: extended.value }) : extended;
  });
}

type OnReservation = (book: AccountBook, reservation: Reservation, now: Date) => Result<{ readonly reservation: Reservation }>;

function onReservation(
  deps: AppDeps,
  input: Mutation & { readonly reservationId: string },
  encode: Encode<HoldResult>,
  run: OnReservation,
): Promise<Reply> {
  return mutate(deps, input.reservationId, {
    target: { reservationId: input.reservationId },
    createAccount: false,
    idempotency: input.claim,
    caller: input.caller,
    run: (book, now) => {
      const reservation = book.reservation(input.reservationId);
      invariant(reservation, "the target reservation is loaded");
      return run(book, reservation, now);
    },
    encode: (settled, book, now) => encode({ reservation: settled.reservation, balance: book.balance(now) }),
  });
}
