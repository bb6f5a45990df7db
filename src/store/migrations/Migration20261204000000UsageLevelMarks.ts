import { Migration } from "@mikro-orm/migrations";
import { addPrefixColumnsSql, rebuildLevelSql } from "../usage-rollup.js";

/**
 * The usage levels keep figures before their marks (domain/usage.ts LEVEL_MARKS): an hourly row
 * its first half hour's (half_consumed … half_generations), a daily row its first one, two and
 * three quarters' (q1_* … q3_*, before 06:00, 12:00 and 18:00 UTC). A series in a zone off UTC
 * then corrects each boundary with one day row, at most three hours and only for zones 15 or 45
 * minutes off the hour a slot, instead of up to twelve hours and a slot of every combination
 * (levelPlan). A database created after this change has the columns from the tables' creation
 * (levelTableSql); here they are added where missing and both levels summed again from below.
 */
export class Migration20261204000000UsageLevelMarks extends Migration {
  override async up(): Promise<void> {
    this.addSql(addPrefixColumnsSql("hour"));
    this.addSql(addPrefixColumnsSql("day"));
    for (const sql of rebuildLevelSql("hour", "true")) this.addSql(sql);
    for (const sql of rebuildLevelSql("day", "true")) this.addSql(sql);
  }
}
