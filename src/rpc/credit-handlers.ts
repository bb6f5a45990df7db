import { create } from "@bufbuild/protobuf";
import { encodeMessage } from "./binary-encoder.js";
import type { BalanceWatch } from "../app/balance-watch.js";
import type { AppDeps } from "../app/deps.js";
import { purchaseTopUp } from "../app/grants.js";
import { completeAutoTopUp, failAutoTopUp } from "../app/auto-top-up.js";
import { MAX_FAILURE_REASON_LENGTH } from "./auto-top-up-encoding.js";
import { commit, type Cost, extendReservation, release, reserve } from "../app/holds.js";
import { getBalance, getReservation } from "../app/queries.js";
import { getSpendLimits } from "../app/spend-limits.js";
import { forecastBalance, getUsage } from "../app/usage.js";
import * as usage from "./usage-encoding.js";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { spendLimit } from "./spend-encoding.js";
import {
  type CommitRequest,
  CommitRequestSchema,
  type ExtendReservationRequest,
  ExtendReservationRequestSchema,
  type GetBalanceRequest,
  type GetReservationRequest,
  type GetSpendLimitsRequest,
  type GetUsageRequest,
  type ForecastBalanceRequest,
  GetSpendLimitsResponseSchema,
  GetReservationResponseSchema,
  type PurchaseTopUpRequest,
  type CompleteAutoTopUpRequest,
  CompleteAutoTopUpRequestSchema,
  type FailAutoTopUpRequest,
  FailAutoTopUpRequestSchema,
  PurchaseTopUpRequestSchema,
  type ReleaseRequest,
  ReleaseRequestSchema,
  type ReserveRequest,
  ReserveRequestSchema,
  type WatchBalanceRequest,
  type WatchBalanceResponseSchema,
} from "../gen/credit/v1/credit_service_pb.js";
import { getBalanceEncoding } from "./balance-encoding.js";
import { CreditService } from "../gen/credit/v1/credit_service_pb.js";
import * as decode from "./decode.js";
import * as encode from "./encode.js";
import { type CallContext, EncodedResponse, type ServerStream, type SomeHandlers } from "./grpc-adapter.js";
import { reply } from "./reply.js";
import { idempotencyClaim } from "./request-hash.js";

export interface HoldLimits {
  readonly defaultTtlMs: number;
  readonly maxTtlMs: number;
}

const RELEASE_REASONS = encode.inverse(encode.RELEASE_REASONS);

