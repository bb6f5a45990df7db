import type pg from "pg";
import type { EventCursor, EventOutbox, EventPage, EventQuery, FeedEvent } from "../app/ports.js";
import type { LedgerEventKind } from "../domain/events.js";
import { inTransaction, type Query, queryOn } from "./pg.js";
import type { Row } from "./rows.js";

/** The advisory lock of the sequencer: one pass at a time across every server on the database. */
export const SEQUENCER_LOCK = 7_351_902_114;

/** Batches one pass numbers at most. */
const PASS_LIMIT = 5000;

/** A page with filters reads at most this many batches past its cursor, so one call stays bounded. */
export const SCAN_BATCHES = 20_000;

/** A cursor's "after the whole batch" as an index: past every event of it. */
const WHOLE_BATCH = 2_147_483_647;

/**
 * The sequencer's lock, for the rest of the transaction, and whether it was taken, in a setting
 * local to the transaction that NUMBER_BATCHES reads: the two can go in one round trip.
 */
const TAKE_SEQUENCER_LOCK = `select set_config('credit.sequencer_lock', pg_try_advisory_xact_lock(?)::text, true) as got`;

/**
 * Numbers committed batches: under the advisory lock, taken in its own statement before the
 * numbering statement reads anything, so that statement's snapshot sees every number an earlier
 * pass gave (without the lock it numbers nothing). It numbers what it sees in batch_id order, after the highest number given (or what
 * retention removed). Why that is enough for a cursor and for per-account order: docs/events.md.
 */
const NUMBER_BATCHES = `
  with base as (
    select greatest(coalesce((select max(position) from event_batches), 0),
                    (select pruned_through from event_feed_state where id = 1)) as p),
  pending as (
    select batch_id, row_number() over (order by batch_id) as n
      from (select batch_id from event_batches
             where position is null and current_setting('credit.sequencer_lock') = 'true'
             order by batch_id limit ?) t)
  update event_batches b set position = base.p + pending.n
    from base, pending
   where b.batch_id = pending.batch_id
  returning b.position`;

const FEED_STATE = `
  select pruned_through, greatest(coalesce((select max(position) from event_batches), 0), pruned_through) as head
    from event_feed_state where id = 1`;

/**
 * One page, with the feed's state, in ONE statement (one snapshot, one round trip, prepared once
 * per connection): the retention mark and the last position, then the events after the cursor
 * (null: the oldest retained) up to SCAN_BATCHES batches past it. With no event, one row of state alone.
 */
const PAGE = `
  with state as (
    select pruned_through, greatest(coalesce((select max(position) from event_batches), 0), pruned_through) as head
      from event_feed_state where id = 1),
  place as (select s.*, coalesce(?::bigint, s.pruned_through) as after_position from state s)
  select pl.pruned_through, pl.head, p.*
    from place pl
    left join lateral (
      select b.position, b.event_count, b.recorded_at, e.batch_id, e.idx, e.account_id, e.account_sequence, e.kind, e.occurred_at, e.payload
        from event_batches b join events e on e.batch_id = b.batch_id
       where b.position >= pl.after_position and b.position <= least(pl.after_position + ?::bigint, pl.head)
         and (b.position > pl.after_position or e.idx > ?::int)
         and (cardinality(?::text[]) = 0 or e.kind = any(?::text[]))
         and (?::text is null or e.account_id = ?::text)
       order by b.position, e.idx
       limit ?::int) p on true`;

/**
 * Retention, oldest batches first, in one statement: the numbered batches after what was removed
 * before, up to (not including) the first one recorded within the retention, at most `limit`.
 * By the database's clock, which stamped recorded_at (never a test clock).
 */
