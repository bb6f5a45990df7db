import { fromBinary } from "@bufbuild/protobuf";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Event } from "../../src/client/index.js";
import { EventSchema } from "../../src/gen/credit/v1/event_service_pb.js";
import { NatsEventBroker } from "../../src/broker/nats-broker.js";
import { subjectToken } from "../../src/broker/subjects.js";
import { EVENT_KIND_NAMES } from "../../src/rpc/event-encoding.js";
import { PostgresEventOutbox } from "../../src/store/event-outbox.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { deleteStream, natsConnection, newStream, readStream, streamCount, TEST_NATS_URL, waitFor } from "../support/nats.js";
import { sampleOf, scrape } from "../support/prometheus.js";

/**
 * The broker relay against the real NATS JetStream and Postgres: the feed reaches the stream in
 * feed order with Nats-Msg-Id = event_id and the encoded Event as body; a redelivery is dropped by
 * the broker; of two servers one publishes, and the other takes over when it stops.
 */

let nc: NatsConnection;
let db: pg.Client;
const streams: string[] = [];
const services: TestService[] = [];

beforeAll(async () => {
  nc = await natsConnection();
  db = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await db.connect();
});
afterAll(async () => {
  for (const s of services) await s.stop().catch(() => undefined);
  for (const s of streams) await deleteStream(nc, s);
  await nc.close();
  await db.end();
});

async function start(stream: { stream: string; prefix: string }): Promise<TestService> {
  const t = await startTestService({
    EVENT_SEQUENCER_INTERVAL_MS: "50",
    EVENTS_BROKER_URL: TEST_NATS_URL,
    EVENTS_BROKER_STREAM: stream.stream,
    EVENTS_BROKER_SUBJECT_PREFIX: stream.prefix,
    EVENTS_BROKER_LEASE_RETRY_MS: "200",
  });
  services.push(t);
  return t;
}

async function activity(t: TestService, accountId: string): Promise<void> {
  await t.admin.adjustCredits({ accountId, amount: 1000n, reason: "relay test", idempotencyKey: newKey("fund") });
  for (let i = 0; i < 3; i++) {
    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 10n }, ttl: { seconds: 600n } });
    await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("com"), actual: { case: "amount", value: 5n } });
  }
}

/** The account's events as ListEvents returns them (feed order). */
async function feedOf(t: TestService, accountId: string): Promise<Event[]> {
  const latest = (await t.credit.getBalance({ accountId })).sequence;
  return waitFor(`the feed to reach sequence ${latest} of ${accountId}`, async () => {
    const out: Event[] = [];
    let cursor = "";
    for (;;) {
      const page = await t.events.listEvents({ afterCursor: cursor, accountId, pageSize: 1000 });
      out.push(...page.events);
      if (page.nextCursor === cursor) break;
      cursor = page.nextCursor;
    }
    return out.at(-1)?.accountSequence === latest ? out : null;
  });
}

/** The stream's messages once it holds every one of `ids`. */
async function streamHolding(stream: string, ids: readonly string[]) {
  return waitFor(`stream ${stream} to hold ${ids.length} events`, async () => {
    const messages = await readStream(nc, stream);
    const held = new Set(messages.map((m) => m.msgId));
    return ids.every((id) => held.has(id)) ? messages : null;
  });
}

async function leaderOf(list: readonly TestService[]): Promise<TestService[]> {
  const leaders: TestService[] = [];
  for (const t of list) {
    if (sampleOf(await scrape(t.service.metricsPort), "credit_event_relay_leader") === 1) leaders.push(t);
  }
  return leaders;
}

