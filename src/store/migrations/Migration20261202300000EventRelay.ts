import { Migration } from "@mikro-orm/migrations";

/**
 * The broker relay's own cursor (docs/events.md "Broker relay"): one row per stream it publishes
 * to, the feed cursor after the last event the broker acknowledged. Only the relay holding the
 * stream's advisory lock writes it, on the connection that holds the lock (store/relay-lease.ts).
 * `idx` null: after the whole batch at `position` (the feed's cursor format, app/events.ts).
 * `published` / `duplicates`: events the broker took as new / dropped as redeliveries, for operators.
 */
export class Migration20261202300000EventRelay extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table event_relay_cursors (
      stream text primary key,
      position bigint not null,
      idx int,
      published bigint not null default 0,
      duplicates bigint not null default 0,
      updated_at timestamptz not null
    );`);
  }
}
