import type { AccountBook } from "../domain/account-book.js";
import { type AutoTopUpSettings, type AutoTopUpView, describeAutoTopUp, parseRequestId, settleAutoTopUp, validateSettings } from "../domain/auto-top-up.js";
import { completeAutoTopUp as complete, failAutoTopUp as failRequest, setAutoTopUp as setRule } from "../domain/auto-top-up-steps.js";
import { accountTime } from "../domain/clock.js";
import { fail, ok, type Result } from "../domain/errors.js";
import type { TopUpPack } from "../domain/grants.js";
import type { ActionValues, CompleteAutoTopUpAction, FailAutoTopUpAction, SetAutoTopUpAction } from "./commands.js";
import { type AppDeps, type Reply, refuse } from "./deps.js";
import { mutate } from "./idempotent.js";
import type { IdempotencyClaim } from "./ports.js";

export interface SetAutoTopUpInput {
  readonly accountId: string;
  /** Checked at the edge but for the pack, which is looked up here. */
  readonly settings: AutoTopUpSettings;
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

/**
 * SetAutoTopUp: the account's rule, in place of any before; a change record (AUTO_TOP_UP_SET). A
 * pack is looked up before the lock (the catalog, then the account's own packs) and kept with the
 * rule as it is now.
 */
export async function setAutoTopUp(deps: AppDeps, input: SetAutoTopUpInput): Promise<Reply> {
  let pack: TopUpPack | null = null;
  if (input.settings.size.kind === "pack") {
    const packId = input.settings.size.packId;
    pack = deps.topUpPacks.get(packId) ?? (await deps.plans.findTopUpPack(input.accountId, packId));
    if (!pack) return refuse("INVALID_FIELD", `pack_id: unknown pack ${JSON.stringify(packId.slice(0, 64))}`, { field: "pack_id" });
  }
  const valid = validateSettings(input.settings, pack ? [pack] : []);
  if (!valid.ok) return { ok: false, failure: valid.failure };
  const action: SetAutoTopUpAction = { kind: "SetAutoTopUp", settings: valid.value, pack, policy: deps.autoTopUp };
  return mutate(deps, { target: { accountId: input.accountId }, createAccount: false, idempotency: input.claim, caller: input.caller, action });
}

export interface AnswerInput {
  readonly requestId: string;
  readonly claim: IdempotencyClaim;
  readonly caller: string;
}

/**
 * CompleteAutoTopUp: billing charged the request; its credits are granted as a TOP_UP bucket.
 * The request id names the account: an id this service never made is NOT_FOUND before anything
 * is read. The claim's key is the request id itself (rpc layer), so every call to complete one
 * request, whatever its payment reference, answers as the first one did.
 */
export async function completeAutoTopUp(deps: AppDeps, input: AnswerInput & { readonly paymentReference: string }): Promise<Reply> {
  const parsed = parseRequestId(input.requestId);
  if (!parsed) return notFound(input.requestId);
  const action: CompleteAutoTopUpAction = { kind: "CompleteAutoTopUp", requestId: input.requestId, epoch: parsed.epoch, paymentReference: input.paymentReference, bucketId: deps.newId() };
  return mutate(deps, { target: { accountId: parsed.accountId }, createAccount: false, idempotency: input.claim, caller: input.caller, action });
}

/** FailAutoTopUp: billing could not charge the request. */
export async function failAutoTopUp(deps: AppDeps, input: AnswerInput & { readonly reason: string }): Promise<Reply> {
  const parsed = parseRequestId(input.requestId);
  if (!parsed) return notFound(input.requestId);
  const action: FailAutoTopUpAction = { kind: "FailAutoTopUp", requestId: input.requestId, epoch: parsed.epoch, reason: input.reason, policy: deps.autoTopUp };
  return mutate(deps, { target: { accountId: parsed.accountId }, createAccount: false, idempotency: input.claim, caller: input.caller, action });
}

function notFound(requestId: string): Reply {
  return refuse("AUTO_TOP_UP_REQUEST_NOT_FOUND", `auto top-up request ${requestId} does not exist`, { request_id: requestId });
}

/**
 * GetAutoTopUp: the rule as of now by the account's clock (null: none). A read without a lock: a
 * request past its expiry, or a month past the one counted, is settled in the read's own copy.
 */
export async function getAutoTopUp(deps: AppDeps, accountId: string): Promise<Result<AutoTopUpView | null>> {
  const now = deps.clock.now();
  const read = await deps.store.readBook(accountId, now);
  if (!read) return fail("ACCOUNT_NOT_FOUND", `account ${accountId} not found`, { account_id: accountId });
  const { book } = read;
  if (!book.autoTopUp) return ok(null);
  const at = accountTime(book.clockOffsetMs, now);
  settleAutoTopUp(book.autoTopUp, at);
  return ok(describeAutoTopUp(accountId, book.autoTopUp.rule, at));
}

export function applySetAutoTopUp(book: AccountBook, action: SetAutoTopUpAction, now: Date): Result<ActionValues["SetAutoTopUp"]> {
  return ok({ rule: setRule(book, action.settings, action.pack, now, action.policy) });
}

export function applyCompleteAutoTopUp(book: AccountBook, action: CompleteAutoTopUpAction, now: Date): Result<ActionValues["CompleteAutoTopUp"]> {
  const done = complete(book, action.epoch, action.requestId, action.paymentReference, action.bucketId, now);
  return done.ok ? ok({ ...done.value, balance: book.balance(now) }) : done;
}

export function applyFailAutoTopUp(book: AccountBook, action: FailAutoTopUpAction, now: Date): Result<ActionValues["FailAutoTopUp"]> {
  return failRequest(book, action.epoch, action.requestId, action.reason, now, action.policy);
}
