import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { EventEncoder } from "../app/ports.js";
import type { LedgerEvent, LedgerEventKind } from "../domain/events.js";
import { EventKind, EventSchema, type Event } from "../gen/credit/v1/event_service_pb.js";
import { encodeMessage } from "./binary-encoder.js";
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
  }
}

/**
 * An event's payload as the outbox stores it: the proto Event with only its payload set. Protobuf
 * messages concatenate: a reader writes the envelope (id, cursor, account, sequence, kind, times)
 * and appends these bytes, with no decoding (see feedEventBytes).
 */
export const encodeEvent: EventEncoder = (event) => encodeMessage(EventSchema, create(EventSchema, { payload: payload(event) }));

/** One event as the feed read it (store/event-feed.ts). */
export interface FeedEventRow {
  readonly eventId: string;
  readonly cursor: string;
  readonly accountId: string;
  readonly sequence: bigint;
  readonly kind: LedgerEventKind;
  readonly occurredAt: Date;
  readonly recordedAt: Date;
  readonly payload: Uint8Array;
}

/** The encoded Event: its envelope, then the stored payload bytes. */
export function feedEventBytes(row: FeedEventRow): Buffer {
  const envelope = encodeMessage(
    EventSchema,
    create(EventSchema, {
      eventId: row.eventId,
      cursor: row.cursor,
      accountId: row.accountId,
      accountSequence: row.sequence,
      kind: EVENT_KIND_CODES[row.kind],
      occurredAt: timestampFromDate(row.occurredAt),
      recordedAt: timestampFromDate(row.recordedAt),
    }),
  );
  return Buffer.concat([envelope, row.payload]);
}
