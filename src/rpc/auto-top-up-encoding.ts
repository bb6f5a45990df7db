import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { AutoTopUpRequest as DomainRequest, AutoTopUpSettings, AutoTopUpState as DomainState, AutoTopUpView, RequestOutcome } from "../domain/auto-top-up.js";
import { AutoTopUpOutcome, type AutoTopUpRequest, AutoTopUpRequestSchema, type AutoTopUpRule, AutoTopUpRuleSchema, AutoTopUpState } from "../gen/credit/v1/types_pb.js";
import * as decode from "./decode.js";
import * as encode from "./encode.js";

/** Auto top-up between the domain (domain/auto-top-up.ts) and the proto. */

const STATES: Readonly<Record<DomainState, AutoTopUpState>> = {
  ARMED: AutoTopUpState.ARMED,
  REQUESTED: AutoTopUpState.REQUESTED,
  DISABLED: AutoTopUpState.DISABLED,
};

const OUTCOMES: Readonly<Record<RequestOutcome, AutoTopUpOutcome>> = {
  REQUESTED: AutoTopUpOutcome.REQUESTED,
  COMPLETED: AutoTopUpOutcome.COMPLETED,
  FAILED: AutoTopUpOutcome.FAILED,
  EXPIRED: AutoTopUpOutcome.EXPIRED,
};

/** Longest failure reason FailAutoTopUp takes (it is shown back in GetAutoTopUp and the feed). */
export const MAX_FAILURE_REASON_LENGTH = 200;

export function request(r: DomainRequest): AutoTopUpRequest {
  const accountId = r.requestId.slice(r.requestId.indexOf(":", 4) + 1);
  return create(AutoTopUpRequestSchema, {
    requestId: r.requestId,
    accountId,
    credits: r.credits,
    packId: r.pack?.packId ?? "",
    ...(r.pack ? { price: encode.money(r.pack.price) } : {}),
    requestedAt: timestampFromDate(r.requestedAt),
    expiresAt: timestampFromDate(r.expiresAt),
    outcome: OUTCOMES[r.outcome],
    paymentReference: r.paymentReference ?? "",
    bucketId: r.bucketId ?? "",
    failureReason: r.failureReason ?? "",
    ...(r.answeredAt ? { answeredAt: timestampFromDate(r.answeredAt) } : {}),
  });
}

export function rule(v: AutoTopUpView): AutoTopUpRule {
  const s = v.settings;
  return create(AutoTopUpRuleSchema, {
    accountId: v.accountId,
    thresholdCredits: s.thresholdCredits,
    size: s.size.kind === "pack" ? { case: "packId", value: s.size.packId } : { case: "targetCredits", value: s.size.targetCredits },
    maxPerMonth: s.maxPerMonth,
    enabled: s.enabled,
    state: STATES[v.state],
    monthCount: v.monthCount,
    ...(v.waitingUntil ? { waitingUntil: timestampFromDate(v.waitingUntil) } : {}),
    ...(v.outstanding ? { outstanding: request(v.outstanding) } : {}),
    ...(v.lastFailure
      ? { lastFailure: { $typeName: "credit.v1.AutoTopUpFailure", requestId: v.lastFailure.requestId, reason: v.lastFailure.reason, failedAt: timestampFromDate(v.lastFailure.at) } }
      : {}),
    failuresInRow: v.failuresInRow,
    ...(v.retryAt ? { retryAt: timestampFromDate(v.retryAt) } : {}),
  });
}

/** SetAutoTopUp's fields, checked before anything is read (the pack's existence is the use case's). */
export function settings(req: {
  thresholdCredits: bigint;
  size: { case: "packId"; value: string } | { case: "targetCredits"; value: bigint } | { case: undefined; value?: undefined };
  maxPerMonth: number;
  enabled: boolean;
}): AutoTopUpSettings {
  const thresholdCredits = decode.credits(req.thresholdCredits, "threshold_credits");
  let size: AutoTopUpSettings["size"];
  switch (req.size.case) {
    case "packId":
      size = { kind: "pack", packId: decode.id(req.size.value, "pack_id") };
      break;
    case "targetCredits":
      size = { kind: "target", targetCredits: decode.credits(req.size.value, "target_credits") };
      break;
    default:
      throw decode.invalid("size", "set pack_id or target_credits");
  }
  return { thresholdCredits, size, maxPerMonth: req.maxPerMonth, enabled: req.enabled };
}
