import { create } from "@bufbuild/protobuf";
import type { EventFeed } from "../app/event-feed.js";
import { eventCursor, eventId, formatCursor, listEvents, parseCursor, streamEvents } from "../app/events.js";
import type { EventCursor, EventOutbox, EventQuery, FeedEvent } from "../app/ports.js";
import type { LedgerEventKind } from "../domain/events.js";
import { FailureError } from "../domain/errors.js";
import { CreditEventService, type EventKind, type ListEventsRequest, ListEventsResponseSchema, type StreamEventsRequest } from "../gen/credit/v1/event_service_pb.js";
import { encodeMessage } from "./binary-encoder.js";
import * as decode from "./decode.js";
import { EVENT_KIND_NAMES, feedEventBytes } from "./event-encoding.js";
import { EncodedResponse, type ServiceHandlers } from "./grpc-adapter.js";

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;
/** A page's events stop before this many bytes (an event holds at most a few KiB; grpc-js sends at most 4 MiB). */
const MAX_PAGE_BYTES = 2 * 1024 * 1024;
/** A stream reads the feed in pages of this many events. */
const STREAM_PAGE = 1000;

function cursorOf(text: string): EventCursor | null {
  if (text === "") return null;
  const cursor = parseCursor(text);
  if (!cursor) throw decode.invalid("after_cursor", "is not a cursor of this feed");
  return cursor;
}

function kindsOf(kinds: readonly EventKind[]): LedgerEventKind[] {
  return [...new Set(kinds.map((k) => decode.enumValue(k, "kinds", EVENT_KIND_NAMES)))];
}

/** An account filter: empty is every account; an account with no events yet simply has none. */
function accountOf(accountId: string): string | null {
  return accountId === "" ? null : decode.id(accountId, "account_id");
}

function pageSize(value: number): number {
  if (value < 0) throw decode.invalid("page_size", "must not be negative");
  if (value > MAX_PAGE_SIZE) throw decode.invalid("page_size", `must be at most ${MAX_PAGE_SIZE}`);
  return value === 0 ? DEFAULT_PAGE_SIZE : value;
}

function bytesOf(event: FeedEvent): Buffer {
  return feedEventBytes({ ...event, eventId: eventId(event), cursor: formatCursor(eventCursor(event)) });
}

/** CreditEventService: decode and validate → feed → encode. */
export function eventHandlers(outbox: EventOutbox, feed: EventFeed): ServiceHandlers<typeof CreditEventService> {
  return {
    async listEvents(req: ListEventsRequest) {
      const query: EventQuery = { after: cursorOf(req.afterCursor), limit: pageSize(req.pageSize), kinds: kindsOf(req.kinds), accountId: accountOf(req.accountId) };
      const page = await listEvents(outbox, query);
      if (!page.ok) throw new FailureError(page.failure);
      // The events are already encoded (envelope + stored payload): the page is assembled from their bytes.
      // A page also ends before an event that would take the answer past MAX_PAGE_BYTES.
      const parts: Buffer[] = [];
      let size = 0;
      let nextCursor = page.value.next;
      for (const event of page.value.events) {
        const bytes = bytesOf(event);
        const part = Buffer.concat([lengthDelimitedTag(1, bytes.length), bytes]);
        if (parts.length > 0 && size + part.length > MAX_PAGE_BYTES) {
          nextCursor = eventCursor(page.value.events[parts.length - 1]!);
          break;
        }
        parts.push(part);
        size += part.length;
      }
      const next = encodeMessage(ListEventsResponseSchema, create(ListEventsResponseSchema, { nextCursor: formatCursor(nextCursor) }));
      return new EncodedResponse(Buffer.concat([...parts, next]));
    },

    async streamEvents(req: StreamEventsRequest, _ctx, stream) {
      const query: EventQuery = { after: cursorOf(req.afterCursor), limit: STREAM_PAGE, kinds: kindsOf(req.kinds), accountId: accountOf(req.accountId) };
      const result = await streamEvents(outbox, feed, query, stream.signal, (event) => stream.send(new EncodedResponse(bytesOf(event))));
      if (!result.ok) throw new FailureError(result.failure);
    },
  };
}

/** The tag and length of a length-delimited field (a repeated message's element). */
function lengthDelimitedTag(field: number, length: number): Buffer {
  const out: number[] = [(field << 3) | 2];
  let n = length;
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}
