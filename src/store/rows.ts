import { AccountConcurrency, type Running } from "../domain/concurrency-limit.js";
import { AccountSpend, type LimitMode, type SpendPeriod } from "../domain/spend-limit.js";
import type { StoredEntry } from "../app/ports.js";
import type { AlertState, AlertThreshold, BalanceAlert } from "../domain/balance-alert.js";
import type { Bucket, BucketKind } from "../domain/bucket.js";
import type { EntryKind } from "../domain/ledger-entry.js";
import type { BillingInterval, Plan } from "../domain/plan.js";
import type { GenerationSpec } from "../domain/pricing.js";
import type { Allocation, ReleaseReason, Reservation, ReservationPricing, ReservationStatus } from "../domain/reservation.js";
import type { Subscription } from "../domain/subscription.js";

/** A row as node-postgres returns it from a raw query: bigint columns arrive as strings. */
export type Row = Record<string, unknown>;

function str(row: Row, column: string): string {
  const v = row[column];
  if (typeof v !== "string") throw new TypeError(`column ${column}: expected text, got ${typeof v}`);
  return v;
}

function big(row: Row, column: string): bigint {
  const v = row[column];
  if (typeof v === "string" || typeof v === "bigint" || typeof v === "number") return BigInt(v);
  throw new TypeError(`column ${column}: expected bigint, got ${typeof v}`);
}

function date(row: Row, column: string): Date {
  const v = row[column];
  if (v instanceof Date) return v;
  // Rows aggregated into JSON by Postgres (an account's books load as one json value per account)
  // carry timestamps as ISO 8601 text, e.g. "2026-11-25T11:31:54.168+00:00".
  if (typeof v === "string") {
    const parsed = new Date(v);
    if (!Number.isNaN(parsed.getTime())) return parsed;
  }
  throw new TypeError(`column ${column}: expected timestamptz, got ${typeof v}`);
}

function optDate(row: Row, column: string): Date | null {
  return row[column] === null || row[column] === undefined ? null : date(row, column);
}

export function bucketFromRow(row: Row): Bucket {
  return {
    id: str(row, "bucket_id"),
    accountId: str(row, "account_id"),
    kind: str(row, "kind") as BucketKind,
    granted: big(row, "granted"),
    remaining: big(row, "remaining"),
    held: big(row, "held"),
    validFrom: date(row, "valid_from"),
    expiresAt: optDate(row, "expires_at"),
    sourceRef: str(row, "source_ref"),
    createdAt: date(row, "created_at"),
    expiryNoticed: row["expiry_noticed"] === true,
  };
}

/** The account's balance alert (its own threshold, if any, and its state) from the account row's columns. */
export function alertFromRow(row: Row): BalanceAlert {
  const credits = row["alert_threshold_credits"];
  const percent = row["alert_threshold_percent"];
  const threshold: AlertThreshold | null =
    credits !== null && credits !== undefined
      ? { kind: "credits", credits: big(row, "alert_threshold_credits") }
      : percent !== null && percent !== undefined
        ? { kind: "percent", percent: Number(percent) }
        : null;
  return { threshold, state: ((row["alert_state"] as AlertState | undefined) ?? "ARMED") };
}

/**
 * An account's concurrency limits and running holds per member (account-loader.ts), or null when
 * neither was loaded (the account has no limit and none is being set).
 */
export function concurrencyFromRow(row: Row): AccountConcurrency | null {
  if (row["controls_tracked"] !== true) return null;
  const limits = row["concurrency_limits"] as { member: string; open: number; held: string }[] | null | undefined;
  const running = row["running_holds"] as { member: string; open: number; held: string }[] | null | undefined;
  const perMember = new Map<string, Running>();
  const total: Running = { openHolds: 0, heldCredits: 0n };
  for (const r of running ?? []) {
    const held = BigInt(r.held);
    perMember.set(r.member, { openHolds: Number(r.open), heldCredits: held });
    total.openHolds += Number(r.open);
    total.heldCredits += held;
  }
  // "" is the account's scope: every member's holds (and the holds of no member) together.
  perMember.set("", total);
  return new AccountConcurrency(
    (limits ?? []).map((l) => ({ memberId: l.member, maxOpenHolds: Number(l.open), maxHeldCredits: BigInt(l.held) })),
    perMember,
  );
}

/** An account's spend limits with their counters (account-loader.ts), or null when the controls were not loaded. */
export function spendFromRow(row: Row): AccountSpend | null {
  if (row["controls_tracked"] !== true) return null;
  const limits = row["spend_limits"] as
    | { member: string; period: SpendPeriod; max: string; mode: LimitMode; zone: string; start: string; used: string; reached: boolean }[]
    | null
    | undefined;
  return new AccountSpend(
    (limits ?? []).map((l) => ({
      memberId: l.member,
      period: l.period,
      maxCredits: BigInt(l.max),
      mode: l.mode,
      timeZone: l.zone,
      periodStart: new Date(l.start),
      used: BigInt(l.used),
      reached: l.reached,
    })),
  );
}

