import { create } from "@bufbuild/protobuf";
import type { AlertState, AlertThreshold, AlertView } from "../domain/balance-alert.js";
import { BalanceAlertSettingSchema, BalanceAlertState, type BalanceAlertSetting } from "../gen/credit/v1/types_pb.js";
import * as decode from "./decode.js";

/** Balance alerts between the domain (domain/balance-alert.ts) and the proto. */

export const ALERT_STATES: Readonly<Record<AlertState, BalanceAlertState>> = {
  ARMED: BalanceAlertState.ARMED,
  LOW: BalanceAlertState.LOW,
  EXHAUSTED: BalanceAlertState.EXHAUSTED,
};

export function alertSetting(view: AlertView): BalanceAlertSetting {
  const t = view.threshold;
  return create(BalanceAlertSettingSchema, {
    threshold: t === null ? { case: undefined } : t.kind === "credits" ? { case: "credits", value: t.credits } : { case: "percentOfAllowance", value: t.percent },
    isDefault: view.isDefault,
    active: view.thresholdCredits !== null,
    thresholdCredits: view.thresholdCredits ?? 0n,
    recoverAt: view.recoverAt ?? 0n,
    state: ALERT_STATES[view.state],
  });
}

/** SetBalanceAlert's threshold: exactly one of credits (0 or more) or percent_of_allowance (1 to 100). */
export function alertThreshold(value: { case: "credits"; value: bigint } | { case: "percentOfAllowance"; value: number } | { case: undefined; value?: undefined }): AlertThreshold {
  switch (value.case) {
    case "credits":
      return { kind: "credits", credits: decode.credits(value.value, "credits", { allowZero: true }) };
    case "percentOfAllowance":
      if (value.value < 1 || value.value > 100) throw decode.invalid("percent_of_allowance", "must be 1 to 100");
      return { kind: "percent", percent: value.value };
    case undefined:
      throw decode.invalid("threshold", "set credits or percent_of_allowance");
  }
}
