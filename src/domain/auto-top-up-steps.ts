import type { AccountBook } from "./account-book.js";
import {
  type AccountAutoTopUp,
  type AutoTopUpPolicy,
  type AutoTopUpRequest,
  type AutoTopUpSettings,
  type AutoTopUpView,
  checkThreshold,
  decideCompletion,
  decideFailure,
  describeAutoTopUp,
  recordCompletion,
  recordFailure,
  setRule,
} from "./auto-top-up.js";
import type { Bucket } from "./bucket.js";
import { fail, ok, type Result } from "./errors.js";
import { purchaseTopUp, type TopUpPack } from "./grants.js";

/**
 * The auto top-up rule (auto-top-up.ts) applied to a locked account's book: the rules there
 * decide on plain values, these steps read the book's balance, keep the requests the store writes
 * back and state the events in the change record of the command or due work that caused them.
 */

/** Calendar months a TOP_UP bucket granted by a rule sized by target lasts: the catalog packs' validity. */
export const TARGET_VALIDITY_MONTHS = 2;

/** The pack id a grant sized by target records (no catalog pack has it). */
export const TARGET_PACK_ID = "auto-top-up";

/**
 * SetAutoTopUp: the rule, in place of any before (settings validated at the edge, the pack
 * resolved). Judged at once: an account already below the threshold has its request in the same
 * change record, so the answer shows it.
 */
export function setAutoTopUp(book: AccountBook, settings: AutoTopUpSettings, pack: TopUpPack | null, now: Date, policy: AutoTopUpPolicy): AutoTopUpView {
  const { rule, events } = setRule(book.autoTopUp?.rule ?? null, settings);
  if (book.autoTopUp) book.autoTopUp.pack = pack;
  else book.autoTopUp = { rule, pack, requests: new Map(), changedRequests: new Set(), changed: true };
  book.recordAutoTopUp([{ kind: "AUTO_TOP_UP_SET", rule: describeAutoTopUp(book.accountId, rule, now) }, ...events]);
  requestIfLow(book, now, policy);
  return describeAutoTopUp(book.accountId, rule, now);
}

/**
 * After a change of the book: an armed rule whose account is now below its threshold makes its
 * one request (AUTO_TOP_UP_REQUESTED, in this change record). Also run after due work that re-armed
 * the rule or began its month again with no other change (then the request is the change record).
 */
export function requestIfLow(book: AccountBook, now: Date, policy: AutoTopUpPolicy): void {
  const a = book.autoTopUp;
  if (!a) return;
  const monthBefore = a.rule.monthStart?.getTime();
  // Nothing requested is outstanding when a request can be made (one at a time): only the
  // account's available credits count (see docs/decisions.md, "Auto top-up").
  const { request, events } = checkThreshold(a.rule, book.accountId, book.available(now), 0n, now, policy, a.pack ? [a.pack] : []);
  if (a.rule.monthStart?.getTime() !== monthBefore) a.changed = true;
  if (!request) return;
  keep(a, request);
  book.recordAutoTopUp(events);
}

export interface CompletedTopUp {
  readonly request: AutoTopUpRequest;
  /** The bucket granted; null when the request was completed before (its answer then is the request as it stands). */
  readonly bucket: Bucket | null;
  readonly late: boolean;
}

/** CompleteAutoTopUp: grants the request's credits as a TOP_UP bucket, once. */
export function completeAutoTopUp(book: AccountBook, epoch: number, requestId: string, paymentReference: string, bucketId: string, now: Date): Result<CompletedTopUp> {
  const found = named(book, epoch, requestId);
  if (!found.ok) return found;
  const { a, request } = found.value;
  const decision = decideCompletion(a.rule, request);
  if (!decision.ok) return decision;
  if (decision.value.kind === "ALREADY_COMPLETED") return ok({ request: { ...request }, bucket: null, late: false });
  const pack: TopUpPack = request.pack ?? {
    packId: TARGET_PACK_ID,
    credits: request.credits,
    price: { currencyCode: "", amountMinor: 0n },
    validityMonths: TARGET_VALIDITY_MONTHS,
  };
  const granted = purchaseTopUp(book, { bucketId, pack, paymentReference, metadata: { auto_top_up_request: requestId }, unpriced: request.pack === null }, now);
  if (!granted.ok) return granted;
  const late = decision.value.late;
  keep(a, request);
  book.recordAutoTopUp(recordCompletion(a.rule, request, paymentReference, bucketId, now, late));
  return ok({ request: { ...request }, bucket: granted.value, late });
}

/** FailAutoTopUp: records a failed payment, once; the rule re-arms or, after too many in a row, is disabled. */
export function failAutoTopUp(book: AccountBook, epoch: number, requestId: string, reason: string, now: Date, policy: AutoTopUpPolicy): Result<{ request: AutoTopUpRequest; rule: AutoTopUpView }> {
  const found = named(book, epoch, requestId);
  if (!found.ok) return found;
  const { a, request } = found.value;
  const decision = decideFailure(request);
  if (!decision.ok) return decision;
  if (decision.value.kind === "RECORD") {
    keep(a, request);
    book.recordAutoTopUp(recordFailure(a.rule, request, reason, now, policy));
  }
  return ok({ request: { ...request }, rule: describeAutoTopUp(book.accountId, a.rule, now) });
}

/** The request an answer names, as loaded (or as this batch left it). */
function named(book: AccountBook, epoch: number, requestId: string): Result<{ a: AccountAutoTopUp; request: AutoTopUpRequest }> {
  const a = book.autoTopUp;
  const request = a?.requests.get(epoch) ?? (a?.rule.outstanding?.epoch === epoch ? a.rule.outstanding : undefined);
  if (!a || !request) return fail("AUTO_TOP_UP_REQUEST_NOT_FOUND", `auto top-up request ${requestId} does not exist`, { request_id: requestId });
  // The rule's outstanding request and the loaded row are one request: answer the rule's (it is what the rule compares).
  const live = a.rule.outstanding?.epoch === epoch ? a.rule.outstanding : request;
  return ok({ a, request: live });
}

function keep(a: AccountAutoTopUp, request: AutoTopUpRequest): void {
  a.requests.set(request.epoch, request);
  a.changedRequests.add(request.epoch);
  a.changed = true;
}
