import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { LimitMode as DomainMode, SpendLimitSpec, SpendPeriod as DomainPeriod, SpendView } from "../domain/spend-limit.js";
import { isTimeZone } from "../domain/time-zone.js";
import { LimitMode, type SpendLimit, SpendLimitSchema, SpendPeriod } from "../gen/credit/v1/types_pb.js";
import * as decode from "./decode.js";
import { inverse } from "./encode.js";

/** Spend limits between the domain (domain/spend-limit.ts) and the proto. */

export const SPEND_PERIODS: Readonly<Record<DomainPeriod, SpendPeriod>> = {
  DAY: SpendPeriod.DAY,
  WEEK: SpendPeriod.WEEK,
  BILLING_PERIOD: SpendPeriod.BILLING_PERIOD,
  LIFETIME: SpendPeriod.LIFETIME,
};

export const LIMIT_MODES: Readonly<Record<DomainMode, LimitMode>> = {
  HARD: LimitMode.HARD,
  SOFT: LimitMode.SOFT,
};

const PERIODS_BY_CODE = inverse(SPEND_PERIODS);
const MODES_BY_CODE = inverse(LIMIT_MODES);

export function spendLimit(view: SpendView): SpendLimit {
  return create(SpendLimitSchema, {
    memberId: view.memberId,
    period: SPEND_PERIODS[view.period],
    maxCredits: view.maxCredits,
    mode: LIMIT_MODES[view.mode],
    timeZone: view.timeZone,
    used: view.used,
    held: view.held,
    remaining: view.remaining,
    periodStart: timestampFromDate(view.periodStart),
    ...(view.resetsAt ? { resetsAt: timestampFromDate(view.resetsAt) } : {}),
  });
}

export function period(value: number, field = "period"): DomainPeriod {
  return decode.enumValue(value, field, PERIODS_BY_CODE);
}

/** SetSpendLimit's fields: an unset mode is HARD (a limit that refuses is the safe default); an empty time zone is UTC. */
export function spec(req: { memberId: string; period: number; maxCredits: bigint; mode: number; timeZone: string }): SpendLimitSpec {
  const memberId = decode.optionalId(req.memberId, "member_id");
  const p = period(req.period);
  const maxCredits = decode.credits(req.maxCredits, "max_credits", { allowZero: true });
  const mode = req.mode === LimitMode.UNSPECIFIED ? "HARD" : decode.enumValue(req.mode, "mode", MODES_BY_CODE);
  const timeZone = req.timeZone === "" ? "UTC" : req.timeZone;
  if (!isTimeZone(timeZone)) throw decode.invalid("time_zone", `unknown time zone ${JSON.stringify(timeZone.slice(0, 64))} (an IANA name such as Europe/Paris)`);
  return { memberId, period: p, maxCredits, mode, timeZone };
}
