import { create } from "@bufbuild/protobuf";
import { encodeMessage } from "./binary-encoder.js";
import type { AppDeps } from "../app/deps.js";
import { advanceTestClock, changePlan, listPlans, setCustomPlan } from "../app/plans.js";
import type { TopUpPack } from "../domain/grants.js";
import {
  type AdvanceTestClockRequest,
  AdvanceTestClockRequestSchema,
  CustomTopUpPackOfferSchema,
  type SetCustomPlanRequest,
  SetCustomPlanResponseSchema,
} from "../gen/credit/v1/admin_service_pb.js";
import { type ChangePlanRequest, ChangePlanRequestSchema, ListPlansResponseSchema } from "../gen/credit/v1/credit_service_pb.js";
import { CreditService } from "../gen/credit/v1/credit_service_pb.js";
import { CreditAdminService } from "../gen/credit/v1/admin_service_pb.js";
import * as decode from "./decode.js";
import * as encode from "./encode.js";
import type { CallContext, SomeHandlers } from "./grpc-adapter.js";
import { reply } from "./reply.js";
import { idempotencyClaim } from "./request-hash.js";

const INTERVALS = encode.inverse(encode.INTERVALS);
const DAY_MS = 86_400_000;
const MAX_CLOCK_STEP_MS = 400 * DAY_MS;

/** CreditService plan methods: ChangePlan and ListPlans. */
export function planHandlers(deps: AppDeps) {
  return {
    async changePlan(req: ChangePlanRequest, ctx: CallContext) {
      const accountId = decode.id(req.accountId, "account_id");
      const planId = decode.id(req.planId, "plan_id");
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      const claim = idempotencyClaim(ctx.method, ChangePlanRequestSchema, req, key);
      return reply(await changePlan(deps, { accountId, planId, claim, caller: ctx.caller }));
    },

    async listPlans() {
      return reply(await listPlans(deps, (plans) => encodeMessage(ListPlansResponseSchema, create(ListPlansResponseSchema, { plans: plans.map(encode.plan) }))));
    },
  } satisfies SomeHandlers<typeof CreditService>;
}

function packOffer(pack: TopUpPack) {
  return create(CustomTopUpPackOfferSchema, {
    packId: pack.packId,
    credits: pack.credits,
    price: encode.money(pack.price),
    validityMonths: pack.validityMonths,
  });
}

/** CreditAdminService plan methods: SetCustomPlan and AdvanceTestClock. */
export function planAdminHandlers(deps: AppDeps) {
  return {
    async setCustomPlan(req: SetCustomPlanRequest) {
      const accountId = decode.id(req.accountId, "account_id");
      const plan = {
        planId: decode.id(req.planId, "plan_id"),
        name: decode.text(req.name, "name", { required: true, max: 128 }),
        monthlyAllowance: decode.credits(req.monthlyAllowance, "monthly_allowance", { allowZero: true }),
        price: decode.money(req.price, "price"),
        interval: decode.enumValue(req.interval, "interval", INTERVALS),
        accountId,
      };
      if (req.topUpPacks.length > 20) throw decode.invalid("top_up_packs", "at most 20 packs");
      const packs = req.topUpPacks.map((p, i) => ({
        packId: decode.id(p.packId, `top_up_packs[${i}].pack_id`),
        credits: decode.credits(p.credits, `top_up_packs[${i}].credits`),
        price: decode.money(p.price, `top_up_packs[${i}].price`),
        validityMonths: decode.validityMonths(p.validityMonths, `top_up_packs[${i}].validity_months`),
      }));
      if (new Set(packs.map((p) => p.packId)).size !== packs.length) throw decode.invalid("top_up_packs", "pack ids must be unique");
      return reply(
        await setCustomPlan(deps, { plan, packs }, (saved) =>
          encodeMessage(SetCustomPlanResponseSchema, create(SetCustomPlanResponseSchema, { plan: encode.plan(saved.plan), topUpPacks: saved.packs.map(packOffer) })),
        ),
      );
    },

    async advanceTestClock(req: AdvanceTestClockRequest, ctx: CallContext) {
      const accountId = decode.id(req.accountId, "account_id");
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      if (req.by === undefined) throw decode.invalid("by", "is required");
      const byMs = decode.ttl(req.by, "by", 0, MAX_CLOCK_STEP_MS);
      const claim = idempotencyClaim(ctx.method, AdvanceTestClockRequestSchema, req, key);
      return reply(await advanceTestClock(deps, { accountId, byMs, claim, caller: ctx.caller }));
    },
  } satisfies SomeHandlers<typeof CreditAdminService>;
}
