import type { AccountBook } from "../domain/account-book.js";
import { type AlertThreshold, setBalanceAlert as setAlert } from "../domain/balance-alert.js";
import { ok, type Result } from "../domain/errors.js";
import type { ActionValues, SetBalanceAlertAction } from "./commands.js";
import type { AppDeps, Reply } from "./deps.js";
import { mutate } from "./idempotent.js";
import type { IdempotencyClaim } from "./ports.js";

export interface SetBalanceAlertInput {
  readonly accountId: string;
  /** Validated at the edge (domain/balance-alert.ts validThreshold). */
  readonly threshold: AlertThreshold;
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

/**
 * SetBalanceAlert: the account's own alert threshold, in place of the configured default. It is a
 * change record of the account (BALANCE_ALERT_SET), and the balance is judged on the new threshold
 * at once: setting one above the available credits raises BALANCE_LOW in the same record.
 */
export async function setBalanceAlert(deps: AppDeps, input: SetBalanceAlertInput): Promise<Reply> {
  const action: SetBalanceAlertAction = { kind: "SetBalanceAlert", threshold: input.threshold, policy: deps.alerts };
  return mutate(deps, { target: { accountId: input.accountId }, createAccount: false, idempotency: input.claim, caller: input.caller, action });
}

export function applySetBalanceAlert(book: AccountBook, action: SetBalanceAlertAction, now: Date): Result<ActionValues["SetBalanceAlert"]> {
  const alert = setAlert(book, action.threshold, now, action.policy);
  return ok({ alert, balance: book.balance(now) });
}
