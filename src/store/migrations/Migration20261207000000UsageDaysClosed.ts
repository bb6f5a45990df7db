import { Migration } from "@mikro-orm/migrations";

/**
 * The daily level is closed, not kept (docs/decisions.md, "Usage and the forecast"): a write adds
 * to its slot and hour rows, and the sweeper writes an account's day rows once its days are over
 * (store/usage-rollup.ts CLOSE_USAGE_DAYS). `usage_days_open_from` is the first UTC day whose
 * rows are not written yet: reads sum the hours from there on, and a write that lands before it
 * (a clock behind the closer's) adds to the day rows itself. Existing accounts have every day
 * written up to now, so today becomes their first open day and today's rows go; a new account
 * starts with every day open. The update writes every account row once (a pass over the table).
 */
export class Migration20261207000000UsageDaysClosed extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table accounts add column usage_days_open_from timestamptz not null default '-infinity';`);
    this.addSql(`update accounts set usage_days_open_from = to_timestamp(floor(extract(epoch from now()) / 86400) * 86400);`);
    this.addSql(`delete from usage_daily d using accounts a where a.account_id = d.account_id and d.day >= a.usage_days_open_from;`);
    // The sweeper's pick: accounts whose days before today are not all written.
    this.addSql(`create index accounts_usage_days_open on accounts (usage_days_open_from);`);
  }
}
