import type { AccountBook, BalanceView } from "../domain/account-book.js";
import { invariant, ok, type Result } from "../domain/errors.js";
import { commit as commitHold, extend as extendHold, release as releaseHold, reserve as reserveHold } from "../domain/holds.js";
import type { ReleaseReason, Reservation } from "../domain/reservation.js";
import type { AppDeps, Reply } from "./deps.js";
import { idempotent } from "./idempotent.js";
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

export interface ReserveInput extends Mutation {
  readonly accountId: string;
  readonly amount: bigint;
  readonly ttlMs: number;
  readonly metadata: Readonly<Record<string, string>>;
}

/** Reserve: hold credits before a generation (all or nothing). */
export function reserve(deps: AppDeps, input: ReserveInput, encode: Encode<HoldResult>): Promise<Reply> {
  const reservationId = deps.newId();
  return idempotent(deps.cache, input.accountId, input.claim, () =>
    deps.store.execute(
      {
        target: { accountId: input.accountId },
        createAccount: false,
        idempotency: input.claim,
        caller: input.caller,
        run: (book, now) => reserveHold(book, { reservationId, amount: input.amount, ttlMs: input.ttlMs, metadata: input.metadata }, now),
        encode: (reservation, book, now) => encode({ reservation, balance: book.balance(now) }),
      },
      deps.clock.now(),
    ),
  );
}

export interface CommitInput extends Mutation {
  readonly reservationId: string;
  readonly amount: bigint;
}

/** Commit: settle a hold with the generation's real cost. */
export function commit(deps: AppDeps, input: CommitInput, encode: Encode<HoldResult>): Promise<Reply> {
  return onReservation(deps, input, encode, (book, reservation, now) => commitHold(book, reservation, input.amount, now));
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
  return idempotent(deps.cache, input.reservationId, input.claim, () =>
    deps.store.execute(
      {
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
      },
      deps.clock.now(),
    ),
  );
}
