import { Migration } from "@mikro-orm/migrations";

/**
 * The transactional outbox and its feed order (docs/events.md).
 *
 * - `events`: one row per event, written by the statement that writes the change it tells (so an
 *   event exists if and only if its change committed). Keyed by its batch (one per write
 *   transaction) and its place in it.
 * - `event_batches`: one row per write transaction that wrote events. `batch_id` is drawn from a
 *   sequence inside the writing statement, after every account lock of the transaction is held,
 *   so two batches that touch one account draw in the account's change order. `position` is the
 *   feed order: null until the sequencer (store/event-feed.ts), one at a time under an advisory
 *   lock, numbers the committed batches it can see, in batch_id order, after every number it gave
 *   before. A reader that resumes after a position can therefore never miss a batch that commits
 *   late: it had no position yet.
 * - `event_feed_state.pruned_through`: the last position retention removed (cursors at or before
 *   it are expired).
 *
 * The feed is one global order, so these tables are not keyed by account like the others.
 */
export class Migration20261202100000EventOutbox extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create sequence event_batch_ids;`);
    this.addSql(`create table event_batches (
      batch_id bigint primary key,
      position bigint unique,
      event_count int not null,
      recorded_at timestamptz not null
    );`);
    this.addSql(`create index event_batches_unordered on event_batches (batch_id) where position is null;`);
    this.addSql(`create table events (
      batch_id bigint not null,
      idx int not null,
      account_id text not null,
      account_sequence bigint not null,
      kind text not null,
      occurred_at timestamptz not null,
      payload bytea not null,
      primary key (batch_id, idx)
    );`);
    this.addSql(`create table event_feed_state (
      id int primary key check (id = 1),
      pruned_through bigint not null
    );`);
    this.addSql(`insert into event_feed_state (id, pruned_through) values (1, 0);`);
  }
}
