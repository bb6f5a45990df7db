import { Migration } from "@mikro-orm/migrations";

/**
 * Spend limits (SetSpendLimit): one row per account, member ("" = the whole account) and period,
 * with the counter of the period it counts (domain/spend-limit.ts): credits captured by Commits of
 * holds that started at or after period_start. What running holds hold is not stored: it is
 * summed from the open holds when the book is loaded, as for the concurrency caps.
 */
export class Migration20261202600000SpendLimits extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table spend_limits (
      account_id text not null references accounts (account_id),
      member_id text not null,
      period text not null check (period in ('DAY', 'WEEK', 'BILLING_PERIOD', 'LIFETIME')),
      max_credits bigint not null check (max_credits >= 0),
      mode text not null check (mode in ('HARD', 'SOFT')),
      time_zone text not null,
      period_start timestamptz not null,
      used bigint not null check (used >= 0),
      reached boolean not null,
      updated_at timestamptz not null,
      primary key (account_id, member_id, period)
    );`);
  }
}
