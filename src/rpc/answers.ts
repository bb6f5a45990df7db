import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HoldResult } from "../app/commands.js";
import type { AnswerEncoders } from "../app/ports.js";
import {
  AdjustCreditsResponseSchema,
  AdvanceTestClockResponseSchema,
  ConcurrencyLimitSchema,
  SetBalanceAlertResponseSchema,
  SetConcurrencyLimitResponseSchema,
  RemoveSpendLimitResponseSchema,
  SetSpendLimitResponseSchema,
  SetAutoTopUpResponseSchema,
} from "../gen/credit/v1/admin_service_pb.js";
import * as autoTopUp from "./auto-top-up-encoding.js";
import { spendLimit } from "./spend-encoding.js";
import { alertSetting } from "./alert-encoding.js";
import {
  ChangePlanResponseSchema,
  CommitResponseSchema,
  CompleteAutoTopUpResponseSchema,
  FailAutoTopUpResponseSchema,
  ExtendReservationResponseSchema,
  PurchaseTopUpResponseSchema,
  ReleaseResponseSchema,
  ReserveResponseSchema,
} from "../gen/credit/v1/credit_service_pb.js";
import { encodeMessage } from "./binary-encoder.js";
import * as encode from "./encode.js";

/** Reserve, Commit and Release responses have the same shape: the reservation and the balance after. */
function holdResult(schema: typeof ReserveResponseSchema | typeof CommitResponseSchema | typeof ReleaseResponseSchema) {
  return (r: HoldResult) => {
    const fields = { reservation: encode.reservation(r.reservation), balance: encode.balance(r.balance) };
    return encodeMessage(schema as typeof ReserveResponseSchema, create(schema as typeof ReserveResponseSchema, fields));
  };
}

/**
 * The answer of every recorded command, encoded inside the apply stage (app/apply.ts) so that the
 * bytes stored with the operation record are the bytes the first caller gets and every replay returns.
 */
export const ANSWERS: AnswerEncoders = {
  Reserve: holdResult(ReserveResponseSchema),
  Commit: holdResult(CommitResponseSchema),
  Release: holdResult(ReleaseResponseSchema),
  ExtendReservation: (r) => encodeMessage(ExtendReservationResponseSchema, create(ExtendReservationResponseSchema, { reservation: encode.reservation(r.reservation) })),
  PurchaseTopUp: (g) =>
    encodeMessage(
      PurchaseTopUpResponseSchema,
      create(PurchaseTopUpResponseSchema, { bucket: encode.bucket(g.bucket), balance: encode.balance(g.balance), price: g.price ? encode.money(g.price) : undefined }),
    ),
  AdjustCredits: (g) =>
    encodeMessage(AdjustCreditsResponseSchema, create(AdjustCreditsResponseSchema, { bucket: encode.bucket(g.bucket), balance: encode.balance(g.balance) })),
  ChangePlan: ({ change, balance }) =>
    encodeMessage(
      ChangePlanResponseSchema,
      create(ChangePlanResponseSchema, {
        subscription: balance.subscription ? encode.subscription(balance.subscription) : undefined,
        change: encode.CHANGE_KINDS[change.kind],
        effectiveAt: timestampFromDate(change.effectiveAt),
        proratedCharge: encode.money(change.proratedCharge),
        creditsGranted: change.creditsGranted,
        balance: encode.balance(balance),
      }),
    ),
  AdvanceTestClock: ({ now, balance }) =>
    encodeMessage(AdvanceTestClockResponseSchema, create(AdvanceTestClockResponseSchema, { now: timestampFromDate(now), balance: encode.balance(balance) })),
  SetBalanceAlert: ({ alert, balance }) =>
    encodeMessage(SetBalanceAlertResponseSchema, create(SetBalanceAlertResponseSchema, { alert: alertSetting(alert), balance: encode.balance(balance) })),
  SetConcurrencyLimit: ({ limit }) =>
    encodeMessage(
      SetConcurrencyLimitResponseSchema,
      create(SetConcurrencyLimitResponseSchema, {
        limit: create(ConcurrencyLimitSchema, {
          memberId: limit.memberId,
          maxOpenHolds: limit.maxOpenHolds,
          maxHeldCredits: limit.maxHeldCredits,
          openHolds: limit.openHolds,
          heldCredits: limit.heldCredits,
        }),
      }),
    ),
  SetSpendLimit: ({ limit }) => encodeMessage(SetSpendLimitResponseSchema, create(SetSpendLimitResponseSchema, { limit: spendLimit(limit) })),
  RemoveSpendLimit: ({ removed }) => encodeMessage(RemoveSpendLimitResponseSchema, create(RemoveSpendLimitResponseSchema, { removed: spendLimit(removed) })),
  SetAutoTopUp: ({ rule }) => encodeMessage(SetAutoTopUpResponseSchema, create(SetAutoTopUpResponseSchema, { rule: autoTopUp.rule(rule) })),
  CompleteAutoTopUp: ({ request, bucket, balance, late }) =>
    encodeMessage(
      CompleteAutoTopUpResponseSchema,
      create(CompleteAutoTopUpResponseSchema, { request: autoTopUp.request(request), ...(bucket ? { bucket: encode.bucket(bucket) } : {}), balance: encode.balance(balance), late }),
    ),
  FailAutoTopUp: ({ request, rule }) =>
    encodeMessage(FailAutoTopUpResponseSchema, create(FailAutoTopUpResponseSchema, { request: autoTopUp.request(request), rule: autoTopUp.rule(rule) })),
};
