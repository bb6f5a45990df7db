import { Migration } from "@mikro-orm/migrations";
import { ADD_HALF_HOUR_COLUMNS, rebuildLevelSql } from "../usage-rollup.js";

/**
 * The hourly level keeps each hour's first 30 minutes apart (half_consumed … half_generations), so
 * that a series in a zone on a half hour (Kolkata, Adelaide, St. John's) corrects its boundaries
 * by cutting an hour in two instead of reading every 15-minute slot of every combination there
 * (domain/usage.ts levelPlan). A database created after this change has the columns from the
 * table's creation (levelTableSql); here they are added where missing and every hour is summed
 * again from the slots, first halves included.
 */
export class Migration20261204000000UsageHalfHours extends Migration {
  override async up(): Promise<void> {
    this.addSql(ADD_HALF_HOUR_COLUMNS);
    for (const sql of rebuildLevelSql("hour", "true")) this.addSql(sql);
  }
}
