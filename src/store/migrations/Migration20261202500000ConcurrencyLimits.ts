import { Migration } from "@mikro-orm/migrations";

/**
 * Caps on running holds (SetConcurrencyLimit): one row per account and member ("" = the whole
 * account). What runs is not stored: it is summed from the account's open holds when the book is
 * loaded (domain/concurrency-limit.ts), so it cannot drift.
 */
export class Migration20261202500000ConcurrencyLimits extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table concurrency_limits (
      account_id text not null references accounts (account_id),
      member_id text not null,
      max_open_holds int not null check (max_open_holds >= 0),
      max_held_credits bigint not null check (max_held_credits >= 0),
      updated_at timestamptz not null,
      primary key (account_id, member_id)
    );`);
  }
}
