import { Migration } from "@mikro-orm/migrations";

/**
 * A daily row keeps the figures before every half hour of its day (`prefixes`, a bigint[5][47]:
 * per figure, the sums before 00:30, 01:00 … 23:30 UTC; domain/usage.ts LEVEL_MARKS) instead of
 * before its quarters (q1_* … q3_*): a DAY or MONTH series in any zone a whole or half hour off
 * UTC corrects each boundary from the day row it reads anyway, with no hour row per boundary.
 * Only the sweeper's close writes these rows (a late write reopens its day instead:
 * store/persist.ts heads), so the width costs the write path nothing. The table is made again
 * (full pages: its rows are no longer updated in place by every write, so the room the rollup's
 * other levels keep is not needed here; `toast_tuple_target` keeps the ~2 KB rows uncompressed)
 * and the closed days are summed from the hours, one pass over usage_hourly.
 *
 * The statements are the ones store/usage-rollup.ts wrote when this migration was made, spelled
 * out here so that it does what it did then whatever that code says now (test/unit/migrations.test.ts
 * holds them).
 */
const FIGURES = ["consumed", "restored", "granted", "expired", "generations"] as const;
const HALF_HOURS = 47;

export class Migration20261208000000UsageDayHalfHours extends Migration {
  override async up(): Promise<void> {
    this.addSql(`drop table usage_daily;`);
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
      prefixes bigint[] not null default '{}',
      primary key (account_id, dim, day, value)
    ) with (toast_tuple_target = 8160);`);
    this.addSql(`delete from usage_daily e where true`);
    const before = (f: string, k: number) => `coalesce(sum(s.${f}) filter (where s.at < s.start + interval '${1800 * k} seconds'), 0)::bigint`;
    const prefixes = `array[${FIGURES.map((f) => `array[${Array.from({ length: HALF_HOURS }, (_, i) => before(f, i + 1)).join(", ")}]`).join(", ")}] as prefixes`;
    this.addSql(`insert into usage_daily (account_id, dim, day, value, ${FIGURES.join(", ")}, prefixes) 
    select s.account_id, s.dim, s.start, s.value, ${FIGURES.map((f) => `sum(s.${f}) as ${f}`).join(", ")}, ${prefixes}
      from (select s.*, date_bin('86400 seconds', s.at, timestamptz '1970-01-01 00:00:00+00') as start from (
      select e.account_id, e.dim, e.hour as at, e.value, e.consumed, e.restored, e.granted, e.expired, e.generations
        from usage_hourly e
       where e.hour < (select a.usage_days_open_from from accounts a where a.account_id = e.account_id)) s offset 0) s
     group by 1, 2, 3, 4`);
  }
}
