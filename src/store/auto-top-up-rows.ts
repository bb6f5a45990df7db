import type { AccountAutoTopUp, AutoTopUpRequest, AutoTopUpRule, AutoTopUpState, RequestOutcome } from "../domain/auto-top-up.js";
import type { TopUpPack } from "../domain/grants.js";
import type { Row } from "./rows.js";

/**
 * The auto top-up rule as stored: one jsonb value on the account's row (`accounts.auto_top_up`,
 * written with the account's head, so it costs the hot path no lookup of its own), and one row
 * per request (`auto_top_up_requests`), read only when an answer names it. Amounts travel as text
 * so they stay exact.
 */

interface PackJson {
  packId: string;
  credits: string;
  price: { currencyCode: string; amountMinor: string };
  validityMonths: number;
}

/** A request as the loader's json_build_object and the rule's jsonb both spell it. */
export interface RequestJson {
  requestId: string;
  epoch: number;
  credits: string;
  pack: PackJson | null;
  requestedAt: string;
  expiresAt: string;
  outcome: RequestOutcome;
  paymentReference: string | null;
  bucketId: string | null;
  failureReason: string | null;
  answeredAt: string | null;
}

interface RuleJson {
  settings: { threshold: string; packId: string | null; target: string | null; maxPerMonth: number; enabled: boolean };
  pack: PackJson | null;
  state: AutoTopUpState;
  epoch: number;
  outstanding: RequestJson | null;
  monthStart: string | null;
  monthCount: number;
  failuresInRow: number;
  lastFailure: { requestId: string; reason: string; at: string } | null;
  /** Absent in rules written before retries were kept. */
  retryAt?: string | null;
}

const packJson = (p: TopUpPack): PackJson => ({
  packId: p.packId,
  credits: p.credits.toString(),
  price: { currencyCode: p.price.currencyCode, amountMinor: p.price.amountMinor.toString() },
  validityMonths: p.validityMonths,
});

const packFromJson = (p: PackJson): TopUpPack => ({
  packId: p.packId,
  credits: BigInt(p.credits),
  price: { currencyCode: p.price.currencyCode, amountMinor: BigInt(p.price.amountMinor) },
  validityMonths: p.validityMonths,
});

export const requestJson = (r: AutoTopUpRequest): RequestJson => ({
  requestId: r.requestId,
  epoch: r.epoch,
  credits: r.credits.toString(),
  pack: r.pack ? packJson(r.pack) : null,
  requestedAt: r.requestedAt.toISOString(),
  expiresAt: r.expiresAt.toISOString(),
  outcome: r.outcome,
  paymentReference: r.paymentReference,
  bucketId: r.bucketId,
  failureReason: r.failureReason,
  answeredAt: r.answeredAt?.toISOString() ?? null,
});

export const requestFromJson = (r: RequestJson): AutoTopUpRequest => ({
  requestId: r.requestId,
  epoch: Number(r.epoch),
  credits: BigInt(r.credits),
  pack: r.pack ? packFromJson(r.pack) : null,
  requestedAt: new Date(r.requestedAt),
  expiresAt: new Date(r.expiresAt),
  outcome: r.outcome,
  paymentReference: r.paymentReference,
  bucketId: r.bucketId,
  failureReason: r.failureReason,
  answeredAt: r.answeredAt === null ? null : new Date(r.answeredAt),
});

/** The rule's jsonb value (null: the account has none). */
export function ruleJson(a: AccountAutoTopUp | null): string | null {
  if (!a) return null;
  const r = a.rule;
  const s = r.settings;
  const json: RuleJson = {
    settings: {
      threshold: s.thresholdCredits.toString(),
      packId: s.size.kind === "pack" ? s.size.packId : null,
      target: s.size.kind === "target" ? s.size.targetCredits.toString() : null,
      maxPerMonth: s.maxPerMonth,
      enabled: s.enabled,
    },
    pack: a.pack ? packJson(a.pack) : null,
    state: r.state,
    epoch: r.epoch,
    outstanding: r.outstanding ? requestJson(r.outstanding) : null,
    monthStart: r.monthStart?.toISOString() ?? null,
    monthCount: r.monthCount,
    failuresInRow: r.failuresInRow,
    lastFailure: r.lastFailure ? { requestId: r.lastFailure.requestId, reason: r.lastFailure.reason, at: r.lastFailure.at.toISOString() } : null,
    retryAt: r.retryAt?.toISOString() ?? null,
  };
  return JSON.stringify(json);
}

/** The rule of a loaded account row (`auto_top_up`, and `auto_top_up_requests`: the requests the commands named). */
export function autoTopUpFromRow(row: Row): AccountAutoTopUp | null {
  const json = row["auto_top_up"] as RuleJson | null | undefined;
  if (!json) return null;
  const s = json.settings;
  const rule: AutoTopUpRule = {
    settings: {
      thresholdCredits: BigInt(s.threshold),
      size: s.packId !== null ? { kind: "pack", packId: s.packId } : { kind: "target", targetCredits: BigInt(s.target!) },
      maxPerMonth: s.maxPerMonth,
      enabled: s.enabled,
    },
    state: json.state,
    epoch: json.epoch,
    outstanding: json.outstanding ? requestFromJson(json.outstanding) : null,
    monthStart: json.monthStart === null ? null : new Date(json.monthStart),
    monthCount: json.monthCount,
    failuresInRow: json.failuresInRow,
    lastFailure: json.lastFailure ? { requestId: json.lastFailure.requestId, reason: json.lastFailure.reason, at: new Date(json.lastFailure.at) } : null,
    retryAt: json.retryAt ? new Date(json.retryAt) : null,
  };
  const requests = new Map<number, AutoTopUpRequest>();
  for (const r of (row["auto_top_up_requests"] as RequestJson[] | null | undefined) ?? []) requests.set(Number(r.epoch), requestFromJson(r));
  return { rule, pack: json.pack ? packFromJson(json.pack) : null, requests, changedRequests: new Set(), changed: false };
}