const PRUNE = `
  with state as (select pruned_through from event_feed_state where id = 1 for update),
  oldest as (
    select b.batch_id, b.position, b.recorded_at from event_batches b, state
     where b.position > state.pruned_through order by b.position limit ?),
  keep_from as (select min(position) as p from oldest where recorded_at >= now() - make_interval(secs => ?)),
  doomed as (
    select o.batch_id, o.position from oldest o, keep_from k where k.p is null or o.position < k.p),
  gone_events as (delete from events e using doomed d where e.batch_id = d.batch_id returning 1),
  gone as (delete from event_batches b using doomed d where b.batch_id = d.batch_id returning b.position),
  moved as (
    update event_feed_state set pruned_through = (select max(position) from gone)
     where id = 1 and exists (select 1 from gone)
    returning pruned_through)
  select count(*)::int as n from gone`;

function feedEvent(row: Row): FeedEvent {
  const idx = Number(row["idx"]);
  return {
    batchId: BigInt(row["batch_id"] as string),
    position: BigInt(row["position"] as string),
    idx,
    lastOfBatch: idx === Number(row["event_count"]) - 1,
    accountId: row["account_id"] as string,
    sequence: BigInt(row["account_sequence"] as string),
    kind: row["kind"] as LedgerEventKind,
    occurredAt: row["occurred_at"] as Date,
    recordedAt: row["recorded_at"] as Date,
    payload: row["payload"] as Buffer,
  };
}

function whole(position: bigint): EventCursor {
  return { position, idx: null };
}

/** The outbox tables (migration EventOutbox) on the ledger's pool. */
export class PostgresEventOutbox implements EventOutbox {
  private readonly q: Query;

  constructor(private readonly pool: pg.Pool) {
    this.q = queryOn(pool);
  }

  async sequence(): Promise<{ numbered: number; head: bigint; more: boolean } | null> {
    return inTransaction(this.pool, async (tx) => {
      // One round trip: BEGIN, the lock, the numbering (which does nothing without the lock),
      // the feed's state, COMMIT; prepared once per connection (a pass follows every few write
      // batches, and planning them afresh each pass was 12 % of the write backends' CPU at one
      // client). Pipelined statements still run one after another, each with a snapshot of its
      // own, so the numbering sees every number a pass before the lock gave.
      const [lock, numbered, state] = await tx.commit([
        { sql: TAKE_SEQUENCER_LOCK, params: [SEQUENCER_LOCK], name: "sequencer_lock" },
        { sql: NUMBER_BATCHES, params: [PASS_LIMIT], name: "number_batches" },
        { sql: FEED_STATE, name: "feed_state" },
      ]);
      if (lock![0]?.["got"] !== "true") return null;
      return { numbered: numbered!.length, head: BigInt(state![0]!["head"] as string), more: numbered!.length >= PASS_LIMIT };
    });
  }

  async page(query: EventQuery): Promise<EventPage> {
    const kinds = [...query.kinds];
    const rows = await this.q(
      PAGE,
      [query.after?.position ?? null, SCAN_BATCHES, query.after?.idx ?? WHOLE_BATCH, kinds, kinds, query.accountId, query.accountId, query.limit],
      "event_page",
    );
    const prunedThrough = BigInt(rows[0]!["pruned_through"] as string);
    const head = BigInt(rows[0]!["head"] as string);
    const after = query.after ?? whole(prunedThrough);
    // After part of a removed batch, or before the last removed one: something was removed unread.
    const lost = after.idx === null ? after.position < prunedThrough : after.position <= prunedThrough;
    if (lost) return { kind: "expired", oldest: whole(prunedThrough) };
    if (after.position > head) return { kind: "ahead", head: whole(head) };
    const until = after.position + BigInt(SCAN_BATCHES) < head ? after.position + BigInt(SCAN_BATCHES) : head;
    const events = rows.filter((r) => r["position"] !== null).map(feedEvent);
    const last = events[events.length - 1];
    // A full page ends at its last event; a short one has read everything up to `until`.
    const next = events.length === query.limit && last ? { position: last.position, idx: last.lastOfBatch ? null : last.idx } : whole(until);
    return { kind: "page", events, next, head };
  }

  async prune(retentionMs: number, limit: number): Promise<number> {
    return inTransaction(this.pool, async (tx) => {
      const [row] = await tx.query(PRUNE, [limit, retentionMs / 1000]);
      return Number(row?.["n"] ?? 0);
    });
  }
}
