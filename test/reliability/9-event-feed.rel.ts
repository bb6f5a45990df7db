import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { consumeEvents, createCreditClients, type Event } from "../../src/client/index.js";
import { fundAccounts, rawClients, runHoldLoad } from "./support/load.js";
import { byScale, Figures } from "./support/report.js";
import { sleep, Stack, untilServing } from "./support/stack.js";

/**
 * Scenario 9 — the event feed across crashes. Two servers on one database take a hold load;
 * a consumer streams the feed from one server and stores its cursor after each event. That
 * server is killed with SIGKILL again and again; the consumer resumes from its last cursor on
 * the other server. At the end every change of every account has reached the consumer (each
 * account's sequences 1…latest with no gap, in order at first delivery), every event the
 * database holds for them was delivered, and redeliveries (duplicates by event_id) are counted.
 */
const KILLS = byScale(3, 10);
const stack = new Stack();
const figures = new Figures("9 event feed");

beforeAll(async () => {
  await stack.start(2, { SWEEPER_INTERVAL_MS: "300", HOLD_DEFAULT_TTL_SECONDS: "2", DB_POOL_MAX: "10" });
});
afterAll(async () => {
  await stack.stop();
});

describe("a consumer of the event feed while its server is killed", () => {
  it(`resumes from its cursor on the other server with no gap over ${KILLS} crashes`, async () => {
    const servers = [stack.servers[0]!, stack.servers[1]!];
    const up = [true, true];
    const clients = servers.map((s) => rawClients(s.url, 10_000));
    // Calls go to a server that is up (what a client with two addresses does).
    const anyUp = () => clients[up[0] ? 0 : 1]!;
    const accounts = await fundAccounts(anyUp(), "feed", 6, 1_000_000_000n);
    const tracked = new Set(accounts);

    // The consumer opens each stream on the server it used last if that one is up, else on the other.
    const eventClients = servers.map((s) => createCreditClients({ baseUrl: s.url, retry: { maxAttempts: 1 } }));
    let consumerOn = 0;
    let cursor = "";
    const firstSeen = new Map<string, Event>();
    const order = new Map<string, bigint[]>();
    let duplicates = 0;
    let reconnects = 0;
    const stopConsumer = new AbortController();
    const consumer = consumeEvents({
      events: () => {
        if (!up[consumerOn]) consumerOn = 1 - consumerOn;
        return eventClients[consumerOn]!.events;
      },
      loadCursor: () => cursor,
      saveCursor: (c) => {
        cursor = c;
      },
      handle: (event) => {
        if (!tracked.has(event.accountId)) return;
        if (firstSeen.has(event.eventId)) {
          duplicates += 1;
          return;
        }
        firstSeen.set(event.eventId, event);
        const seq = order.get(event.accountId) ?? [];
        seq.push(event.accountSequence);
        order.set(event.accountId, seq);
      },
      onReconnect: () => {
        reconnects += 1;
      },
      initialBackoffMs: 50,
      maxBackoffMs: 500,
      signal: stopConsumer.signal,
    });

    let stopping = false;
    const load = runHoldLoad({ clients: anyUp, accounts, workers: 8, abandonShare: 0.1, settleTtlMs: 60_000, stop: () => stopping });
    // Each time, the server the consumer streams from is killed mid-stream and restarted.
    for (let i = 0; i < KILLS; i++) {
      await sleep(1500 + Math.random() * 1500);
      const victim = consumerOn;
      up[victim] = false;
      await servers[victim]!.kill();
      await sleep(300);
      await servers[victim]!.start();
      await untilServing(servers[victim]!.url);
      up[victim] = true;
    }
    await sleep(1000);
    stopping = true;
    const result = await load;
    // Let overdue holds expire through the sweeper, then wait for the consumer to reach every account's latest change.
    await sleep(3000);
    const latest = new Map<string, bigint>();
    for (const accountId of accounts) latest.set(accountId, (await anyUp().credit.getBalance({ accountId })).sequence);
    const deadline = Date.now() + 60_000;
    while ([...latest].some(([a, s]) => (order.get(a)?.at(-1) ?? 0n) < s) && Date.now() < deadline) await sleep(100);
    stopConsumer.abort();
    await consumer;

    const gaps: string[] = [];
    const outOfOrder: string[] = [];
    for (const [accountId, last] of latest) {
      const seen = order.get(accountId) ?? [];
      const distinct = [...new Set(seen)];
      for (let i = 1; i < seen.length; i++) if (seen[i]! < seen[i - 1]!) outOfOrder.push(`${accountId}: ${seen[i - 1]} then ${seen[i]}`);
      // 1, 2, 3 … with none missing, up to at least the sequence GetBalance answered at the end.
      const contiguous = distinct.every((s, i) => s === BigInt(i + 1));
      if (!contiguous || distinct.length < Number(last)) gaps.push(`${accountId}: saw ${distinct.length} sequences (contiguous: ${contiguous}), latest ${last}`);
    }
    const { rows } = await stack.db.query<{ id: string }>(`select batch_id || '-' || idx as id from events where account_id = any($1)`, [accounts]);
    const missing = rows.filter((r) => !firstSeen.has(r.id)).length;

    figures.info("kills (SIGKILL) of the consumer's server", KILLS);
    figures.info("holds cycled under kills", result.cycles);
    figures.info("events delivered (distinct) / in the outbox for the accounts", `${firstSeen.size} / ${rows.length}`);
    figures.info("redeliveries (duplicates by event_id)", duplicates);
    figures.info("consumer reconnects", reconnects);
    figures.check("accounts with a sequence gap", gaps.length, "0", gaps.length === 0);
    figures.check("deliveries out of account order", outOfOrder.length, "0", outOfOrder.length === 0);
    figures.check("outbox events never delivered", missing, "0", missing === 0);

    expect(gaps).toEqual([]);
    expect(outOfOrder).toEqual([]);
    expect(missing).toBe(0);
    expect(firstSeen.size).toBe(rows.length);
    expect(reconnects).toBeGreaterThanOrEqual(KILLS);
  });
});
