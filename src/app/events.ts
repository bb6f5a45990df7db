import { fail, type Result } from "../domain/errors.js";
import type { EventFeed } from "./event-feed.js";
import type { EventCursor, EventOutbox, EventQuery, FeedEvent } from "./ports.js";

/** Formats a cursor: `P` after the whole batch at position P, `P.I` after its event I. */
export function formatCursor(cursor: EventCursor): string {
  return cursor.idx === null ? cursor.position.toString() : `${cursor.position}.${cursor.idx}`;
}

const CURSOR = /^(0|[1-9]\d{0,18})(?:\.(0|[1-9]\d{0,8}))?$/;

/** Parses a cursor this service handed out; null when it is not one ("" is the feed's start, handled by the caller). */
export function parseCursor(text: string): EventCursor | null {
  const m = CURSOR.exec(text);
  if (!m) return null;
  const position = BigInt(m[1]!);
  if (position > 9_223_372_036_854_775_807n) return null;
  return { position, idx: m[2] === undefined ? null : Number(m[2]) };
}

/** An event's own cursor: resuming after it delivers what follows it. */
export function eventCursor(event: FeedEvent): EventCursor {
  return { position: event.position, idx: event.lastOfBatch ? null : event.idx };
}

/** An event's id: its batch and place, stable across redeliveries (the cursor's position is not known when it is written). */
export function eventId(event: FeedEvent): string {
  return `${event.batchId}-${event.idx}`;
}

export interface EventPageResult {
  readonly events: readonly FeedEvent[];
  readonly next: EventCursor;
  readonly head: bigint;
}

/** One page of the feed, or why the cursor cannot be served. */
export async function listEvents(outbox: EventOutbox, query: EventQuery): Promise<Result<EventPageResult>> {
  const page = await outbox.page(query);
  switch (page.kind) {
    case "page":
      return { ok: true, value: page };
    case "expired":
      return fail("CURSOR_EXPIRED", `events before cursor ${formatCursor(page.oldest)} are no longer retained`, { oldest_cursor: formatCursor(page.oldest) });
    case "ahead":
      return fail("INVALID_FIELD", `after_cursor: is past the end of the feed (${formatCursor(page.head)})`, { field: "after_cursor" });
  }
}

/** How long a stream that has read everything waits before reading again if nothing announces news. */
const IDLE_RECHECK_MS = 1000;

/**
 * Every event after `query.after`, then each new one as it is numbered, until `signal` aborts:
 * `send` is awaited for each (a slow consumer slows its own stream only). A cursor that cannot be
 * served ends the stream with the failure.
 */
export async function streamEvents(
  outbox: EventOutbox,
  feed: EventFeed,
  query: EventQuery,
  signal: AbortSignal,
  send: (event: FeedEvent) => Promise<void>,
): Promise<Result<void>> {
  let after = query.after;
  while (!signal.aborted) {
    if (feed.stopped) return fail("SHUTTING_DOWN", "the server is shutting down: resume from the last cursor on another server");
    const page = await listEvents(outbox, { ...query, after });
    if (!page.ok) return page;
    for (const event of page.value.events) {
      if (signal.aborted) break;
      await send(event);
    }
    after = page.value.next;
    if (page.value.events.length < query.limit && page.value.next.position >= page.value.head) {
      await feed.next(page.value.head, IDLE_RECHECK_MS, signal);
    }
  }
  return { ok: true, value: undefined };
}
