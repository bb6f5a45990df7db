import pg from "pg";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { EventFeed } from "../src/app/event-feed.js";
import { EventRelay } from "../src/app/event-relay.js";
import { eventCursor, eventId, formatCursor } from "../src/app/events.js";
import { NatsEventBroker } from "../src/broker/nats-broker.js";
import { feedEventBytes } from "../src/rpc/event-encoding.js";
import { PostgresEventOutbox } from "../src/store/event-outbox.js";
import { PostgresRelayLeases } from "../src/store/relay-lease.js";

/**
 * The broker relay's throughput beside the outbox's write rate (`npm run bench -- --relay`):
 * 1. the outbox's write rate: events the server wrote per second during one uniform cycle run;
 * 2. the relay's rate: the relay (the server's own classes, in this process) publishes the
 *    feed the bench wrote, from its start, to a fresh JetStream stream, with publisher acks and
 *    its cursor stored after each page, at most `maxEvents` or `maxMs`; events/s published.
 * A relay faster than the write rate keeps up; the ratio says with how much room.
 */
export interface RelayFigures {
  readonly writtenPerSec: number;
  readonly writtenEvents: number;
  readonly publishedPerSec: number;
  readonly publishedEvents: number;
  readonly publishSeconds: number;
}

async function eventCount(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: string }>("select count(*) as n from events");
  return Number(rows[0]!.n);
}

export async function measureRelay(
  databaseUrl: string,
  natsUrl: string,
  writeRun: () => Promise<{ elapsedMs: number }>,
  limits: { maxEvents: number; maxMs: number },
): Promise<RelayFigures> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  const stream = `BENCH_RELAY_${process.pid}`;
  try {
    const before = await eventCount(pool);
    const run = await writeRun();
    const writtenEvents = (await eventCount(pool)) - before;

    const outbox = new PostgresEventOutbox(pool);
    // Nothing to wait for: the backlog is there already; the relay is stopped when it is through.
    const feed = new EventFeed(outbox, { live: false, sequence: 0, subscribe: () => undefined }, { intervalMs: 60_000, busyRetryMs: 20, wakeEveryMs: 20, onError: () => undefined });
    const broker = new NatsEventBroker({
      url: natsUrl,
      stream,
      subjectPrefix: `bench.relay.${process.pid}`,
      duplicateWindowMs: 120_000,
      ackTimeoutMs: 5000,
      encode: (event) => feedEventBytes({ ...event, eventId: eventId(event), cursor: formatCursor(eventCursor(event)) }),
    });
    const leases = new PostgresRelayLeases({ url: databaseUrl, stream, checkMs: 1000, checkTimeoutMs: 2000 });
    let published = 0;
    let lastAt = 0;
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    const total = await eventCount(pool);
    const relay = new EventRelay(outbox, feed, leases, broker, {
      batch: 1000,
      retryMs: 1000,
      brokerRetryMs: 250,
      idleMs: 200,
      onPublished: (_outcome, count) => {
        published += count;
        lastAt = performance.now();
        if (published >= Math.min(total, limits.maxEvents)) done();
      },
      onError: (err, what) => process.stderr.write(`bench relay: ${what}: ${String(err)}\n`),
    });
    const startedAt = performance.now();
    relay.start();
    await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, limits.maxMs))]);
    await relay.stop();
    // From the start (lease, stream creation and the first page included) to the last acknowledgement.
    const publishSeconds = ((lastAt || performance.now()) - startedAt) / 1000;
    return {
      writtenPerSec: writtenEvents / (run.elapsedMs / 1000),
      writtenEvents,
      publishedPerSec: published / publishSeconds,
      publishedEvents: published,
      publishSeconds,
    };
  } finally {
    const nc = await connect({ servers: natsUrl }).catch(() => null);
    if (nc) {
      await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
      await nc.close();
    }
    await pool.query("delete from event_relay_cursors where stream = $1", [stream]).catch(() => undefined);
    await pool.end();
  }
}
