/**
 * The outbox's store on a database of its own (retention removes rows other test files would
 * read): the sequencer numbers committed batches in batch_id order after every number it gave,
 * whatever order they committed in; pages resume from any cursor; retention removes the oldest
 * batches and refuses cursors before them, never a silent skip.
 */
import pg from "pg";
import type { MikroORM } from "@mikro-orm/postgresql";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EventCursor, EventPage } from "../../src/app/ports.js";
import { openDatabase } from "../../src/store/database.js";
import { PostgresEventOutbox, SEQUENCER_LOCK } from "../../src/store/event-outbox.js";
import { runDatabaseUrl, TEST_DATABASE_URL } from "../support/env.js";

const url = runDatabaseUrl(`outbox_${process.pid}`);
let orm: MikroORM;
let pool: pg.Pool;
let outbox: PostgresEventOutbox;

beforeAll(async () => {
  orm = await openDatabase({ url, poolMax: 1, migrate: true });
  pool = new pg.Pool({ connectionString: url, max: 4 });
  outbox = new PostgresEventOutbox(pool);
});
afterAll(async () => {
  await pool.end();
  await orm.close(true);
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await admin.connect();
  await admin.query(`drop database "${new URL(url).pathname.slice(1)}" with (force)`);
  await admin.end();
});

/** Opens a write transaction that draws a batch id and writes `events` events for `accountId`, left open. */
async function openBatch(accountId: string, events: number): Promise<{ batchId: bigint; commit(): Promise<void> }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query("begin");
  const { rows } = await client.query<{ id: string }>(`select nextval('event_batch_ids')::text as id`);
  const batchId = BigInt(rows[0]!.id);
  await client.query(`insert into event_batches (batch_id, event_count, recorded_at) values ($1, $2, now())`, [batchId.toString(), events]);
  await client.query(
    `insert into events (batch_id, idx, account_id, account_sequence, kind, occurred_at, payload)
     select $1, i, $2, 1, 'TEST_CLOCK_ADVANCED', now(), ''::bytea from generate_series(0, $3 - 1) i`,
    [batchId.toString(), accountId, events],
  );
  return {
    batchId,
    commit: async () => {
      await client.query("commit");
      await client.end();
    },
  };
}

async function page(after: EventCursor | null, limit = 1000): Promise<Extract<EventPage, { kind: "page" }>> {
  const p = await outbox.page({ after, limit, kinds: [], accountId: null });
  if (p.kind !== "page") throw new Error(`expected a page, got ${p.kind}`);
  return p;
}

async function numberAll(): Promise<void> {
  for (;;) {
    const r = await outbox.sequence();
    if (r && !r.more) return;
  }
}

describe("the sequencer", () => {
  it("numbers a batch that committed late after the ones a reader has passed", async () => {
    const slow = await openBatch("acct-slow", 2);
    const fast = await openBatch("acct-fast", 3);
    expect(fast.batchId).toBeGreaterThan(slow.batchId);
    await fast.commit();
    await numberAll();
    const first = await page(null);
    expect(first.events.map((e) => e.batchId)).toEqual([fast.batchId, fast.batchId, fast.batchId]);
    await slow.commit();
    await numberAll();
    const after = await page(first.next);
    expect(after.events.map((e) => [e.batchId, e.idx])).toEqual([
      [slow.batchId, 0],
      [slow.batchId, 1],
    ]);
    expect(after.events[0]!.position).toBeGreaterThan(first.events[0]!.position);
  });

  it("gives one pass's batches positions in batch_id order, contiguous after the last one", async () => {
    const head = (await page(null)).head;
    const batches = [];
    for (let i = 0; i < 5; i++) batches.push(await openBatch(`acct-order-${i}`, 1));
    for (const b of [...batches].reverse()) await b.commit();
    await numberAll();
    const p = await page({ position: head, idx: null });
    expect(p.events.map((e) => e.batchId)).toEqual(batches.map((b) => b.batchId));
    expect(p.events.map((e) => e.position)).toEqual(batches.map((_, i) => head + BigInt(i + 1)));
  });

  it("answers null while another pass holds the lock, and numbers nothing then", async () => {
    const waiting = await openBatch("acct-busy", 1);
    await waiting.commit();
    const positionOf = async () => (await pool.query("select position from event_batches where batch_id = $1", [String(waiting.batchId)])).rows[0]?.position as string | null;
    const other = await pool.connect();
    try {
      await other.query("begin");
      await other.query("select pg_advisory_xact_lock($1)", [SEQUENCER_LOCK]);
      expect(await outbox.sequence()).toBeNull();
      expect(await positionOf()).toBeNull();
    } finally {
      await other.query("rollback");
      other.release();
    }
    expect(await outbox.sequence()).not.toBeNull();
    expect(await positionOf()).not.toBeNull();
  });
});

