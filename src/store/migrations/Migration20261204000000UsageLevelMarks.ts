import { Migration } from "@mikro-orm/migrations";

/**
 * The usage levels keep figures before their marks (domain/usage.ts LEVEL_MARKS): an hourly row
 * its first half hour's (half_consumed … half_generations), a daily row its first one, two and
 * three quarters' (q1_* … q3_*, before 06:00, 12:00 and 18:00 UTC). A series in a zone off UTC
 * then corrects each boundary with one day row, at most three hours and only for zones 15 or 45
 * minutes off the hour a slot, instead of up to twelve hours and a slot of every combination
 * (levelPlan). The columns are added and both levels summed again from below.
 *
 * The statements are the ones store/usage-rollup.ts wrote when this migration was made, spelled
 * out here so that it does what it did then whatever that code says now (test/unit/migrations.test.ts
 * holds them). The quarter columns went with Migration20261208000000UsageDayHalfHours.
 */
const FIGURES = ["consumed", "restored", "granted", "expired", "generations"] as const;

function addColumns(table: string, prefixes: readonly string[]): string {
  return `alter table ${table} ${prefixes.flatMap((p) => FIGURES.map((f) => `add column if not exists ${p}_${f} bigint not null default 0`)).join(", ")}`;
}

/** Sums a level from the one below, with each mark's figures: the rows before `seconds` into the period. */
function refill(table: string, period: string, periodSeconds: number, marks: readonly [string, number][], from: string): string {
  const start = `to_timestamp(floor(extract(epoch from s.at) / ${periodSeconds}) * ${periodSeconds})`;
  const columns = ["account_id", "dim", period, "value", ...FIGURES, ...marks.flatMap(([p]) => FIGURES.map((f) => `${p}_${f}`))];
  const sums = [
    ...FIGURES.map((f) => `sum(s.${f}) as ${f}`),
    ...marks.flatMap(([p, seconds]) =>
      FIGURES.map((f) => `coalesce(sum(s.${f}) filter (where s.at < to_timestamp(floor(extract(epoch from s.at) / ${periodSeconds}) * ${periodSeconds} + ${seconds})), 0) as ${p}_${f}`),
    ),
  ];
  return `insert into ${table} (${columns.join(", ")}) 
    select s.account_id, s.dim, ${start} as start, s.value, ${sums.join(", ")}
      from (
      ${from}) s
     group by 1, 2, 3, 4`;
}

export class Migration20261204000000UsageLevelMarks extends Migration {
  override async up(): Promise<void> {
    this.addSql(addColumns("usage_hourly", ["half"]));
    this.addSql(addColumns("usage_daily", ["q1", "q2", "q3"]));
    this.addSql(`delete from usage_hourly e where true`);
    this.addSql(
      refill(
        "usage_hourly",
        "hour",
        3600,
        [["half", 1800]],
        `select e.account_id, d.dim, e.slot as at, d.value, e.consumed, e.restored, e.granted, e.expired, e.generations
        from usage_rollup e
        cross join lateral (values ('model', e.model), ('kind', e.kind), ('member', e.member_id), ('caller', e.caller)) as d(dim, value)
       where true`,
      ),
    );
    this.addSql(`delete from usage_daily e where true`);
    this.addSql(
      refill(
        "usage_daily",
        "day",
        86400,
        [
          ["q1", 21600],
          ["q2", 43200],
          ["q3", 64800],
        ],
        `select e.account_id, e.dim, e.hour as at, e.value, e.consumed, e.restored, e.granted, e.expired, e.generations
        from usage_hourly e
       where true`,
      ),
    );
  }
}
