import type { EventFeed } from "./event-feed.js";
import { eventCursor, eventId } from "./events.js";
import type { EventCursor, EventOutbox, FeedEvent } from "./ports.js";

/**
 * The lease of the one relay that publishes: while `lost` has not aborted, no other relay of the
 * same stream holds it (store/relay-lease.ts). The cursor is read and written through it.
 */
export interface RelayLease {
  /** Aborts the moment the lease is lost (its connection failed, or a check went unanswered). */
  readonly lost: AbortSignal;
  /** The cursor after the last event the broker acknowledged; null before the first. */
  loadCursor(): Promise<EventCursor | null>;
  /** Stores the cursor, with how many events the broker took as new / dropped as duplicates since the last save. */
  saveCursor(cursor: EventCursor, counts: { stored: number; duplicates: number }): Promise<void>;
  /** The feed cursor of an event by its event_id; null when the feed does not hold it (pruned, or not ours). */
  cursorOfEvent(eventId: string): Promise<EventCursor | null>;
  release(): Promise<void>;
}

export interface RelayLeases {
  /** The lease if no one else holds it, else null. */
  tryAcquire(): Promise<RelayLease | null>;
  close(): Promise<void>;
}

/** What the broker answered for one event: new in the stream, or dropped as a redelivery of its event_id. */
export type PublishOutcome = "stored" | "duplicate";

/** The broker side (broker/nats-broker.ts). */
export interface EventBroker {
  /**
   * Connects if needed and makes sure the stream exists with its subjects and duplicate window.
   * Returns the dedupe id (event_id) of the stream's last message, or null when it has none.
   */
  prepare(): Promise<string | null>;
  /**
   * Sends every event at once, in order; each must be the stream's next message after the one
   * before it (the first: after `expectLast`, when not null), so the stream keeps the feed's
   * order even when a message is lost on the way or a deposed relay still sends. One promise per
   * event, settling in order; a redelivered event_id is a "duplicate", not a failure.
   */
  publish(events: readonly FeedEvent[], expectLast: string | null): Promise<PublishOutcome>[];
  close(): Promise<void>;
}

export interface EventRelayOptions {
  /** Events per round: all in flight at once, their acknowledgements awaited in order. */
  readonly batch: number;
  /** How often a relay that is not the leader tries to take the lease; the wait after losing it too. */
  readonly retryMs: number;
  /** The wait before trying the broker again after it failed (a restarting broker is back within a second or so). */
  readonly brokerRetryMs: number;
  /** Longest wait for the feed to move before reading again (the feed may miss an announcement). */
  readonly idleMs: number;
  readonly onLeader?: (leader: boolean) => void;
  readonly onPublished?: (outcome: PublishOutcome, count: number) => void;
  /** The stream already held events past the stored cursor: the relay goes on after them. */
  readonly onResume?: (stored: EventCursor | null, held: EventCursor) => void;
  readonly onError: (err: unknown, what: string) => void;
  /** Publishing works again after broker trouble. */
  readonly onRecovered?: () => void;
}

const NONE = { stored: 0, duplicates: 0 };

function after(a: EventCursor, b: EventCursor | null): boolean {
  if (b === null) return true;
  if (a.position !== b.position) return a.position > b.position;
  // At one position: null (after the whole batch) is past every index of it.
  if (a.idx === null) return b.idx !== null;
  return b.idx !== null && a.idx > b.idx;
}

/**
 * Publishes the event feed, in feed order, to a broker: on every server one relay runs, and the
 * one holding the lease publishes while the others try to take it every `retryMs`. The leader
 * reads pages after its stored cursor, sends each page at once, and stores the cursor of the last
 * event acknowledged — only after the acknowledgement, so a crash between the two republishes
 * what the broker already has, and the broker drops it by its event_id. It waits on the feed
 * (EventFeed.next) when it has caught up. Losing the lease stops it before its next send.
 */
export class EventRelay {
  private readonly stopping = new AbortController();
  private running: Promise<void> | null = null;
  private isLeader = false;

  constructor(
    private readonly outbox: EventOutbox,
    private readonly feed: EventFeed,
    private readonly leases: RelayLeases,
    private readonly broker: EventBroker,
    private readonly options: EventRelayOptions,
  ) {}

  get leader(): boolean {
    return this.isLeader;
  }

  start(): void {
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopping.abort(new Error("the relay is stopping"));
    await this.running;
    await this.leases.close().catch(() => undefined);
    await this.broker.close().catch(() => undefined);
  }

