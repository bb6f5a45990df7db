import { Migration } from "@mikro-orm/migrations";

/**
 * The usage rollup's hourly level (domain/usage.ts): per account, UTC hour and ONE dimension
 * (model, kind, member or caller) and its value, the same sums as usage_rollup. A series grouped
 * by at most one dimension in a zone whose boundaries fall on whole hours (UTC, Paris, New York …)
 * sums these rows: for 90 days by DAY and MODEL, about 24 × 90 × the models, instead of every
 * 15-minute slot of every (model, kind, member, caller) combination. Written in the same persist
 * statement as usage_rollup; filled here from it. No foreign key, as for usage_rollup.
 *
 * The statements are the ones store/usage-rollup.ts wrote when this migration was made, spelled
 * out so that it does what it did then (test/unit/migrations.test.ts holds them): the prefix
 * columns came later, with their own migration.
 */
export class Migration20261202800000UsageHourly extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table usage_hourly (
      account_id text not null,
      dim text not null check (dim in ('model', 'kind', 'member', 'caller')),
      hour timestamptz not null,
      value text not null,
      consumed bigint not null default 0,
      restored bigint not null default 0,
      granted bigint not null default 0,
      expired bigint not null default 0,
      generations bigint not null default 0,
      primary key (account_id, dim, hour, value)
    );`);
    this.addSql(`delete from usage_hourly e where true`);
    this.addSql(`insert into usage_hourly (account_id, dim, hour, value, consumed, restored, granted, expired, generations)
    select e.account_id, d.dim, to_timestamp(floor(extract(epoch from e.slot) / 3600) * 3600) as hour, d.value,
      sum(e.consumed), sum(e.restored), sum(e.granted), sum(e.expired), sum(e.generations)
      from usage_rollup e
      cross join lateral (values ('model', e.model), ('kind', e.kind), ('member', e.member_id), ('caller', e.caller)) as d(dim, value)
     where true
     group by 1, 2, 3, 4`);
  }
}
