import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { pause } from "./pause.js";
import type { CreditEventService, Event, EventKind } from "../gen/credit/v1/event_service_pb.js";

export interface EventConsumerOptions {
  /** The events client, or a function giving the one to use for each (re)connection (to fail over to another server). */
  readonly events: Client<typeof CreditEventService> | (() => Client<typeof CreditEventService>);
  /** The cursor to resume after (the last one `saveCursor` stored), or "" for the oldest retained event. */
  readonly loadCursor: () => Promise<string> | string;
  /** Handles one event; the event counts as consumed once this resolves (a throw stops the consumer). */
  readonly handle: (event: Event) => Promise<void> | void;
  /** Stores the cursor after each handled event, so a restart resumes after it. */
  readonly saveCursor: (cursor: string) => Promise<void> | void;
  readonly kinds?: readonly EventKind[];
  readonly accountId?: string;
  /** Stops the consumer. */
  readonly signal?: AbortSignal;
  /** First back-off after a lost stream; doubles up to `maxBackoffMs` (defaults 100 ms, 5 s). */
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /** Told of each lost stream before the consumer reconnects. */
  readonly onReconnect?: (err: ConnectError) => void;
}

/**
 * Codes after which the stream is opened again: the server went away or is shutting down (a
 * process killed mid-stream resets it: CANCELED without our own signal aborting), or is busy.
 */
const RECONNECT = new Set([Code.Unavailable, Code.Canceled, Code.Aborted, Code.Internal, Code.Unknown, Code.DeadlineExceeded, Code.ResourceExhausted]);

/**
 * Consumes the event feed at least once: streams from the stored cursor, hands each event to
 * `handle`, stores its cursor, and on a lost stream opens it again after the stored cursor (with
 * back-off). Events may come twice after a reconnect (a cursor stored just before a crash is
 * behind what was handled): deduplicate on `event_id` if handling twice matters. An expired
 * cursor (OUT_OF_RANGE, CURSOR_EXPIRED) or bad input ends it with the error: that needs a decision.
 * Resolves when `signal` aborts.
 */
export async function consumeEvents(options: EventConsumerOptions): Promise<void> {
  const initial = options.initialBackoffMs ?? 100;
  const cap = options.maxBackoffMs ?? 5000;
  let failures = 0;
  while (!options.signal?.aborted) {
    try {
      const afterCursor = await options.loadCursor();
      const events = typeof options.events === "function" ? options.events() : options.events;
      const stream = events.streamEvents(
        { afterCursor, kinds: [...(options.kinds ?? [])], accountId: options.accountId ?? "" },
        { signal: options.signal, timeoutMs: 0 },
      );
      for await (const event of stream) {
        failures = 0;
        await options.handle(event);
        await options.saveCursor(event.cursor);
      }
    } catch (err) {
      const error = ConnectError.from(err);
      if (options.signal?.aborted) return;
      if (!RECONNECT.has(error.code)) throw error;
      options.onReconnect?.(error);
      failures += 1;
      await pause(Math.random() * Math.min(cap, initial * 2 ** (failures - 1)), options.signal);
    }
  }
}

