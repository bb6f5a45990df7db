import { Migration } from "@mikro-orm/migrations";
import { levelTableSql, rebuildLevelSql } from "../usage-rollup.js";

/**
 * A daily row keeps the figures before every half hour of its day (p1_* … p47_*, domain/usage.ts
 * LEVEL_MARKS) instead of before its quarters (q1_* … q3_*): a DAY or MONTH series in any zone a
 * whole or half hour off UTC corrects each boundary from the day row it reads anyway, with no
 * hour row per boundary. Only the sweeper's close writes these rows (a late write reopens its day
 * instead: store/persist.ts heads), so the width costs the write path nothing. The table is made
 * again (full pages: its rows are no longer updated in place by every write, so the room the
 * rollup's other levels keep is not needed here) and the closed days are summed from the hours,
 * one pass over usage_hourly.
 */
export class Migration20261208000000UsageDayHalfHours extends Migration {
  override async up(): Promise<void> {
    this.addSql(`drop table usage_daily;`);
    this.addSql(levelTableSql("day"));
    for (const sql of rebuildLevelSql("day", "true", "e.hour < (select a.usage_days_open_from from accounts a where a.account_id = e.account_id)")) this.addSql(sql);
  }
}
