import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import type { StoredEntry } from "../../src/app/ports.js";
import type { BalanceView } from "../../src/domain/account-book.js";
import type { Bucket } from "../../src/domain/bucket.js";
import {
  MAX_BALANCE_BUCKETS,
  MAX_ID_LENGTH,
  MAX_METADATA_ENTRIES,
  MAX_METADATA_KEY_LENGTH,
  MAX_METADATA_VALUE_LENGTH,
  MAX_TEXT_LENGTH,
} from "../../src/domain/limits.js";
import type { Plan } from "../../src/domain/plan.js";
import type { Reservation } from "../../src/domain/reservation.js";
import type { SubscriptionView } from "../../src/domain/subscription.js";
import { AdjustCreditsResponseSchema, AdvanceTestClockResponseSchema, LedgerEntrySchema, SetBalanceAlertResponseSchema } from "../../src/gen/credit/v1/admin_service_pb.js";
import { alertSetting } from "../../src/rpc/alert-encoding.js";
import {
  ChangePlanResponseSchema,
  CommitResponseSchema,
  ExtendReservationResponseSchema,
  GetReservationResponseSchema,
  PlanChangeKind,
  PurchaseTopUpResponseSchema,
  ReleaseResponseSchema,
  ReserveResponseSchema,
} from "../../src/gen/credit/v1/credit_service_pb.js";
import { LEDGER_PAGE_MAX_BYTES } from "../../src/app/queries.js";
import { getBalanceEncoding } from "../../src/rpc/balance-encoding.js";
import { encodeMessage, MAX_ANSWER_BYTES } from "../../src/rpc/binary-encoder.js";
import * as encode from "../../src/rpc/encode.js";

/**
 * The worst case of every answer, computed: each field at the most it can hold — every text at
 * its longest in three-byte characters (€), ids at their longest, numbers at the widest varints,
 * times in the year 9999, a full list of buckets whose stored references predate the bound —
 * encoded through the service's own encoders. Each must stay under WORST_ANSWER_BYTES, far
 * below what grpc-js sends (MAX_ANSWER_BYTES, 4 MiB), so no accepted call can produce an answer
 * that cannot be sent, and what is stored for replays stays small.
 */

const WORST_ANSWER_BYTES = 128 * 1024;
const INT64_MAX = 2n ** 63n - 1n;
const INT32_MAX = 2 ** 31 - 1;
const LATE = new Date("9999-12-31T23:59:59.999Z");
const WIDE = "€";
const text = (units: number) => WIDE.repeat(units);
const uuid = (i: number) => `${i.toString(16).padStart(8, "f")}-ffff-ffff-ffff-ffffffffffff`;
const ACCOUNT = "a".repeat(MAX_ID_LENGTH);

/** A reference as stored before references were bounded: an adjustment's whole reason. */
function worstBucket(i: number): Bucket {
  return {
    id: uuid(i),
    accountId: ACCOUNT,
    kind: "ADJUSTMENT",
    granted: INT64_MAX,
    remaining: INT64_MAX,
    held: INT64_MAX,
    validFrom: LATE,
    expiresAt: LATE,
    sourceRef: `adjustment:${text(MAX_TEXT_LENGTH)}`,
    createdAt: LATE,
  };
}

function worstPlan(): Plan {
  return {
    planId: "p".repeat(MAX_ID_LENGTH),
    version: INT32_MAX,
    name: text(128),
    monthlyAllowance: INT64_MAX,
    price: { currencyCode: "USD", amountMinor: INT64_MAX },
    interval: "YEAR",
    accountId: ACCOUNT,
  };
}

function worstSubscription(): SubscriptionView {
  const period = { start: LATE, end: LATE };
  return {
    subscription: { accountId: ACCOUNT, plan: worstPlan(), anchor: LATE, grantedPeriod: INT32_MAX, currentBucketId: uuid(0), scheduled: { plan: worstPlan(), effectiveAt: LATE } },
    allowancePeriod: period,
    billingPeriod: period,
  };
}

function worstBalance(): BalanceView {
  return {
    accountId: ACCOUNT,
    available: INT64_MAX,
    held: INT64_MAX,
    buckets: Array.from({ length: MAX_BALANCE_BUCKETS }, (_, i) => worstBucket(i)),
    bucketCount: INT32_MAX,
    subscription: worstSubscription(),
    asOf: LATE,
  };
}

/** The most metadata Reserve accepts: every entry, each key and value at its longest. */
function worstMetadata(): Record<string, string> {
  return Object.fromEntries(
    Array.from({ length: MAX_METADATA_ENTRIES }, (_, i) => [`${String(i).padStart(2, "0")}${text(MAX_METADATA_KEY_LENGTH - 2)}`, text(MAX_METADATA_VALUE_LENGTH)]),
  );
}

