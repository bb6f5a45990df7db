import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { EventEncoder, FeedEvent } from "../app/ports.js";
import type { LedgerEvent, LedgerEventKind } from "../domain/events.js";
import { EventKind, EventSchema, type Event } from "../gen/credit/v1/event_service_pb.js";
import { alertSetting } from "./alert-encoding.js";
import { encodeMessage } from "./binary-encoder.js";
import { spendLimit } from "./spend-encoding.js";
import * as autoTopUp from "./auto-top-up-encoding.js";
import { AutoTopUpDisabledReason } from "../gen/credit/v1/event_service_pb.js";
import * as encode from "./encode.js";

export const EVENT_KIND_CODES: Readonly<Record<LedgerEventKind, EventKind>> = {
  HOLD_CREATED: EventKind.HOLD_CREATED,
  HOLD_COMMITTED: EventKind.HOLD_COMMITTED,
  HOLD_RELEASED: EventKind.HOLD_RELEASED,
  HOLD_EXPIRED: EventKind.HOLD_EXPIRED,
  HOLD_EXTENDED: EventKind.HOLD_EXTENDED,
  CREDITS_GRANTED: EventKind.CREDITS_GRANTED,
  CREDITS_EXPIRED: EventKind.CREDITS_EXPIRED,
  CREDITS_EXPIRING: EventKind.CREDITS_EXPIRING,
  PLAN_CHANGED: EventKind.PLAN_CHANGED,
  PERIOD_RENEWED: EventKind.PERIOD_RENEWED,
  BALANCE_LOW: EventKind.BALANCE_LOW,
  BALANCE_EXHAUSTED: EventKind.BALANCE_EXHAUSTED,
  BALANCE_RECOVERED: EventKind.BALANCE_RECOVERED,
  TEST_CLOCK_ADVANCED: EventKind.TEST_CLOCK_ADVANCED,
  BALANCE_ALERT_SET: EventKind.BALANCE_ALERT_SET,
  CONCURRENCY_LIMIT_SET: EventKind.CONCURRENCY_LIMIT_SET,
  SPEND_LIMIT_SET: EventKind.SPEND_LIMIT_SET,
  SPEND_LIMIT_REMOVED: EventKind.SPEND_LIMIT_REMOVED,
  SPEND_LIMIT_REACHED: EventKind.SPEND_LIMIT_REACHED,
  AUTO_TOP_UP_SET: EventKind.AUTO_TOP_UP_SET,
  AUTO_TOP_UP_REQUESTED: EventKind.AUTO_TOP_UP_REQUESTED,
  AUTO_TOP_UP_COMPLETED: EventKind.AUTO_TOP_UP_COMPLETED,
  AUTO_TOP_UP_FAILED: EventKind.AUTO_TOP_UP_FAILED,
  AUTO_TOP_UP_DISABLED: EventKind.AUTO_TOP_UP_DISABLED,
};

export const EVENT_KIND_NAMES = encode.inverse(EVENT_KIND_CODES);

