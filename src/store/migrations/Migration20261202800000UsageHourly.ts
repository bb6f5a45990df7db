import { Migration } from "@mikro-orm/migrations";
import { rebuildUsageHourlySql } from "../usage-rollup.js";

/**
 * The usage rollup's hourly level (domain/usage.ts): per account, UTC hour and ONE dimension
 * (model, kind, member or caller) and its value, the same sums as usage_rollup. A series grouped
 * by at most one dimension in a zone whose boundaries fall on whole hours (UTC, Paris, New York …)
 * sums these rows: for 90 days by DAY and MODEL, about 24 × 90 × the models, instead of every
 * 15-minute slot of every (model, kind, member, caller) combination. Written in the same persist
 * statement as usage_rollup; filled here from it. No foreign key, as for usage_rollup.
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
    for (const sql of rebuildUsageHourlySql("true")) this.addSql(sql);
  }
}