  private async run(): Promise<void> {
    const stop = this.stopping.signal;
    while (!stop.aborted) {
      let lease: RelayLease | null = null;
      try {
        lease = await this.leases.tryAcquire();
      } catch (err) {
        this.options.onError(err, "taking the relay's lease failed");
      }
      if (lease === null) {
        await pause(this.options.retryMs, stop);
        continue;
      }
      this.setLeader(true);
      try {
        await this.lead(lease, AbortSignal.any([lease.lost, stop]));
      } catch (err) {
        if (!lease.lost.aborted && !stop.aborted) this.options.onError(err, "the relay stopped publishing");
      } finally {
        this.setLeader(false);
        await lease.release().catch(() => undefined);
      }
      await pause(this.options.retryMs, stop);
    }
  }

  private setLeader(leader: boolean): void {
    if (this.isLeader === leader) return;
    this.isLeader = leader;
    this.options.onLeader?.(leader);
  }

  /** Publishes while `signal` holds. Broker trouble is waited out here; losing the lease ends it. */
  private async lead(lease: RelayLease, signal: AbortSignal): Promise<void> {
    let cursor = await lease.loadCursor();
    // undefined: what the stream ends with is not known (at the start, or after a failed send).
    let expectLast: string | null | undefined;
    // Broker trouble is told once when it starts and once when it is over, not on every retry.
    let troubled = false;
    const trouble = (err: unknown, what: string) => {
      if (!troubled) this.options.onError(err, what);
      troubled = true;
    };
    while (!signal.aborted) {
      if (expectLast === undefined) {
        try {
          expectLast = await this.broker.prepare();
        } catch (err) {
          trouble(err, "the broker is not reachable: the relay keeps trying");
          await pause(this.options.brokerRetryMs, signal);
          continue;
        }
        // The stream may be ahead of the stored cursor (a crash after the broker acknowledged,
        // before the cursor was stored): start after what it holds rather than rely on the
        // duplicate window alone, which a long outage can outlast.
        const held = expectLast === null ? null : await lease.cursorOfEvent(expectLast);
        if (held !== null && after(held, cursor)) {
          this.options.onResume?.(cursor, held);
          cursor = held;
          await lease.saveCursor(cursor, NONE);
        }
      }
      const page = await this.outbox.page({ after: cursor, limit: this.options.batch, kinds: [], accountId: null });
      if (page.kind === "expired") {
        // Retention removed events this relay never sent: say so loudly, and go on from what is kept.
        this.options.onError(new Error(`the relay's cursor is older than the retained events: resuming from ${page.oldest.position}`), "events were pruned before the relay published them");
        cursor = page.oldest;
        await lease.saveCursor(cursor, NONE);
        continue;
      }
      if (page.kind === "ahead") {
        this.options.onError(new Error(`the relay's cursor ${cursor?.position} is past the end of the feed (${page.head.position})`), "the relay's cursor is not of this feed");
        await pause(this.options.retryMs, signal);
        continue;
      }
      if (page.events.length === 0) {
        await this.feed.next(page.head, this.options.idleMs, signal);
        continue;
      }
      if (signal.aborted) break;
      const sent = await this.send(page.events, expectLast, signal);
      if (sent.count > 0) {
        const last = page.events[sent.count - 1]!;
        cursor = eventCursor(last);
        expectLast = eventId(last);
        await lease.saveCursor(cursor, sent);
        if (troubled) this.options.onRecovered?.();
        troubled = false;
      }
      if (sent.failure !== null) {
        trouble(sent.failure, "publishing to the broker failed: the relay resends from its cursor");
        expectLast = undefined;
        await pause(this.options.brokerRetryMs, signal);
      }
    }
  }

  /** Sends a page; how many events were acknowledged in order from its start, and the first failure. */
  private async send(events: readonly FeedEvent[], expectLast: string | null, signal: AbortSignal): Promise<{ count: number; stored: number; duplicates: number; failure: unknown }> {
    const acks = this.broker.publish(events, expectLast);
    // Acknowledgements after a failure are not awaited: none may go unhandled.
    for (const ack of acks) ack.catch(() => undefined);
    let count = 0;
    let stored = 0;
    let duplicates = 0;
    let failure: unknown = null;
    for (const ack of acks) {
      try {
        const outcome = await ack;
        if (outcome === "stored") stored += 1;
        else duplicates += 1;
        count += 1;
      } catch (err) {
        failure = err;
        break;
      }
      // A lost lease ends the round: what is acknowledged so far may still be stored (the store
      // refuses it once the connection is gone), nothing more is counted as ours.
      if (signal.aborted) break;
    }
    if (stored > 0) this.options.onPublished?.("stored", stored);
    if (duplicates > 0) this.options.onPublished?.("duplicate", duplicates);
    return { count, stored, duplicates, failure };
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}