function worstReservation(): Reservation {
  return {
    id: uuid(1),
    accountId: ACCOUNT,
    status: "RELEASED",
    heldAmount: INT64_MAX,
    capturedAmount: INT64_MAX,
    releasedAmount: INT64_MAX,
    allocations: [],
    expiresAt: LATE,
    createdAt: LATE,
    settledAt: LATE,
    metadata: worstMetadata(),
    releaseReason: "OTHER",
    releaseDetail: text(MAX_TEXT_LENGTH),
    pricing: {
      spec: { model: "m".repeat(MAX_ID_LENGTH), kind: "VIDEO", width: INT32_MAX, height: INT32_MAX, durationMs: 86_400_000, count: INT32_MAX, quality: "ULTRA" },
      rateCardVersion: "v".repeat(64),
      accountPermille: INT32_MAX,
      quotedCredits: INT64_MAX,
    },
    memberId: "u".repeat(MAX_ID_LENGTH),
  };
}

function worstEntry(): StoredEntry {
  return {
    entryId: INT64_MAX,
    accountId: ACCOUNT,
    kind: "HOLD",
    bucketId: uuid(2),
    reservationId: uuid(3),
    amount: INT64_MAX,
    idempotencyKey: "k".repeat(MAX_ID_LENGTH),
    caller: "c".repeat(MAX_ID_LENGTH),
    metadata: worstMetadata(),
    createdAt: LATE,
    memberId: "u".repeat(MAX_ID_LENGTH),
  };
}

function bytesOf<D extends DescMessage>(schema: D, init: MessageInitShape<D>): number {
  return encodeMessage(schema, create(schema, init)).length;
}

describe("the largest answer of each method", () => {
  const balance = encode.balance(worstBalance());
  const reservation = encode.reservation(worstReservation());
  const bucket = encode.bucket(worstBucket(7));
  const worst: [string, number][] = [
    ["Reserve", bytesOf(ReserveResponseSchema, { reservation, balance })],
    ["Commit", bytesOf(CommitResponseSchema, { reservation, balance })],
    ["Release", bytesOf(ReleaseResponseSchema, { reservation, balance })],
    ["ExtendReservation", bytesOf(ExtendReservationResponseSchema, { reservation })],
    ["GetReservation", bytesOf(GetReservationResponseSchema, { reservation })],
    ["GetBalance", getBalanceEncoding.stamp(getBalanceEncoding.body(worstBalance(), INT64_MAX), LATE).length],
    ["PurchaseTopUp", bytesOf(PurchaseTopUpResponseSchema, { bucket, balance, price: encode.money({ currencyCode: "USD", amountMinor: INT64_MAX }) })],
    ["AdjustCredits", bytesOf(AdjustCreditsResponseSchema, { bucket, balance })],
    [
      "ChangePlan",
      bytesOf(ChangePlanResponseSchema, {
        subscription: encode.subscription(worstSubscription()),
        change: PlanChangeKind.INTERVAL_CHANGED,
        effectiveAt: timestampFromDate(LATE),
        // Negative: the widest varint.
        proratedCharge: encode.money({ currencyCode: "USD", amountMinor: -1n }),
        creditsGranted: INT64_MAX,
        balance,
      }),
    ],
    ["AdvanceTestClock", bytesOf(AdvanceTestClockResponseSchema, { now: timestampFromDate(LATE), balance })],
    [
      "SetBalanceAlert",
      bytesOf(SetBalanceAlertResponseSchema, {
        alert: alertSetting({ threshold: { kind: "credits", credits: INT64_MAX }, isDefault: false, thresholdCredits: INT64_MAX, recoverAt: INT64_MAX, state: "EXHAUSTED" }),
        balance,
      }),
    ],
  ];

  it.each(worst)("%s answers at most 128 KiB (%i bytes)", (_method, bytes) => {
    expect(bytes).toBeLessThan(WORST_ANSWER_BYTES);
    expect(bytes).toBeLessThan(MAX_ANSWER_BYTES);
  });

  it("a bucket in an answer is small whatever reference was stored", () => {
    expect(bytesOf(AdjustCreditsResponseSchema, { bucket })).toBeLessThan(512);
  });

  it("a ListLedgerEntries page of at most LEDGER_PAGE_MAX_BYTES of entries (and one more of the largest) stays far below the send limit", () => {
    const entry = encodeMessage(LedgerEntrySchema, encode.ledgerEntry(worstEntry())).length;
    // Each entry adds its bytes and at most 4 of tag and length; the page token is an entry id.
    const page = LEDGER_PAGE_MAX_BYTES + entry + 4 + 64;
    expect(entry).toBeLessThan(40 * 1024);
    expect(page).toBeLessThan(MAX_ANSWER_BYTES / 2);
  });
});