/** A reservation's allocations as stored (jsonb, amounts as text so they stay exact). */
export function allocationsFromRow(row: Row): Allocation[] {
  return (row["allocations"] as { bucketId: string; amount: string }[]).map((a) => ({ bucketId: a.bucketId, amount: BigInt(a.amount) }));
}

export function reservationFromRow(row: Row): Reservation {
  return {
    id: str(row, "reservation_id"),
    accountId: str(row, "account_id"),
    status: str(row, "state") as ReservationStatus,
    heldAmount: big(row, "held_amount"),
    capturedAmount: big(row, "captured_amount"),
    releasedAmount: big(row, "released_amount"),
    allocations: allocationsFromRow(row),
    expiresAt: date(row, "expires_at"),
    createdAt: date(row, "created_at"),
    settledAt: optDate(row, "settled_at"),
    metadata: (row["metadata"] ?? {}) as Record<string, string>,
    releaseReason: (row["release_reason"] ?? null) as ReleaseReason | null,
    releaseDetail: str(row, "release_detail"),
    pricing: pricingFromJson(row["pricing"]),
    memberId: str(row, "member_id"),
  };
}

export function entryFromRow(row: Row): StoredEntry {
  return {
    entryId: big(row, "entry_id"),
    accountId: str(row, "account_id"),
    kind: str(row, "kind") as EntryKind,
    bucketId: str(row, "bucket_id"),
    reservationId: (row["reservation_id"] ?? null) as string | null,
    amount: big(row, "amount"),
    idempotencyKey: (row["idempotency_key"] ?? null) as string | null,
    caller: str(row, "caller"),
    metadata: (row["metadata"] ?? {}) as Record<string, string>,
    createdAt: date(row, "created_at"),
    memberId: str(row, "member_id"),
  };
}

interface PricingJson {
  spec: GenerationSpec;
  rateCardVersion: string;
  accountPermille: number;
  quotedCredits: string;
}

function pricingFromJson(json: unknown): ReservationPricing | null {
  if (json === null || json === undefined) return null;
  const p = json as PricingJson;
  return { spec: p.spec, rateCardVersion: p.rateCardVersion, accountPermille: p.accountPermille, quotedCredits: BigInt(p.quotedCredits) };
}

export function pricingJson(reservation: Reservation): string | null {
  const p = reservation.pricing;
  if (!p) return null;
  const json: PricingJson = { spec: p.spec, rateCardVersion: p.rateCardVersion, accountPermille: p.accountPermille, quotedCredits: p.quotedCredits.toString() };
  return JSON.stringify(json);
}

export function allocationsJson(reservation: Reservation): string {
  return JSON.stringify(reservation.allocations.map((a) => ({ bucketId: a.bucketId, amount: a.amount.toString() })));
}

/** A plan version as stored in a subscription's jsonb snapshot (amounts as strings). */
interface PlanJson {
  planId: string;
  version: number;
  name: string;
  monthlyAllowance: string;
  priceMinor: string;
  currency: string;
  interval: BillingInterval;
  accountId: string | null;
}

export function planToJson(plan: Plan): string {
  const json: PlanJson = {
    planId: plan.planId,
    version: plan.version,
    name: plan.name,
    monthlyAllowance: plan.monthlyAllowance.toString(),
    priceMinor: plan.price.amountMinor.toString(),
    currency: plan.price.currencyCode,
    interval: plan.interval,
    accountId: plan.accountId,
  };
  return JSON.stringify(json);
}

export function planFromJson(json: unknown): Plan {
  const p = json as PlanJson;
  return {
    planId: p.planId,
    version: p.version,
    name: p.name,
    monthlyAllowance: BigInt(p.monthlyAllowance),
    price: { currencyCode: p.currency, amountMinor: BigInt(p.priceMinor) },
    interval: p.interval,
    accountId: p.accountId,
  };
}

export function planFromRow(row: Row): Plan {
  return {
    planId: str(row, "plan_id"),
    version: Number(row["version"]),
    name: str(row, "name"),
    monthlyAllowance: big(row, "monthly_allowance"),
    price: { currencyCode: str(row, "currency"), amountMinor: big(row, "price_minor") },
    interval: str(row, "billing_interval") as BillingInterval,
    accountId: (row["account_id"] as string | null) ?? null,
  };
}

/** The subscription columns of the account-lock query; null when the account has no subscription. */
export function subscriptionFromRow(accountId: string, row: Row): Subscription | null {
  if (row["plan"] === null || row["plan"] === undefined) return null;
  const effectiveAt = optDate(row, "scheduled_effective_at");
  return {
    accountId,
    plan: planFromJson(row["plan"]),
    anchor: date(row, "anchor"),
    grantedPeriod: Number(row["granted_period"]),
    currentBucketId: (row["current_bucket_id"] as string | null) ?? null,
    scheduled: row["scheduled_plan"] && effectiveAt ? { plan: planFromJson(row["scheduled_plan"]), effectiveAt } : null,
  };
}
