import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { StoredEntry } from "../app/ports.js";
import type { BalanceView } from "../domain/account-book.js";
import { boundedSourceRef, type Bucket as DomainBucket, type BucketKind as DomainBucketKind } from "../domain/bucket.js";
import type { Money as DomainMoney } from "../domain/grants.js";
import type { EntryKind } from "../domain/ledger-entry.js";
import type { ReleaseReason as DomainReleaseReason, Reservation as DomainReservation, ReservationStatus } from "../domain/reservation.js";
import { type LedgerEntry, LedgerEntryKind, LedgerEntrySchema } from "../gen/credit/v1/admin_service_pb.js";
import type { PlanChangeKind as DomainChangeKind } from "../domain/change-plan.js";
import type { BillingInterval as DomainInterval, Plan as DomainPlan } from "../domain/plan.js";
import type { SubscriptionView } from "../domain/subscription.js";
import type { GenerationKind as DomainKind, GenerationSpec as DomainSpec, ModelRate as DomainModelRate, Quality as DomainQuality } from "../domain/pricing.js";
import type { ReservationPricing } from "../domain/reservation.js";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type ModelRate, ModelRateSchema, PlanChangeKind, QualityRateSchema, ResolutionTierSchema } from "../gen/credit/v1/credit_service_pb.js";
import {
  type Balance,
  BalanceSchema,
  BillingInterval,
  GenerationKind,
  type GenerationSpec,
  GenerationSpecSchema,
  type Pricing,
  PricingSchema,
  Quality,
  type Plan,
  PlanSchema,
  ScheduledChangeSchema,
  type Subscription,
  SubscriptionSchema,
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

export const INTERVALS: Readonly<Record<DomainInterval, BillingInterval>> = {
  MONTH: BillingInterval.MONTH,
  YEAR: BillingInterval.YEAR,
};

export const CHANGE_KINDS: Readonly<Record<DomainChangeKind | "SCHEDULED_CHANGE_APPLIED", PlanChangeKind>> = {
  SUBSCRIBED: PlanChangeKind.SUBSCRIBED,
  UPGRADED: PlanChangeKind.UPGRADED,
  DOWNGRADE_SCHEDULED: PlanChangeKind.DOWNGRADE_SCHEDULED,
  SCHEDULED_CHANGE_CANCELLED: PlanChangeKind.SCHEDULED_CHANGE_CANCELLED,
  INTERVAL_CHANGED: PlanChangeKind.INTERVAL_CHANGED,
  SCHEDULED_CHANGE_APPLIED: PlanChangeKind.SCHEDULED_CHANGE_APPLIED,
};

export const GENERATION_KINDS: Readonly<Record<DomainKind, GenerationKind>> = {
  IMAGE: GenerationKind.IMAGE,
  VIDEO: GenerationKind.VIDEO,
  ANIMATION: GenerationKind.ANIMATION,
  AUDIO: GenerationKind.AUDIO,
  UPSCALE: GenerationKind.UPSCALE,
};

export const QUALITIES: Readonly<Record<DomainQuality, Quality>> = {
  DRAFT: Quality.DRAFT,
  STANDARD: Quality.STANDARD,
  HIGH: Quality.HIGH,
  ULTRA: Quality.ULTRA,
};

export function spec(value: DomainSpec): GenerationSpec {
  return create(GenerationSpecSchema, {
    model: value.model,
    kind: GENERATION_KINDS[value.kind],
    width: value.width,
    height: value.height,
    duration: value.durationMs > 0 ? durationFromMs(value.durationMs) : undefined,
    count: value.count,
    quality: QUALITIES[value.quality],
  });
}

export function pricing(value: ReservationPricing): Pricing {
  return create(PricingSchema, {
    spec: spec(value.spec),
    rateCardVersion: value.rateCardVersion,
    accountPricePermille: value.accountPermille,
    quotedCredits: value.quotedCredits,
  });
}

export function modelRate(value: DomainModelRate): ModelRate {
  return create(ModelRateSchema, {
    model: value.model,
    kind: GENERATION_KINDS[value.kind],
    baseCredits: value.baseCredits,
    maxWidth: value.maxWidth,
    maxHeight: value.maxHeight,
    resolutionTiers: value.resolutionTiers.map((t) => create(ResolutionTierSchema, { maxPixels: BigInt(t.maxPixels), credits: t.credits })),
    creditsPerSecond: value.duration?.creditsPerSecond ?? 0n,
    minSeconds: value.duration?.minSeconds ?? 0,
    maxSeconds: value.duration?.maxSeconds ?? 0,
    maxCount: value.maxCount,
    qualities: (Object.entries(value.qualityPermille) as [DomainQuality, number][]).map(([q, permille]) =>
      create(QualityRateSchema, { quality: QUALITIES[q], permille }),
    ),
    minimumCredits: value.minimumCredits,
  });
}

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
    sourceRef: boundedSourceRef(value.sourceRef),
  });
}

export function plan(value: DomainPlan): Plan {
  return create(PlanSchema, {
    planId: value.planId,
    name: value.name,
    interval: INTERVALS[value.interval],
    monthlyAllowance: value.monthlyAllowance,
    price: money(value.price),
    version: value.version,
    accountId: value.accountId ?? "",
  });
}

export function subscription(view: SubscriptionView): Subscription {
  const s = view.subscription;
  return create(SubscriptionSchema, {
    planId: s.plan.planId,
    planVersion: s.plan.version,
    interval: INTERVALS[s.plan.interval],
    monthlyAllowance: s.plan.monthlyAllowance,
    billingAnchor: timestampFromDate(s.anchor),
    periodStart: timestampFromDate(view.allowancePeriod.start),
    periodEnd: timestampFromDate(view.allowancePeriod.end),
    billingPeriodEnd: timestampFromDate(view.billingPeriod.end),
    scheduledChange: s.scheduled
      ? create(ScheduledChangeSchema, {
          planId: s.scheduled.plan.planId,
          planVersion: s.scheduled.plan.version,
          effectiveAt: timestampFromDate(s.scheduled.effectiveAt),
        })
      : undefined,
  });
}

export function balance(value: BalanceView): Balance {
  return create(BalanceSchema, {
    accountId: value.accountId,
    available: value.available,
    held: value.held,
    buckets: value.buckets.map(bucket),
    subscription: value.subscription ? subscription(value.subscription) : undefined,
    asOf: timestampFromDate(value.asOf),
    bucketsTruncated: value.bucketCount > value.buckets.length,
    bucketCount: value.bucketCount,
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
    pricing: value.pricing ? pricing(value.pricing) : undefined,
    memberId: value.memberId,
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
    memberId: value.memberId,
  });
}
