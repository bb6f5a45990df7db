import { Migration } from "@mikro-orm/migrations";

/**
 * The usage rollup's daily level (domain/usage.ts): per account, UTC day and one dimension's value,
 * the same sums as usage_hourly. A series by DAY or MONTH reads these rows and corrects each
 * boundary with the hours (and, in a half-hour zone, the slots) between the zone's midnight and
 * the nearest UTC one (domain/usage.ts `levelPlan`): 90 days by MODEL is about 90 × the models
 * rows instead of 24 times as many. Written in the same persist statement as the other levels;
 * filled here from usage_hourly. No foreign key, as for the other levels.
 *
 * The statements are the ones store/usage-rollup.ts wrote when this migration was made, spelled
 * out so that it does what it did then (test/unit/migrations.test.ts holds them): the prefix
 * columns came later, with their own migration.
 */
export class Migration20261202900000UsageDaily extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table usage_daily (
      account_id text not null,
      dim text not null check (dim in ('model', 'kind', 'member', 'caller')),
      day timestamptz not null,
      value text not null,
      consumed bigint not null default 0,
      restored bigint not null default 0,
      granted bigint not null default 0,
      expired bigint not null default 0,
      generations bigint not null default 0,
      primary key (account_id, dim, day, value)
    );`);
    this.addSql(`delete from usage_daily e where true`);
    this.addSql(`insert into usage_daily (account_id, dim, day, value, consumed, restored, granted, expired, generations)
    select e.account_id, e.dim, to_timestamp(floor(extract(epoch from e.hour) / 86400) * 86400) as day, e.value,
      sum(e.consumed), sum(e.restored), sum(e.granted), sum(e.expired), sum(e.generations)
      from usage_hourly e
     where true
     group by 1, 2, 3, 4`);
  }
}
