import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { StoredEntry } from "../app/ports.js";
import type { BalanceView } from "../domain/account-book.js";
import type { Bucket as DomainBucket, BucketKind as DomainBucketKind } from "../domain/bucket.js";
import type { Money as DomainMoney } from "../domain/grants.js";
import type { EntryKind } from "../domain/ledger-entry.js";
import type { ReleaseReason as DomainReleaseReason, Reservation as DomainReservation, ReservationStatus } from "../domain/reservation.js";
import { type LedgerEntry, LedgerEntryKind, LedgerEntrySchema } from "../gen/credit/v1/admin_service_pb.js";
import {
  type Balance,
  BalanceSchema,
  type Bucket,
  BucketKind,
  BucketSchema,
  type Money,
  MoneySchema,
  ReleaseReason,
  type Reservation,
  ReservationSchema,
  ReservationState,
} from "../gen/credit/v1/types_pb.js";

/** Domain values → protobuf messages, and the enum tables used both ways. */

export const BUCKET_KINDS: Readonly<Record<DomainBucketKind, BucketKind>> = {
  SUBSCRIPTION: BucketKind.SUBSCRIPTION,
  TOP_UP: BucketKind.TOP_UP,
  ADJUSTMENT: BucketKind.ADJUSTMENT,
};

export const RESERVATION_STATES: Readonly<Record<ReservationStatus, ReservationState>> = {
  HELD: ReservationState.HELD,
  COMMITTED: ReservationState.COMMITTED,
  RELEASED: ReservationState.RELEASED,
  EXPIRED: ReservationState.EXPIRED,
};

export const RELEASE_REASONS: Readonly<Record<DomainReleaseReason, ReleaseReason>> = {
  GENERATION_FAILED: ReleaseReason.GENERATION_FAILED,
  INTERRUPTED: ReleaseReason.INTERRUPTED,
  CANCELLED: ReleaseReason.CANCELLED,
  OTHER: ReleaseReason.OTHER,
};

export const ENTRY_KINDS: Readonly<Record<EntryKind, LedgerEntryKind>> = {
  GRANT: LedgerEntryKind.GRANT,
  HOLD: LedgerEntryKind.HOLD,
  CAPTURE: LedgerEntryKind.CAPTURE,
  RELEASE: LedgerEntryKind.RELEASE,
  EXPIRE: LedgerEntryKind.EXPIRE,
  ADJUST: LedgerEntryKind.ADJUST,
};

/** The inverse of a domain → proto enum table, for decoding requests. */
export function inverse<K extends string, V extends number>(table: Readonly<Record<K, V>>): ReadonlyMap<number, K> {
  return new Map(Object.entries(table).map(([k, v]) => [v as number, k as K]));
}

export function money(value: DomainMoney): Money {
  return create(MoneySchema, { currencyCode: value.currencyCode, amountMinor: value.amountMinor });
}

export function bucket(value: DomainBucket): Bucket {
  return create(BucketSchema, {
    bucketId: value.id,
    kind: BUCKET_KINDS[value.kind],
    granted: value.granted,
    remaining: value.remaining,
    held: value.held,
    validFrom: timestampFromDate(value.validFrom),
    expiresAt: value.expiresAt ? timestampFromDate(value.expiresAt) : undefined,
    sourceRef: value.sourceRef,
  });
}

export function balance(value: BalanceView): Balance {
  return create(BalanceSchema, {
    accountId: value.accountId,
    available: value.available,
    held: value.held,
    buckets: value.buckets.map(bucket),
    asOf: timestampFromDate(value.asOf),
  });
}

export function reservation(value: DomainReservation): Reservation {
  return create(ReservationSchema, {
    reservationId: value.id,
    accountId: value.accountId,
    state: RESERVATION_STATES[value.status],
    heldAmount: value.heldAmount,
    capturedAmount: value.capturedAmount,
    releasedAmount: value.releasedAmount,
    expiresAt: timestampFromDate(value.expiresAt),
    createdAt: timestampFromDate(value.createdAt),
    settledAt: value.settledAt ? timestampFromDate(value.settledAt) : undefined,
    metadata: { ...value.metadata },
    releaseReason: value.releaseReason ? RELEASE_REASONS[value.releaseReason] : ReleaseReason.UNSPECIFIED,
    releaseDetail: value.releaseDetail,
  });
}

export function ledgerEntry(value: StoredEntry): LedgerEntry {
  return create(LedgerEntrySchema, {
    entryId: value.entryId,
    accountId: value.accountId,
    kind: ENTRY_KINDS[value.kind],
    bucketId: value.bucketId,
    reservationId: value.reservationId ?? "",
    amount: value.amount,
    idempotencyKey: value.idempotencyKey ?? "",
    caller: value.caller,
    metadata: { ...value.metadata },
    createdAt: timestampFromDate(value.createdAt),
  });
}
