import { Migration } from "@mikro-orm/migrations";

/**
 * The usage rollup's rows are counters: every write of an account adds to its slot row and to an
 * hour and a day row per dimension, in place. With full pages, an update whose new version does
 * not fit on the row's page moves it and writes a new entry in the primary key (a third of the
 * daily rows' updates did, under the uniform bench). Room left on each page keeps most updates
 * on the page, with no index write (heap-only tuples). Pages written before this keep their fill
 * until they are rewritten (VACUUM FULL or pg_repack, which an operator may run at leisure).
 */
export class Migration20261205000000UsageFillfactor extends Migration {
  override async up(): Promise<void> {
    for (const table of ["usage_rollup", "usage_hourly", "usage_daily"]) this.addSql(`alter table ${table} set (fillfactor = 50);`);
  }
}
