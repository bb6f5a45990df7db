import { Migration } from "@mikro-orm/migrations";
import { levelTableSql, rebuildLevelSql } from "../usage-rollup.js";

/**
 * The usage rollup's daily level (domain/usage.ts): per account, UTC day and one dimension's value,
 * the same sums as usage_hourly. A series by DAY or MONTH reads these rows and corrects each
 * boundary with the hours (and, in a half-hour zone, the slots) between the zone's midnight and
 * the nearest UTC one (domain/usage.ts `levelPlan`): 90 days by MODEL is about 90 × the models
 * rows instead of 24 times as many. Written in the same persist statement as the other levels;
 * filled here from usage_hourly. No foreign key, as for the other levels.
 */
export class Migration20261202900000UsageDaily extends Migration {
  override async up(): Promise<void> {
    this.addSql(levelTableSql("day"));
    for (const sql of rebuildLevelSql("day", "true")) this.addSql(sql);
  }
}
