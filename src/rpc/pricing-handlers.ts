import { create } from "@bufbuild/protobuf";
import { encodeMessage } from "./binary-encoder.js";
import type { AppDeps } from "../app/deps.js";
import { getRateCard, quote, setAccountPricing } from "../app/pricing.js";
import { type SetAccountPricingRequest, SetAccountPricingResponseSchema } from "../gen/credit/v1/admin_service_pb.js";
import {
  GetRateCardResponseSchema,
  type QuoteRequest,
  QuoteResponseSchema,
  TopUpPackSchema,
} from "../gen/credit/v1/credit_service_pb.js";
import { QuoteLineSchema } from "../gen/credit/v1/types_pb.js";
import { CreditService } from "../gen/credit/v1/credit_service_pb.js";
import { CreditAdminService } from "../gen/credit/v1/admin_service_pb.js";
import * as decode from "./decode.js";
import * as encode from "./encode.js";
import type { SomeHandlers } from "./grpc-adapter.js";
import { reply } from "./reply.js";

/** CreditService pricing methods: Quote and GetRateCard. */
export function pricingHandlers(deps: AppDeps) {
  return {
    async quote(req: QuoteRequest) {
      if (!req.spec) throw decode.invalid("spec", "is required");
      const spec = decode.spec(req.spec);
      const accountId = req.accountId === "" ? null : decode.id(req.accountId, "account_id");
      return reply(
        await quote(deps, spec, accountId, (q) =>
          encodeMessage(
            QuoteResponseSchema,
            create(QuoteResponseSchema, {
              credits: q.credits,
              breakdown: q.lines.map((l) => create(QuoteLineSchema, { item: l.item, credits: l.credits, detail: l.detail })),
              rateCardVersion: q.rateCardVersion,
            }),
          ),
        ),
      );
    },

    async getRateCard() {
      return reply(
        getRateCard(deps, ({ card, packs }) =>
          encodeMessage(
            GetRateCardResponseSchema,
            create(GetRateCardResponseSchema, {
              version: card.version,
              models: [...card.models.values()].map(encode.modelRate),
              topUpPacks: packs.map((p) =>
                create(TopUpPackSchema, { packId: p.packId, credits: p.credits, price: encode.money(p.price), validityMonths: p.validityMonths }),
              ),
            }),
          ),
        ),
      );
    },
  } satisfies SomeHandlers<typeof CreditService>;
}

/** CreditAdminService pricing method: SetAccountPricing. */
export function pricingAdminHandlers(deps: AppDeps) {
  return {
    async setAccountPricing(req: SetAccountPricingRequest) {
      const accountId = decode.id(req.accountId, "account_id");
      if (req.pricePermille < 1 || req.pricePermille > 100_000) throw decode.invalid("price_permille", "must be 1 to 100000");
      return reply(
        await setAccountPricing(deps, accountId, req.pricePermille, (permille) =>
          encodeMessage(SetAccountPricingResponseSchema, create(SetAccountPricingResponseSchema, { pricePermille: permille })),
        ),
      );
    },
  } satisfies SomeHandlers<typeof CreditAdminService>;
}
