import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager, JetStreamApiCodes, JetStreamApiError, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect, type NatsConnection, nanos } from "@nats-io/transport-node";
import type { EventBroker, PublishOutcome } from "../app/event-relay.js";
import { eventId } from "../app/events.js";
import type { FeedEvent } from "../app/ports.js";
import { eventSubject } from "./subjects.js";

export interface NatsBrokerOptions {
  /** `nats://host:port`, comma-separated for several servers of a cluster (TLS as the server offers it). */
  readonly url: string;
  readonly stream: string;
  readonly subjectPrefix: string;
  /** The stream's duplicate window: a message id seen within it is acknowledged as a duplicate and dropped. */
  readonly duplicateWindowMs: number;
  /** How long one publish waits for the stream's acknowledgement. */
  readonly ackTimeoutMs: number;
  /** The message body of an event: the encoded credit.v1.Event (rpc/event-encoding.ts). */
  readonly encode: (event: FeedEvent) => Uint8Array;
  readonly onConnection?: (state: string) => void;
}

/** The header JetStream dedupes on; the client sets it from `msgID`. */
const MSG_ID = "Nats-Msg-Id";

/**
 * The relay's broker: NATS JetStream through the official client (@nats-io/transport-node and
 * @nats-io/jetstream). One connection, opened when first needed and reconnecting by itself.
 * Every event is published with `msgID` = its event_id (the `Nats-Msg-Id` header the stream
 * dedupes on) and `expect.lastMsgID` = the event before it, so the stream holds the feed's order.
 * JetStream checks the message id before the expectation: a redelivery is answered as a
 * duplicate, not refused.
 */
export class NatsEventBroker implements EventBroker {
  private connection: Promise<NatsConnection> | null = null;
  private js: JetStreamClient | null = null;
  private jsm: JetStreamManager | null = null;
  /** Rejected when the connection drops: acknowledgements still awaited then may never come. */
  private dropped = droppedSignal();
  /** False from a disconnect until the reconnect: nothing is sent into the client's buffer meanwhile. */
  private connected = false;

  constructor(private readonly options: NatsBrokerOptions) {}

  async prepare(): Promise<string | null> {
    const nc = await this.connect();
    if (!this.connected) throw new Error("the broker connection is down (reconnecting)");
    const jsm = (this.jsm ??= await jetstreamManager(nc));
    this.js ??= jetstream(nc);
    const subjects = [`${this.options.subjectPrefix}.>`];
    const window = nanos(this.options.duplicateWindowMs);
    let info;
    try {
      info = await jsm.streams.info(this.options.stream);
    } catch (err) {
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
      info = await jsm.streams.add({
        name: this.options.stream,
        subjects,
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        duplicate_window: window,
      });
    }
    const config = info.config;
    const missing = subjects.filter((s) => !config.subjects?.includes(s));
    if (missing.length > 0 || config.duplicate_window !== window) {
      // An operator's other settings (limits, replicas) are kept; only what the relay relies on changes.
      info = await jsm.streams.update(this.options.stream, { ...config, subjects: [...(config.subjects ?? []), ...missing], duplicate_window: window });
    }
    if (info.state.messages === 0) return null;
    const last = await jsm.streams.getMessage(this.options.stream, { seq: info.state.last_seq });
    return last?.header?.get(MSG_ID) || null;
  }

  publish(events: readonly FeedEvent[], expectLast: string | null): Promise<PublishOutcome>[] {
    const js = this.js;
    // While reconnecting the client would buffer the messages and their acknowledgements would
    // time out; the relay tries again shortly instead, once the connection is back.
    if (js === null || !this.connected) return events.map(() => Promise.reject(new Error("the broker is not connected")));
    let previous = expectLast;
    return events.map((event) => {
      const id = eventId(event);
      const ack = js.publish(eventSubject(this.options.subjectPrefix, event.kind, event.accountId), this.options.encode(event), {
        msgID: id,
        timeout: this.options.ackTimeoutMs,
        ...(previous === null ? {} : { expect: { lastMsgID: previous } }),
      });
      previous = id;
      // A message sent just before the connection dropped may be lost with it: fail the round at
      // once rather than after the acknowledgement timeout; the relay resends from its cursor.
      return Promise.race([ack, this.dropped.promise]).then((a): PublishOutcome => (a.duplicate ? "duplicate" : "stored"));
    });
  }

  async close(): Promise<void> {
    const pending = this.connection;
    this.connection = null;
    this.js = null;
    this.jsm = null;
    const nc = await pending?.catch(() => null);
    await nc?.drain().catch(() => undefined);
  }

  private connect(): Promise<NatsConnection> {
    if (this.connection === null) {
      const opening = connect({
        servers: this.options.url.split(","),
        name: "credit-service-relay",
        // Keeps reconnecting for as long as the process runs: a restarted broker is found again.
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        timeout: 3000,
      });
      this.connection = opening;
      opening.then(
        (nc) => {
          if (this.connection === opening) this.connected = true;
          void (async () => {
            for await (const status of nc.status()) {
              if (status.type === "disconnect") {
                this.connected = false;
                this.dropped.reject(new Error("the broker connection dropped"));
                this.dropped = droppedSignal();
              } else if (status.type === "reconnect") {
                this.connected = true;
              }
              this.options.onConnection?.(status.type);
            }
          })().catch(() => undefined);
          void nc.closed().then(() => {
            if (this.connection === opening) {
              this.connection = null;
              this.connected = false;
              this.js = null;
              this.jsm = null;
            }
          });
        },
        () => {
          // Not reached at all: the next prepare() tries again.
          if (this.connection === opening) this.connection = null;
        },
      );
    }
    return this.connection;
  }
}

function droppedSignal(): { promise: Promise<never>; reject: (err: Error) => void } {
  let reject!: (err: Error) => void;
  const promise = new Promise<never>((_, no) => (reject = no));
  promise.catch(() => undefined);
  return { promise, reject };
}
