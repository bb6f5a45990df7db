import { jetstream, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventCursor, eventId, formatCursor } from "../../src/app/events.js";
import { NatsEventBroker } from "../../src/broker/nats-broker.js";
import { feedEventBytes } from "../../src/rpc/event-encoding.js";
import { PostgresEventOutbox } from "../../src/store/event-outbox.js";
import { RELAY_LOCK_CLASS } from "../../src/store/relay-lease.js";
import { fundAccounts, rawClients, runHoldLoad } from "./support/load.js";
import { byScale, Figures, ms, percentile } from "./support/report.js";
import { OwnNats, sleep, Stack, untilServing } from "./support/stack.js";

/**
 * Scenario 10 — the broker relay under faults. Two servers run the relay against a NATS JetStream
 * of the suite's own; a Reserve → Commit | Release load runs on both. Again and again the server
 * whose relay holds the lease is killed with SIGKILL while it publishes (and restarted), and the
 * broker is restarted (SIGTERM and SIGKILL in turn). At the end the stream must hold every event
 * of the feed exactly once, in feed order.
 */
const ROUNDS = byScale(4, 12);
const STREAM = "CREDIT_EVENTS";
const FUNDED = 1_000_000_000n;

const nats = new OwnNats();
const stack = new Stack();
const figures = new Figures("10 broker relay");

beforeAll(async () => {
  await nats.start();
  await stack.start(2, {
    EVENTS_BROKER_URL: nats.url,
    EVENTS_BROKER_STREAM: STREAM,
    // Small pages: many publish rounds, so a kill lands between an acknowledgement and its cursor.
    EVENTS_BROKER_BATCH: "100",
    EVENT_SEQUENCER_INTERVAL_MS: "100",
    // Nothing writes once the load stops (no sweeper, no hold left to expire): the feed is final then.
    SWEEPER_ENABLED: "false",
  });
});
afterAll(async () => {
  await stack.stop();
  await nats.destroy();
});

/** The process id of the server whose relay holds the lock (its lock connection names it), or null. */
async function leaderPid(): Promise<number | null> {
  const { rows } = await stack.db.query<{ application_name: string }>(
    `select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid
      where l.locktype = 'advisory' and l.classid::bigint = $1 and l.objsubid = 2 and l.granted`,
    [RELAY_LOCK_CLASS],
  );
  const m = /:(\d+)$/.exec(rows[0]?.application_name ?? "");
  return m ? Number(m[1]) : null;
}

