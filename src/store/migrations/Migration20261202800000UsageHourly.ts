import { Migration } from "@mikro-orm/migrations";
import { levelTableSql, rebuildLevelSql } from "../usage-rollup.js";

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
    this.addSql(levelTableSql("hour"));
    for (const sql of rebuildLevelSql("hour", "true")) this.addSql(sql);
  }
}