function payload(event: LedgerEvent): Event["payload"] {
  switch (event.kind) {
    case "HOLD_CREATED":
    case "HOLD_COMMITTED":
    case "HOLD_RELEASED":
    case "HOLD_EXPIRED":
    case "HOLD_EXTENDED":
      return { case: "hold", value: { $typeName: "credit.v1.HoldEvent", reservation: encode.reservation(event.reservation) } };
    case "CREDITS_GRANTED":
      return { case: "creditsGranted", value: { $typeName: "credit.v1.CreditsGranted", bucket: encode.bucket(event.bucket), amount: event.amount, source: event.source } };
    case "CREDITS_EXPIRED":
      return {
        case: "creditsExpired",
        value: { $typeName: "credit.v1.CreditsExpired", bucket: encode.bucket(event.bucket), amount: event.amount, reservationId: event.reservationId ?? "" },
      };
    case "CREDITS_EXPIRING":
      return {
        case: "creditsExpiring",
        value: { $typeName: "credit.v1.CreditsExpiring", bucket: encode.bucket(event.bucket), amount: event.amount, expiresAt: timestampFromDate(event.expiresAt) },
      };
    case "BALANCE_LOW":
    case "BALANCE_EXHAUSTED":
    case "BALANCE_RECOVERED":
    case "BALANCE_ALERT_SET":
      return {
        case: "balanceAlert",
        value: {
          $typeName: "credit.v1.BalanceAlert",
          available: event.available,
          threshold: event.alert.thresholdCredits ?? 0n,
          recoverAt: event.alert.recoverAt ?? 0n,
          setting: alertSetting(event.alert),
        },
      };
    case "PLAN_CHANGED":
      return {
        case: "planChanged",
        value: {
          $typeName: "credit.v1.PlanChanged",
          change: encode.CHANGE_KINDS[event.change],
          previousPlan: event.previousPlan ? encode.plan(event.previousPlan) : undefined,
          plan: encode.plan(event.plan),
          effectiveAt: timestampFromDate(event.effectiveAt),
          proratedCharge: encode.money(event.proratedCharge),
          subscription: encode.subscription(event.subscription),
        },
      };
    case "PERIOD_RENEWED":
      return {
        case: "periodRenewed",
        value: {
          $typeName: "credit.v1.PeriodRenewed",
          plan: encode.plan(event.plan),
          periodStart: timestampFromDate(event.periodStart),
          periodEnd: timestampFromDate(event.periodEnd),
          billingPeriodRenewed: event.billingRenewed,
          charge: encode.money(event.billingRenewed ? event.plan.price : { currencyCode: event.plan.price.currencyCode, amountMinor: 0n }),
          billingPeriodEnd: timestampFromDate(event.billingPeriodEnd),
        },
      };
    case "TEST_CLOCK_ADVANCED":
      return {
        case: "testClockAdvanced",
        value: { $typeName: "credit.v1.TestClockAdvanced", advancedMs: BigInt(event.advancedMs), now: timestampFromDate(event.now) },
      };
    case "CONCURRENCY_LIMIT_SET":
      return {
        case: "concurrencyLimitSet",
        value: {
          $typeName: "credit.v1.ConcurrencyLimitSet",
          memberId: event.limit.memberId,
          maxOpenHolds: event.limit.maxOpenHolds,
          maxHeldCredits: event.limit.maxHeldCredits,
        },
      };
    case "SPEND_LIMIT_SET":
    case "SPEND_LIMIT_REMOVED":
      return { case: "spendLimit", value: spendLimit(event.limit) };
    case "SPEND_LIMIT_REACHED":
      return {
        case: "spendLimitReached",
        value: {
          $typeName: "credit.v1.SpendLimitReached",
          limit: spendLimit(event.limit),
          requested: event.requested,
          reservationId: event.reservationId,
          memberId: event.memberId,
        },
      };
    case "AUTO_TOP_UP_SET":
      return { case: "autoTopUpSet", value: { $typeName: "credit.v1.AutoTopUpSet", rule: autoTopUp.rule(event.rule) } };
    case "AUTO_TOP_UP_REQUESTED":
      return { case: "autoTopUpRequested", value: { $typeName: "credit.v1.AutoTopUpRequested", request: autoTopUp.request(event.request), available: event.available } };
    case "AUTO_TOP_UP_COMPLETED":
      return { case: "autoTopUpCompleted", value: { $typeName: "credit.v1.AutoTopUpCompleted", request: autoTopUp.request(event.request), late: event.late } };
    case "AUTO_TOP_UP_FAILED":
      return {
        case: "autoTopUpFailed",
        value: { $typeName: "credit.v1.AutoTopUpFailed", request: autoTopUp.request(event.request), failuresInRow: event.failuresInRow },
      };
    case "AUTO_TOP_UP_DISABLED":
      return {
        case: "autoTopUpDisabled",
        value: {
          $typeName: "credit.v1.AutoTopUpDisabled",
          reason: event.reason === "FAILURES" ? AutoTopUpDisabledReason.FAILURES : AutoTopUpDisabledReason.SET,
          failuresInRow: event.failuresInRow,
        },
      };
  }
}

/**
 * An event's payload as the outbox stores it: the proto Event with only its payload set. Protobuf
 * messages concatenate: a reader writes the envelope (id, cursor, account, sequence, kind, times)
 * and appends these bytes, with no decoding (see feedEventBytes).
 */
export const encodeEvent: EventEncoder = (event) => encodeMessage(EventSchema, create(EventSchema, { payload: payload(event) }));

/** One event as the feed read it (store/event-outbox.ts), with its id and cursor as answers carry them. */
export type FeedEventRow = Pick<FeedEvent, "accountId" | "sequence" | "kind" | "occurredAt" | "recordedAt" | "payload"> & {
  readonly eventId: string;
  readonly cursor: string;
};

/**
 * The encoded Event: its envelope, then the stored payload bytes. The envelope is written by hand
 * (fields 1–7, in field order, as toBinary writes them; test/unit/event-encoding.test.ts compares
 * the two): a catch-up sends tens of thousands of events a second, and building a message object
 * per event to encode seven fields cost more than the rest of the send.
 */
export function feedEventBytes(row: FeedEventRow): Buffer {
  const w = new EnvelopeWriter(row.payload.length + 160 + 3 * row.accountId.length);
  w.string(1, row.eventId);
  w.string(2, row.cursor);
  w.string(3, row.accountId);
  if (row.sequence !== 0n) w.varintField(4, row.sequence);
  w.varintField(5, BigInt(EVENT_KIND_CODES[row.kind]));
  w.timestamp(6, row.occurredAt);
  w.timestamp(7, row.recordedAt);
  w.raw(row.payload);
  return w.done();
}

/** A protobuf writer for the envelope's field types only (strings, non-negative varints, timestamps). */
class EnvelopeWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }

  private varint(value: bigint | number): void {
    this.room(10);
    let v = BigInt(value);
    while (v > 0x7fn) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
  }

  varintField(field: number, value: bigint): void {
    this.varint((field << 3) | 0);
    this.varint(value);
  }

  string(field: number, value: string): void {
    if (value.length === 0) return;
    const length = Buffer.byteLength(value);
    this.varint((field << 3) | 2);
    this.varint(length);
    this.room(length);
    this.pos += this.buf.write(value, this.pos, "utf8");
  }

  timestamp(field: number, at: Date): void {
    const ms = at.getTime();
    const seconds = Math.floor(ms / 1000);
    const nanos = (ms - seconds * 1000) * 1_000_000;
    const inner = new EnvelopeWriter(24);
    if (seconds !== 0) inner.varintField(1, BigInt.asUintN(64, BigInt(seconds)));
    if (nanos !== 0) inner.varintField(2, BigInt(nanos));
    const bytes = inner.done();
    this.varint((field << 3) | 2);
    this.varint(bytes.length);
    this.raw(bytes);
  }

  raw(bytes: Uint8Array): void {
    this.room(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  done(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}
