import { Migration } from "@mikro-orm/migrations";

/**
 * Every Reserve, Commit and Release updates a bucket's `held` or `remaining`. The three partial
 * indexes named those columns in their predicates, so no update of a bucket could stay on its
 * page without index writes (heap-only): each wrote a new entry in the primary key and in every
 * partial index the new version still matched, four in all for a live adjustment bucket.
 * Postgres decides heap-only by comparing the indexed columns' old and new values, so the
 * predicates now read two stored generated flags instead, which change only when a bucket runs
 * out (`live`) or becomes wholly held (`has_free`): an ordinary update leaves the indexes alone.
 * The indexes keep their names and order (the queries name the flags: due-work.ts, account-loader.ts).
 * Adding stored columns rewrites the table under its exclusive lock, and the indexes are built
 * again: a pause in writes that grows with the number of buckets (seconds per million rows).
 */
export class Migration20261206000000BucketFlags extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table buckets
      add column live boolean generated always as (remaining > 0) stored,
      add column has_free boolean generated always as (remaining > held) stored;`);
    this.addSql(`drop index buckets_live;`);
    this.addSql(`create index buckets_live on buckets (account_id) where live;`);
    this.addSql(`drop index buckets_expiring;`);
    this.addSql(`create index buckets_expiring on buckets (expires_at) where has_free;`);
    this.addSql(`drop index buckets_expiry_notice;`);
    this.addSql(`create index buckets_expiry_notice on buckets (expires_at) where has_free and not expiry_noticed and kind <> 'SUBSCRIPTION';`);
  }
}
