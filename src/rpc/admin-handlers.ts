import { create } from "@bufbuild/protobuf";
import { encodeMessage } from "./binary-encoder.js";
import type { AppDeps } from "../app/deps.js";
import { setBalanceAlert } from "../app/alerts.js";
import { setConcurrencyLimit } from "../app/concurrency-limits.js";
import { removeSpendLimit, setSpendLimit } from "../app/spend-limits.js";
import { getAutoTopUp, setAutoTopUp } from "../app/auto-top-up.js";
import * as autoTopUp from "./auto-top-up-encoding.js";
import * as spend from "./spend-encoding.js";
import { MAX_OPEN_HOLDS_CAP } from "../domain/concurrency-limit.js";
import { adjustCredits } from "../app/grants.js";
import { listLedgerEntries, reconcile } from "../app/queries.js";
import {
  ReconcileDifferenceSchema,
  type ReconcileRequest,
  ReconcileResponseSchema,
  type AdjustCreditsRequest,
  AdjustCreditsRequestSchema,
  type ListLedgerEntriesRequest,
  type SetBalanceAlertRequest,
  SetBalanceAlertRequestSchema,
  type SetConcurrencyLimitRequest,
  SetConcurrencyLimitRequestSchema,
  type SetSpendLimitRequest,
  SetSpendLimitRequestSchema,
  type RemoveSpendLimitRequest,
  RemoveSpendLimitRequestSchema,
  ListLedgerEntriesResponseSchema,
  type SetAutoTopUpRequest,
  SetAutoTopUpRequestSchema,
  type GetAutoTopUpRequest,
  GetAutoTopUpResponseSchema,
} from "../gen/credit/v1/admin_service_pb.js";
import { CreditAdminService } from "../gen/credit/v1/admin_service_pb.js";
import { alertThreshold } from "./alert-encoding.js";
import * as decode from "./decode.js";
import * as encode from "./encode.js";
import type { CallContext, SomeHandlers } from "./grpc-adapter.js";
import { reply } from "./reply.js";
import { idempotencyClaim } from "./request-hash.js";

const ENTRY_KINDS = encode.inverse(encode.ENTRY_KINDS);
const MAX_PAGE_SIZE = 1000;
const DEFAULT_PAGE_SIZE = 100;
const INT64_MAX = 9_223_372_036_854_775_807n;

/** Page tokens are opaque to callers: the last entry id of the previous page, base64url-encoded. */
function decodePageToken(token: string): bigint | null {
  if (token === "") return null;
  const raw = Buffer.from(token, "base64url").toString("utf8");
  const afterEntryId = /^e:\d{1,19}$/.test(raw) ? BigInt(raw.slice(2)) : -1n;
  if (afterEntryId < 0n || afterEntryId > INT64_MAX) throw decode.invalid("page_token", "is not a token this service issued");
  return afterEntryId;
}

function encodePageToken(afterEntryId: bigint | null): string {
  return afterEntryId === null ? "" : Buffer.from(`e:${afterEntryId}`, "utf8").toString("base64url");
}