/** CreditService: decode and validate → use case → encode. No rules live here. */
export function creditHandlers(deps: AppDeps, limits: HoldLimits, watch: BalanceWatch) {
  return {
    async reserve(req: ReserveRequest, ctx: CallContext) {
      const accountId = decode.id(req.accountId, "account_id");
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      const cost = decodeCost(req.cost, false);
      const ttlMs = decode.ttl(req.ttl, "ttl", limits.defaultTtlMs, limits.maxTtlMs);
      const metadata = decode.metadata(req.metadata);
      const memberId = decode.optionalId(req.memberId, "member_id");
      const claim = idempotencyClaim(ctx.method, ReserveRequestSchema, req, key);
      return reply(await reserve(deps, { accountId, cost, ttlMs, metadata, memberId, claim, caller: ctx.caller }));
    },

    async commit(req: CommitRequest, ctx: CallContext) {
      // A UUID's letter case is not part of it: the id is hashed (and used) as decoded, in lower case.
      const reservationId = decode.uuid(req.reservationId, "reservation_id");
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      const actual = decodeCost(req.actual, true);
      const claim = idempotencyClaim(ctx.method, CommitRequestSchema, { ...req, reservationId }, key);
      return reply(await commit(deps, { reservationId, actual, claim, caller: ctx.caller }));
    },

    async release(req: ReleaseRequest, ctx: CallContext) {
      const reservationId = decode.uuid(req.reservationId, "reservation_id");
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      const reason = decode.enumValue(req.reason, "reason", RELEASE_REASONS);
      const detail = decode.text(req.detail, "detail");
      const claim = idempotencyClaim(ctx.method, ReleaseRequestSchema, { ...req, reservationId }, key);
      return reply(await release(deps, { reservationId, reason, detail, claim, caller: ctx.caller }));
    },

    async extendReservation(req: ExtendReservationRequest, ctx: CallContext) {
      const reservationId = decode.uuid(req.reservationId, "reservation_id");
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      if (req.ttl === undefined) throw decode.invalid("ttl", "is required");
      const ttlMs = decode.ttl(req.ttl, "ttl", limits.defaultTtlMs, limits.maxTtlMs);
      const claim = idempotencyClaim(ctx.method, ExtendReservationRequestSchema, { ...req, reservationId }, key);
      return reply(await extendReservation(deps, { reservationId, ttlMs, claim, caller: ctx.caller }));
    },

    async getBalance(req: GetBalanceRequest) {
      const accountId = decode.id(req.accountId, "account_id");
      return reply(
        await getBalance(deps, accountId, getBalanceEncoding),
      );
    },

    async watchBalance(req: WatchBalanceRequest, _ctx: CallContext, stream: ServerStream<typeof WatchBalanceResponseSchema>) {
      const accountId = decode.id(req.accountId, "account_id");
      const watcher = await watch.watch(accountId, stream.signal);
      // Each state is written as it is offered; while a slow client drains, newer states replace
      // the one in the watcher's mailbox (the latest is what it gets next).
      await watcher.deliver({ write: (update) => stream.write(new EncodedResponse(update.bytes)), drained: () => stream.drained() });
    },

    async getReservation(req: GetReservationRequest) {
      const reservationId = decode.uuid(req.reservationId, "reservation_id");
      return reply(
        await getReservation(deps, reservationId, (r) =>
          encodeMessage(GetReservationResponseSchema, create(GetReservationResponseSchema, { reservation: encode.reservation(r) })),
        ),
      );
    },

    async getSpendLimits(req: GetSpendLimitsRequest) {
      const accountId = decode.id(req.accountId, "account_id");
      const memberId = decode.optionalId(req.memberId, "member_id");
      const read = await getSpendLimits(deps, accountId, memberId);
      if (!read.ok) return reply(read);
      const { limits, asOf } = read.value;
      return new EncodedResponse(
        encodeMessage(GetSpendLimitsResponseSchema, create(GetSpendLimitsResponseSchema, { limits: limits.map(spendLimit), asOf: timestampFromDate(asOf) })),
      );
    },

    async getUsage(req: GetUsageRequest) {
      const read = await getUsage(deps, usage.usageQuery(req));
      return read.ok ? new EncodedResponse(usage.usageResponse(read.value)) : reply(read);
    },

    async forecastBalance(req: ForecastBalanceRequest) {
      const accountId = decode.id(req.accountId, "account_id");
      const read = await forecastBalance(deps, accountId);
      return read.ok ? new EncodedResponse(usage.forecastResponse(read.value)) : reply(read);
    },

    async purchaseTopUp(req: PurchaseTopUpRequest, ctx: CallContext) {
      const accountId = decode.id(req.accountId, "account_id");
      const key = decode.id(req.paymentReference, "payment_reference");
      const claim = idempotencyClaim(ctx.method, PurchaseTopUpRequestSchema, req, key);
      const pack = decodePack(req);
      return reply(await purchaseTopUp(deps, { accountId, pack, claim, caller: ctx.caller }));
    },

    async completeAutoTopUp(req: CompleteAutoTopUpRequest, ctx: CallContext) {
      const requestId = decode.id(req.requestId, "request_id");
      const paymentReference = decode.id(req.paymentReference, "payment_reference");
      const claim = answerClaim(ctx.method, requestId, CompleteAutoTopUpRequestSchema);
      return reply(await completeAutoTopUp(deps, { requestId, paymentReference, claim, caller: ctx.caller }));
    },

    async failAutoTopUp(req: FailAutoTopUpRequest, ctx: CallContext) {
      const requestId = decode.id(req.requestId, "request_id");
      const reason = decode.text(req.reason, "reason", { required: true, max: MAX_FAILURE_REASON_LENGTH });
      const claim = answerClaim(ctx.method, requestId, FailAutoTopUpRequestSchema);
      return reply(await failAutoTopUp(deps, { requestId, reason, claim, caller: ctx.caller }));
    },
  } satisfies SomeHandlers<typeof CreditService>;
}

/**
 * An answer to an auto top-up request is keyed by the request itself and the method (a space,
 * which no client key may hold, keeps it apart from every key a client chooses), and fingerprinted
 * by the request id alone: a second answer of the same kind, whatever its payment reference or
 * reason, replays the first one's response.
 */
function answerClaim(method: string, requestId: string, schema: typeof CompleteAutoTopUpRequestSchema | typeof FailAutoTopUpRequestSchema) {
  const name = method.slice(method.lastIndexOf("/") + 1);
  return idempotencyClaim(method, schema as typeof CompleteAutoTopUpRequestSchema, create(schema as typeof CompleteAutoTopUpRequestSchema, { requestId }), `${name} ${requestId}`);
}

function decodeCost(cost: ReserveRequest["cost"] | CommitRequest["actual"], allowZero: boolean): Cost {
  switch (cost.case) {
    case "amount":
      return { amount: decode.credits(cost.value, "amount", { allowZero }) };
    case "spec":
      return { spec: decode.spec(cost.value) };
    case undefined:
      throw decode.invalid("amount", "an amount or a spec is required");
  }
}

function decodePack(req: PurchaseTopUpRequest) {
  switch (req.pack.case) {
    case "packId":
      return { packId: decode.id(req.pack.value, "pack_id") };
    case "customPack": {
      const custom = req.pack.value;
      return {
        custom: {
          credits: decode.credits(custom.credits, "custom_pack.credits"),
          price: decode.money(custom.price, "custom_pack.price"),
          validityMonths: decode.validityMonths(custom.validityMonths, "custom_pack.validity_months"),
        },
      };
    }
    case undefined:
      throw decode.invalid("pack_id", "a pack_id or custom_pack is required");
  }
}
