import type { AccountBook } from "../domain/account-book.js";
import { changePlan as decideChange } from "../domain/change-plan.js";
import { ok, type Result } from "../domain/errors.js";
import type { TopUpPack } from "../domain/grants.js";
import type { Plan } from "../domain/plan.js";
import { describe } from "../domain/subscription.js";
import { type AppDeps, type Reply, refuse } from "./deps.js";
import type { ActionValues, AdvanceTestClockAction, ChangePlanAction, ChangePlanResult } from "./commands.js";
import type { Encode } from "./holds.js";
import { mutate } from "./idempotent.js";
import type { IdempotencyClaim } from "./ports.js";

export type { ChangePlanResult } from "./commands.js";

export interface ChangePlanInput {
  readonly accountId: string;
  readonly planId: string;
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

/** ChangePlan: subscribe, upgrade now, or schedule a downgrade. The account is created if new. */
export async function changePlan(deps: AppDeps, input: ChangePlanInput): Promise<Reply> {
  const plan = await deps.plans.findPlan(input.planId, input.accountId);
  if (!plan) return refuse("PLAN_NOT_FOUND", `plan ${input.planId} does not exist`, { plan_id: input.planId });
  const action: ChangePlanAction = { kind: "ChangePlan", plan };
  return mutate(deps, { target: { accountId: input.accountId }, createAccount: true, idempotency: input.claim, caller: input.caller, action });
}

export function applyChangePlan(book: AccountBook, action: ChangePlanAction, now: Date, newId: () => string): Result<ChangePlanResult> {
  const previousPlan = book.subscription?.plan ?? null;
  const changed = decideChange(book, action.plan, now, newId);
  if (!changed.ok) return changed;
  const change = changed.value;
  const plan = change.kind === "DOWNGRADE_SCHEDULED" ? action.plan : change.subscription.plan;
  // A new anchor moves BILLING_PERIOD spend limits to the period that starts now.
  book.spend?.rebase(now, book.subscription);
  book.emit({ kind: "PLAN_CHANGED", change: change.kind, previousPlan, plan, effectiveAt: change.effectiveAt, proratedCharge: change.proratedCharge, subscription: describe(change.subscription, now) });
  return ok({ change, balance: book.balance(now) });
}

/** ListPlans: the public catalog. */
export async function listPlans(deps: AppDeps, encode: Encode<readonly Plan[]>): Promise<Reply> {
  return { ok: true, bytes: encode(await deps.plans.listPlans()) };
}

export interface SetCustomPlanInput {
  readonly plan: Omit<Plan, "version">;
  readonly packs: readonly TopUpPack[];
}

/** SetCustomPlan: a business plan and packs for one account; repeating it changes nothing. */
export async function setCustomPlan(
  deps: AppDeps,
  input: SetCustomPlanInput,
  encode: Encode<{ plan: Plan; packs: readonly TopUpPack[] }>,
): Promise<Reply> {
  if ((await deps.plans.listPlans()).some((p) => p.planId === input.plan.planId)) {
    return refuse("INVALID_FIELD", `plan_id: ${input.plan.planId} is a catalog plan`, { field: "plan_id" });
  }
  const clash = input.packs.find((p) => deps.topUpPacks.has(p.packId));
  if (clash) return refuse("INVALID_FIELD", `top_up_packs: ${clash.packId} is a catalog pack`, { field: "top_up_packs" });
  const saved = await deps.plans.saveCustomPlan(input, deps.clock.now());
  return saved.ok ? { ok: true, bytes: encode(saved.value) } : { ok: false, failure: saved.failure };
}

export interface AdvanceTestClockInput {
  readonly accountId: string;
  readonly byMs: number;
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

/** AdvanceTestClock: moves one account's clock and applies what falls due (outside production only). */
export async function advanceTestClock(deps: AppDeps, input: AdvanceTestClockInput): Promise<Reply> {
  if (!deps.testClocksEnabled) return refuse("TEST_CLOCK_DISABLED", "test clocks are disabled in production");
  const action: AdvanceTestClockAction = { kind: "AdvanceTestClock" };
  return mutate(deps, { target: { accountId: input.accountId }, createAccount: false, idempotency: input.claim, caller: input.caller, clockStepMs: input.byMs, action });
}

/** The apply stage moved the clock and applied what fell due before this runs: `now` is the account's new time. */
export function applyAdvanceTestClock(book: AccountBook, now: Date): Result<ActionValues["AdvanceTestClock"]> {
  return ok({ now, balance: book.balance(now) });
}
