import type { ConcurrencyLimit, ConcurrencyView } from "../domain/concurrency-limit.js";
import type { SpendLimitSpec, SpendPeriod, SpendView } from "../domain/spend-limit.js";
import type { BalanceView } from "../domain/account-book.js";
import type { AlertPolicy, AlertThreshold, AlertView } from "../domain/balance-alert.js";
import type { AutoTopUpPolicy, AutoTopUpRequest, AutoTopUpSettings, AutoTopUpView } from "../domain/auto-top-up.js";
import type { CompletedTopUp } from "../domain/auto-top-up-steps.js";
import type { Bucket } from "../domain/bucket.js";
import type { PlanChange } from "../domain/change-plan.js";
import type { TopUpPack } from "../domain/grants.js";
import type { Plan } from "../domain/plan.js";
import type { GenerationSpec, RateCard } from "../domain/pricing.js";
import type { ReleaseReason, Reservation } from "../domain/reservation.js";

/**
 * What a command does to its account's book, as plain data: the use cases (holds.ts, grants.ts,
 * plans.ts, queries.ts) build one, the store carries it through its batch, and the apply stage
 * (apply.ts) runs the matching rule on the locked book. Everything a rule needs that is not in
 * the book (ids, the rate card, the plan) is looked up before and travels here.
 */
export type Action =
  | ReserveAction
  | CommitAction
  | ReleaseAction
  | ExtendAction
  | PurchaseTopUpAction
  | AdjustCreditsAction
  | ChangePlanAction
  | AdvanceTestClockAction
  | SetBalanceAlertAction
  | SetConcurrencyLimitAction
  | SetSpendLimitAction
  | RemoveSpendLimitAction
  | SetAutoTopUpAction
  | CompleteAutoTopUpAction
  | FailAutoTopUpAction
  | SettleDueAction;

/** A raw amount of credits, or a generation the rate card prices. */
export type Cost = { readonly amount: bigint } | { readonly spec: GenerationSpec };

/** A cost with the rate card that prices it, if it is a generation. */
export type PricedCost = { readonly amount: bigint } | { readonly spec: GenerationSpec; readonly card: RateCard };

export interface ReserveAction {
  readonly kind: "Reserve";
  /** Chosen before the call reaches the store: a replay answers with the first call's id. */
  readonly reservationId: string;
  /** A spec travels with the current rate card when the call arrived. */
  readonly cost: PricedCost;
  readonly ttlMs: number;
  readonly metadata: Readonly<Record<string, string>>;
  /** The member the hold is for; "" for none. */
  readonly memberId: string;
}

export interface CommitAction {
  readonly kind: "Commit";
  readonly reservationId: string;
  /** A spec travels with the rate card the hold was reserved with (the current one for a hold of a raw amount). */
  readonly actual: PricedCost;
}

export interface ReleaseAction {
  readonly kind: "Release";
  readonly reservationId: string;
  readonly reason: ReleaseReason;
  readonly detail: string;
}

export interface ExtendAction {
  readonly kind: "ExtendReservation";
  readonly reservationId: string;
  readonly ttlMs: number;
}

export interface PurchaseTopUpAction {
  readonly kind: "PurchaseTopUp";
  readonly bucketId: string;
  readonly pack: TopUpPack;
  readonly paymentReference: string;
}

export interface AdjustCreditsAction {
  readonly kind: "AdjustCredits";
  readonly bucketId: string;
  readonly amount: bigint;
  readonly expiresAt: Date | null;
  readonly reason: string;
  readonly actor: string;
}

export interface ChangePlanAction {
  readonly kind: "ChangePlan";
  readonly plan: Plan;
}

/** The step itself is the command's `clockStepMs`: it is taken before anything falls due. */
export interface AdvanceTestClockAction {
  readonly kind: "AdvanceTestClock";
}

export interface SetBalanceAlertAction {
  readonly kind: "SetBalanceAlert";
  readonly threshold: AlertThreshold;
  /** The server's alert settings: the answer shows the threshold in credits this comes to. */
  readonly policy: AlertPolicy;
}

export interface SetConcurrencyLimitAction {
  readonly kind: "SetConcurrencyLimit";
  readonly limit: ConcurrencyLimit;
}

export interface SetSpendLimitAction {
  readonly kind: "SetSpendLimit";
  readonly limit: SpendLimitSpec;
}

export interface RemoveSpendLimitAction {
  readonly kind: "RemoveSpendLimit";
  readonly memberId: string;
  readonly period: SpendPeriod;
}

export interface SetAutoTopUpAction {
  readonly kind: "SetAutoTopUp";
  /** Validated at the edge. */
  readonly settings: AutoTopUpSettings;
  /** The pack a pack-sized rule buys, resolved before the lock (catalog or the account's own). */
  readonly pack: TopUpPack | null;
  readonly policy: AutoTopUpPolicy;
}

export interface CompleteAutoTopUpAction {
  readonly kind: "CompleteAutoTopUp";
  readonly requestId: string;
  /** The request's epoch (from its id): the store loads that request with the book. */
  readonly epoch: number;
  readonly paymentReference: string;
  /** The TOP_UP bucket to grant, if the request is granted. */
  readonly bucketId: string;
}

export interface FailAutoTopUpAction {
  readonly kind: "FailAutoTopUp";
  readonly requestId: string;
  readonly epoch: number;
  readonly reason: string;
  readonly policy: AutoTopUpPolicy;
}

/** Nothing but the due work (a read found an overdue hold or an expired bucket); never recorded. */
export interface SettleDueAction {
  readonly kind: "SettleDue";
  /** A reservation to answer with, as the locked book holds it after the due work. */
  readonly reservationId: string | null;
}

/** A hold and the account's balance right after the command that touched it. */
export interface HoldResult {
  readonly reservation: Reservation;
  readonly balance: BalanceView;
}

/** A new bucket and the balance after it. */
export interface GrantResult {
  readonly bucket: Bucket;
  readonly balance: BalanceView;
  readonly price: TopUpPack["price"] | null;
}

export interface ChangePlanResult {
  readonly change: PlanChange;
  readonly balance: BalanceView;
}

/** What each action answers with. */
export interface ActionValues {
  readonly Reserve: HoldResult;
  readonly Commit: HoldResult;
  readonly Release: HoldResult;
  readonly ExtendReservation: { readonly reservation: Reservation };
  readonly PurchaseTopUp: GrantResult;
  readonly AdjustCredits: GrantResult;
  readonly ChangePlan: ChangePlanResult;
  readonly AdvanceTestClock: { readonly now: Date; readonly balance: BalanceView };
  readonly SetBalanceAlert: { readonly alert: AlertView; readonly balance: BalanceView };
  readonly SetConcurrencyLimit: { readonly limit: ConcurrencyView };
  readonly SetSpendLimit: { readonly limit: SpendView };
  readonly RemoveSpendLimit: { readonly removed: SpendView };
  readonly SetAutoTopUp: { readonly rule: AutoTopUpView };
  readonly CompleteAutoTopUp: CompletedTopUp & { readonly balance: BalanceView };
  readonly FailAutoTopUp: { readonly request: AutoTopUpRequest; readonly rule: AutoTopUpView };
  readonly SettleDue: { readonly balance: BalanceView; readonly reservation: Reservation | null };
}

/** The actions whose answers are recorded with an idempotency key (all but SettleDue). */
export type RecordedKind = Exclude<Action["kind"], "SettleDue">;

export type ActionOf<K extends Action["kind"]> = Extract<Action, { readonly kind: K }>;