async function until<T>(what: string, check: () => Promise<T | null | false>, timeoutMs = 30_000): Promise<T> {
  const t0 = performance.now();
  for (;;) {
    const v = await check().catch(() => null);
    if (v !== null && v !== false) return v;
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

let nc: NatsConnection | null = null;
let jsm: JetStreamManager | null = null;
/** The stream's count, asked with a short timeout: the measurement must not lag the relay it measures. */
async function streamCount(): Promise<number> {
  nc ??= await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  jsm ??= await jetstreamManager(nc, { timeout: 500 });
  return (await jsm.streams.info(STREAM)).state.messages;
}

/** The stream's count, waiting out a broker that is restarting. */
const countNow = () => until("the broker to answer", streamCount);

/** Resolves once the stream holds more than `than` messages: the relay is publishing. */
async function growsPast(than: number, what: string): Promise<number> {
  return until(what, async () => {
    const n = await streamCount();
    return n > than ? n : null;
  });
}

describe("kill -9 of the relay's server mid-publish and broker restarts, under load", () => {
  it(`every event reaches the stream once, in feed order, over ${ROUNDS} rounds`, async () => {
    const [a, b] = stack.servers as [(typeof stack.servers)[0], (typeof stack.servers)[0]];
    const clientsOf = new Map([a, b].map((s) => [s, rawClients(s.url, 5000)]));
    const accounts = await fundAccounts(clientsOf.get(a)!, "relay", 8, FUNDED);
    let stopping = false;
    const loads = [a, b].map((s) => runHoldLoad({ clients: () => clientsOf.get(s)!, accounts, workers: 6, abandonShare: 0, settleTtlMs: 60_000, stop: () => stopping }));

    const released: number[] = [];
    const takeover: number[] = [];
    const resumedAfterKill: number[] = [];
    const resumedAfterBroker: number[] = [];
    await growsPast(0, "the first publish");
    for (let round = 0; round < ROUNDS; round++) {
      // Mid-publish: the stream is growing right now.
      await growsPast(await countNow(), "the relay to publish");
      await sleep(200 + Math.random() * 800);
      const pid = await until("a relay holding the lease", leaderPid);
      const leader = [a, b].find((s) => s.pid === pid);
      if (!leader) throw new Error(`the lease is held by process ${pid}, not a server of this stack`);
      const killedAt = performance.now();
      await leader.kill();
      // Postgres ends the killed process's session (its socket closed) and with it the lock.
      await until("the killed relay's lock to be released", async () => (await leaderPid()) !== pid);
      released.push(performance.now() - killedAt);
      await until("another relay to take the lease", async () => {
        const now = await leaderPid();
        return now !== null && now !== pid;
      });
      takeover.push(performance.now() - killedAt);
      await growsPast(await countNow(), "the new leader to publish");
      resumedAfterKill.push(performance.now() - killedAt);
      await leader.start();
      await untilServing(leader.url);
      clientsOf.set(leader, rawClients(leader.url, 5000));

      const signal = round % 2 === 0 ? "SIGTERM" : "SIGKILL";
      const brokerDownAt = performance.now();
      await nats.stop(signal);
      await sleep(300 + Math.random() * 700); // the broker stays down a moment while writes go on
      await nats.start();
      await growsPast(await countNow(), "publishing to resume after the broker restart");
      resumedAfterBroker.push(performance.now() - brokerDownAt);
    }
    stopping = true;
    if (process.env["RELAY_DEBUG"]) for (const s of [a, b]) console.log(s.tail.filter((l) => /relay|broker/.test(l)).slice(-60).join("\n"));
    const results = await Promise.all(loads);

    // Drain: every batch numbered, and the relay's cursor at the feed's head.
    await until(
      "the relay to reach the feed's head",
      async () => {
        const { rows } = await stack.db.query<{ done: boolean }>(
          `select not exists (select 1 from event_batches where position is null)
              and (select position from event_relay_cursors where stream = $1) = (select max(position) from event_batches)
              and (select idx from event_relay_cursors where stream = $1) is null as done`,
          [STREAM],
        );
        return rows[0]?.done === true;
      },
      60_000,
    );
    const feed = (await stack.db.query<{ id: string }>(`select e.batch_id || '-' || e.idx as id from events e join event_batches b using (batch_id) order by b.position, e.idx`)).rows.map((r) => r.id);
    const counts = (await stack.db.query<{ published: string; duplicates: string }>(`select published, duplicates from event_relay_cursors where stream = $1`, [STREAM])).rows[0]!;

    // A relay that crashed after the broker acknowledged and before its cursor was stored, and that
    // did not look at the stream first, sends again what the broker holds: the broker drops it.
    const outbox = new PostgresEventOutbox(stack.db);
    const again = await outbox.page({ after: null, limit: 1000, kinds: [], accountId: null });
    if (again.kind !== "page") throw new Error(again.kind);
    const broker = new NatsEventBroker({
      url: nats.url,
      stream: STREAM,
      subjectPrefix: "credit.events",
      duplicateWindowMs: 600_000,
      ackTimeoutMs: 5000,
      encode: (e) => feedEventBytes({ ...e, eventId: eventId(e), cursor: formatCursor(eventCursor(e)) }),
    });
    await broker.prepare();
    const countBefore = await countNow();
    const resent = await Promise.all(broker.publish(again.events, null));
    await broker.close();
    const resentDuplicates = resent.filter((o) => o === "duplicate").length;

    const total = await countNow();
    const consumer = await jetstream(nc!).consumers.get(STREAM);
    const ids: string[] = [];
    while (ids.length < total) {
      const batch = await consumer.fetch({ max_messages: Math.min(5000, total - ids.length), expires: 2000 });
      let got = 0;
      for await (const m of batch) {
        ids.push(m.headers?.get("Nats-Msg-Id") ?? "");
        got += 1;
      }
      if (got === 0) throw new Error(`read ${ids.length} of ${total} stream messages, then nothing`);
    }
    await nc!.close();

    const inStream = new Set(ids);
    const inFeed = new Set(feed);
    const missing = feed.filter((id) => !inStream.has(id));
    const foreign = ids.filter((id) => !inFeed.has(id));
    const repeated = ids.length - inStream.size;
    let outOfOrder = 0;
    for (let i = 0; i < Math.min(ids.length, feed.length); i++) if (ids[i] !== feed[i]) outOfOrder += 1;

    figures.info("rounds: relay leader killed (SIGKILL) + broker restarted (SIGTERM / SIGKILL in turn)", ROUNDS);
    figures.info("cycles of load completed", results.reduce((n, r) => n + r.cycles, 0));
    figures.info("events in the feed / messages in the stream", `${feed.length} / ${ids.length}`);
    figures.info("published as new / dropped by the broker as duplicates (Nats-Msg-Id), as counted by the relays", `${counts.published} / ${counts.duplicates}`);
    figures.info("time kill -9 of the leader → Postgres released its lock, p50 / max", `${ms(percentile(released, 50))} / ${ms(Math.max(...released))}`);
    figures.check("time kill -9 of the leader → the other server holds the lease, p50 / max", `${ms(percentile(takeover, 50))} / ${ms(Math.max(...takeover))}`, "< 5 s", Math.max(...takeover) < 5000);
    figures.info("time kill -9 of the leader → the stream grows again, p50 / max", `${ms(percentile(resumedAfterKill, 50))} / ${ms(Math.max(...resumedAfterKill))}`);
    figures.info("time broker stopped → the stream grows again after its restart, p50 / max", `${ms(percentile(resumedAfterBroker, 50))} / ${ms(Math.max(...resumedAfterBroker))}`);
    figures.check(
      "events sent again (the first 1000 of the feed) / dropped by the broker as duplicates / stream growth",
      `${again.events.length} / ${resentDuplicates} / ${total - countBefore}`,
      "all dropped, growth 0",
      resentDuplicates === again.events.length && total === countBefore,
    );
    figures.check("events missing from the stream", missing.length, "0", missing.length === 0);
    figures.check("messages in the stream twice (same event_id)", repeated, "0", repeated === 0);
    figures.check("stream messages out of feed order", outOfOrder, "0", outOfOrder === 0);
    figures.check("stream messages that are no event of the feed", foreign.length, "0", foreign.length === 0);

    expect(missing.slice(0, 5)).toEqual([]);
    expect(repeated).toBe(0);
    expect(resentDuplicates).toBe(again.events.length);
    expect(total).toBe(countBefore);
    expect(foreign).toEqual([]);
    expect(ids).toEqual(feed);
    expect(Math.max(...takeover)).toBeLessThan(5000);
    expect(feed.length).toBeGreaterThan(ROUNDS * 100);
    for (const r of results) expect(r.refusals).toEqual([]);
  });
});