/** CreditAdminService: support tools. */
export function adminHandlers(deps: AppDeps) {
  return {
    async adjustCredits(req: AdjustCreditsRequest, ctx: CallContext) {
      const accountId = decode.id(req.accountId, "account_id");
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      const amount = decode.credits(req.amount, "amount");
      const expiresAt = decode.instant(req.expiresAt, "expires_at");
      const reason = decode.text(req.reason, "reason", { required: true });
      const claim = idempotencyClaim(ctx.method, AdjustCreditsRequestSchema, req, key);
      return reply(await adjustCredits(deps, { accountId, amount, expiresAt, reason, claim, caller: ctx.caller }));
    },

    async setBalanceAlert(req: SetBalanceAlertRequest, ctx: CallContext) {
      const accountId = decode.id(req.accountId, "account_id");
      const threshold = alertThreshold(req.threshold);
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      const claim = idempotencyClaim(ctx.method, SetBalanceAlertRequestSchema, req, key);
      return reply(await setBalanceAlert(deps, { accountId, threshold, claim, caller: ctx.caller }));
    },

    async setConcurrencyLimit(req: SetConcurrencyLimitRequest, ctx: CallContext) {
      const accountId = decode.id(req.accountId, "account_id");
      const memberId = decode.optionalId(req.memberId, "member_id");
      if (req.maxOpenHolds > MAX_OPEN_HOLDS_CAP) throw decode.invalid("max_open_holds", `must be at most ${MAX_OPEN_HOLDS_CAP} (0: no cap)`);
      const maxHeldCredits = decode.credits(req.maxHeldCredits, "max_held_credits", { allowZero: true });
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      const claim = idempotencyClaim(ctx.method, SetConcurrencyLimitRequestSchema, req, key);
      const limit = { memberId, maxOpenHolds: req.maxOpenHolds, maxHeldCredits };
      return reply(await setConcurrencyLimit(deps, { accountId, limit, claim, caller: ctx.caller }));
    },

    async setSpendLimit(req: SetSpendLimitRequest, ctx: CallContext) {
      const accountId = decode.id(req.accountId, "account_id");
      const limit = spend.spec(req);
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      const claim = idempotencyClaim(ctx.method, SetSpendLimitRequestSchema, req, key);
      return reply(await setSpendLimit(deps, { accountId, limit, claim, caller: ctx.caller }));
    },

    async removeSpendLimit(req: RemoveSpendLimitRequest, ctx: CallContext) {
      const accountId = decode.id(req.accountId, "account_id");
      const memberId = decode.optionalId(req.memberId, "member_id");
      const period = spend.period(req.period);
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      const claim = idempotencyClaim(ctx.method, RemoveSpendLimitRequestSchema, req, key);
      return reply(await removeSpendLimit(deps, { accountId, memberId, period, claim, caller: ctx.caller }));
    },

    async setAutoTopUp(req: SetAutoTopUpRequest, ctx: CallContext) {
      const accountId = decode.id(req.accountId, "account_id");
      const settings = autoTopUp.settings(req);
      const key = decode.id(req.idempotencyKey, "idempotency_key");
      const claim = idempotencyClaim(ctx.method, SetAutoTopUpRequestSchema, req, key);
      return reply(await setAutoTopUp(deps, { accountId, settings, claim, caller: ctx.caller }));
    },

    async getAutoTopUp(req: GetAutoTopUpRequest) {
      const accountId = decode.id(req.accountId, "account_id");
      const read = await getAutoTopUp(deps, accountId);
      return reply(
        read.ok
          ? { ok: true, bytes: encodeMessage(GetAutoTopUpResponseSchema, create(GetAutoTopUpResponseSchema, read.value ? { rule: autoTopUp.rule(read.value) } : {})) }
          : read,
      );
    },

    async reconcile(req: ReconcileRequest) {
      const accountId = decode.id(req.accountId, "account_id");
      return reply(
        await reconcile(deps, accountId, (differences) =>
          encodeMessage(
            ReconcileResponseSchema,
            create(ReconcileResponseSchema, {
              differences: differences.map((d) => create(ReconcileDifferenceSchema, { subject: d.subject, field: d.field, stored: d.stored, fromEntries: d.fromEntries })),
              consistent: differences.length === 0,
            }),
          ),
        ),
      );
    },

    async listLedgerEntries(req: ListLedgerEntriesRequest) {
      const accountId = decode.id(req.accountId, "account_id");
      if (req.pageSize < 0 || req.pageSize > MAX_PAGE_SIZE) throw decode.invalid("page_size", `must be 0 to ${MAX_PAGE_SIZE}`);
      const kinds = req.kinds.map((k) => decode.enumValue(k, "kinds", ENTRY_KINDS));
      const input = {
        accountId,
        afterEntryId: decodePageToken(req.pageToken),
        pageSize: req.pageSize === 0 ? DEFAULT_PAGE_SIZE : req.pageSize,
        from: decode.instant(req.startTime, "start_time"),
        to: decode.instant(req.endTime, "end_time"),
        kinds,
      };
      return reply(
        // The store ends a page before its entries pass LEDGER_PAGE_MAX_BYTES (src/store/entry-listing.ts).
        await listLedgerEntries(deps, input, (page) =>
          encodeMessage(
            ListLedgerEntriesResponseSchema,
            create(ListLedgerEntriesResponseSchema, { entries: page.entries.map(encode.ledgerEntry), nextPageToken: encodePageToken(page.nextAfterEntryId) }),
          ),
        ),
      );
    },
  } satisfies SomeHandlers<typeof CreditAdminService>;
}