describe("pages", () => {
  it("resume from every cursor with exactly what follows, across batch boundaries", async () => {
    const all = (await page(null)).events;
    expect(all.length).toBeGreaterThan(5);
    for (let i = 0; i < all.length; i++) {
      const e = all[i]!;
      const cursor = { position: e.position, idx: e.lastOfBatch ? null : e.idx };
      expect((await page(cursor)).events.map((x) => `${x.batchId}-${x.idx}`)).toEqual(all.slice(i + 1).map((x) => `${x.batchId}-${x.idx}`));
    }
    // Pages of 2 cover the same events in the same order.
    const paged: string[] = [];
    let cursor: EventCursor | null = null;
    for (;;) {
      const p = await page(cursor, 2);
      paged.push(...p.events.map((x) => `${x.batchId}-${x.idx}`));
      if (p.events.length < 2) break;
      cursor = p.next;
    }
    expect(paged).toEqual(all.map((x) => `${x.batchId}-${x.idx}`));
  });

  it("refuses a cursor past the feed's end", async () => {
    const { head } = await page(null);
    expect((await outbox.page({ after: { position: head + 1n, idx: null }, limit: 10, kinds: [], accountId: null })).kind).toBe("ahead");
  });
});

describe("retention", () => {
  it("prunes the oldest batches only, and refuses cursors before what it kept", async () => {
    const before = (await page(null)).events;
    const positions = [...new Set(before.map((e) => e.position))];
    expect(positions.length).toBeGreaterThanOrEqual(4);
    // The first two batches are old; the rest were recorded now.
    await pool.query(`update event_batches set recorded_at = now() - interval '40 days' where position <= $1`, [positions[1]!.toString()]);
    const day = 24 * 60 * 60 * 1000;
    expect(await outbox.prune(30 * day, 100)).toBe(2);
    expect(await outbox.prune(30 * day, 100)).toBe(0);
    const kept = (await page(null)).events;
    expect(kept.map((e) => e.position)).toEqual(before.filter((e) => e.position > positions[1]!).map((e) => e.position));

    // After the whole last pruned batch: nothing was lost. Inside it, or before it: expired.
    expect((await outbox.page({ after: { position: positions[1]!, idx: null }, limit: 10, kinds: [], accountId: null })).kind).toBe("page");
    const inside = await outbox.page({ after: { position: positions[1]!, idx: 0 }, limit: 10, kinds: [], accountId: null });
    expect(inside).toEqual({ kind: "expired", oldest: { position: positions[1]!, idx: null } });
    expect((await outbox.page({ after: { position: positions[0]!, idx: null }, limit: 10, kinds: [], accountId: null })).kind).toBe("expired");
    // Numbering goes on above what was pruned, even once every batch is gone.
    await pool.query(`update event_batches set recorded_at = now() - interval '40 days'`);
    await outbox.prune(30 * day, 1000);
    const late = await openBatch("acct-after-prune", 1);
    await late.commit();
    await numberAll();
    const last = positions.at(-1)!;
    const p = await page({ position: last, idx: null });
    expect(p.events.map((e) => e.batchId)).toEqual([late.batchId]);
    expect(p.events[0]!.position).toBeGreaterThan(last);
  });
});