describe("the broker relay", () => {
  it("publishes every event in feed order, with Nats-Msg-Id = event_id and the encoded Event as body", async () => {
    const s = newStream();
    streams.push(s.stream);
    const t = await start(s);
    const accountId = newAccountId("relay.order");
    await activity(t, accountId);
    const feed = await feedOf(t, accountId);
    expect(feed.length).toBeGreaterThanOrEqual(7);
    const messages = await streamHolding(s.stream, feed.map((e) => e.eventId));

    // The whole stream is the feed from its start, in feed order: its cursors only grow.
    const decoded = messages.map((m) => fromBinary(EventSchema, m.data));
    for (const [i, m] of messages.entries()) expect(m.msgId).toBe(decoded[i]!.eventId);
    const positions = decoded.map((e) => e.cursor.split(".").map(Number));
    for (let i = 1; i < positions.length; i++) {
      const [p0, i0 = Infinity] = positions[i - 1]!;
      const [p1, i1 = Infinity] = positions[i]!;
      expect(p1! > p0! || (p1 === p0 && i1 > i0), `stream message ${i} after ${i - 1}`).toBe(true);
    }
    expect(new Set(messages.map((m) => m.msgId)).size).toBe(messages.length);

    // This account's messages are exactly its feed, event for event, on its subjects.
    const mine = messages.filter((m, i) => decoded[i]!.accountId === accountId);
    expect(mine.map((m) => m.msgId)).toEqual(feed.map((e) => e.eventId));
    for (const [i, m] of mine.entries()) {
      const event = fromBinary(EventSchema, m.data);
      expect(event).toEqual(feed[i]);
      expect(m.subject).toBe(`${s.prefix}.${kindName(feed[i]!)}.relay%2Eorder-${accountId.slice("relay.order-".length)}`);
    }
    // A consumer of one account subscribes to `<prefix>.*.<token>`.
    const info = await (await jetstreamManager(nc)).streams.info(s.stream, { subjects_filter: `${s.prefix}.*.${subjectToken(accountId)}` });
    expect(Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0)).toBe(feed.length);

    // The relay's stored cursor reached the last message, and the lag gauge says so.
    await waitFor("the relay's lag to reach 0", async () => sampleOf(await scrape(t.service.metricsPort), "credit_event_relay_lag") === 0);
    const published = sampleOf(await scrape(t.service.metricsPort), "credit_event_relay_published_total", { outcome: "stored" });
    expect(published).toBe(messages.length);
    await t.stop();
    services.splice(services.indexOf(t), 1);
  });

  it("never duplicates in the stream when events are published again (a crash after the broker acknowledged, before the cursor was stored)", async () => {
    const s = newStream();
    streams.push(s.stream);
    const t = await start(s);
    const accountId = newAccountId("relay-dup");
    await activity(t, accountId);
    const feed = await feedOf(t, accountId);
    await streamHolding(s.stream, feed.map((e) => e.eventId));
    await waitFor("the relay's lag to reach 0", async () => sampleOf(await scrape(t.service.metricsPort), "credit_event_relay_lag") === 0);
    await t.stop();
    services.splice(services.indexOf(t), 1);
    const before = await streamCount(nc, s.stream);

    // 1. The broker itself drops a redelivery by its Nats-Msg-Id: publish the last page again,
    //    exactly as a relay that crashed before storing its cursor would.
    const outbox = new PostgresEventOutbox(new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 }));
    const page = await outbox.page({ after: null, limit: 50, kinds: [], accountId: null });
    if (page.kind !== "page") throw new Error(page.kind);
    const broker = new NatsEventBroker({ url: TEST_NATS_URL, stream: s.stream, subjectPrefix: s.prefix, duplicateWindowMs: 600_000, ackTimeoutMs: 5000, encode: () => new Uint8Array([1]) });
    await broker.prepare();
    const outcomes = await Promise.all(broker.publish(page.events, null));
    expect(outcomes.every((o) => o === "duplicate")).toBe(true);
    await broker.close();
    expect(await streamCount(nc, s.stream)).toBe(before);

    // 2. A relay whose stored cursor fell behind (rewound to the feed's start) resumes after what
    //    the stream holds: nothing is published twice, and new events follow in order.
    await db.query(`update event_relay_cursors set position = 0, idx = null where stream = $1`, [s.stream]);
    const again = await start(s);
    await again.admin.adjustCredits({ accountId, amount: 1n, reason: "after restart", idempotencyKey: newKey("fund") });
    const feed2 = await feedOf(again, accountId);
    const messages = await streamHolding(s.stream, feed2.map((e) => e.eventId));
    expect(messages.length).toBe(before + 1);
    expect(new Set(messages.map((m) => m.msgId)).size).toBe(messages.length);
    expect(messages.at(-1)!.msgId).toBe(feed2.at(-1)!.eventId);
    const dup = sampleOf(await scrape(again.service.metricsPort), "credit_event_relay_published_total", { outcome: "duplicate" });
    expect(dup ?? 0).toBe(0);
  });

  it("of two servers exactly one publishes, and the other takes over when the leader stops", async () => {
    const s = newStream();
    streams.push(s.stream);
    const a = await start(s);
    const b = await start(s);
    const first = await waitFor("a leader", async () => {
      const leaders = await leaderOf([a, b]);
      return leaders.length === 1 ? leaders[0] : null;
    });
    const other = first === a ? b : a;
    const accountId = newAccountId("relay-two");
    await activity(other, accountId);
    const feed = await feedOf(other, accountId);
    await streamHolding(s.stream, feed.map((e) => e.eventId));
    // Only the leader published; the other never did.
    expect(sampleOf(await scrape(other.service.metricsPort), "credit_event_relay_published_total", { outcome: "stored" }) ?? 0).toBe(0);
    expect(await leaderOf([a, b])).toEqual([first]);

    const stoppedAt = Date.now();
    await first.stop();
    services.splice(services.indexOf(first), 1);
    await waitFor("the other server to take over", async () => (await leaderOf([other])).length === 1, 10_000);
    const takeoverMs = Date.now() - stoppedAt;
    expect(takeoverMs).toBeLessThan(5000);

    await other.admin.adjustCredits({ accountId, amount: 7n, reason: "after takeover", idempotencyKey: newKey("fund") });
    const feed2 = await feedOf(other, accountId);
    const messages = await streamHolding(s.stream, feed2.map((e) => e.eventId));
    expect(new Set(messages.map((m) => m.msgId)).size).toBe(messages.length);
    console.log(`relay takeover after a graceful stop: ${takeoverMs} ms`);
  });
});

function kindName(e: Event): string {
  return EVENT_KIND_NAMES.get(e.kind)!.toLowerCase();
}
