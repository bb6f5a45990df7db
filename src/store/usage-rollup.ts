import { dayOf, hourOf, LEVEL_MARKS, type LevelPlan, markOf, type SignedRange, type UsageDimension, type UsageLevel, type UsageSeriesRow } from "../domain/usage.js";
import type { Query } from "./pg.js";
import { readFigures } from "./usage-figures.js";

/**
 * A series from the rollup: rows of the account's slots in [first boundary, last boundary),
 * bucketed by `width_bucket` over the boundaries (computed by the caller in the time zone: Postgres
 * never interprets a zone here), grouped by the dimensions asked for. The statement's text is
 * fixed (ungrouped dimensions become NULL, one group), so it is prepared once. One index range of
 * the primary key (account_id, slot).
 */
const SERIES = `
  select width_bucket(slot, ?::timestamptz[]) as bucket,
    case when ?::boolean then model end as model, case when ?::boolean then kind end as kind,
    case when ?::boolean then member_id end as member, case when ?::boolean then caller end as caller,
    sum(consumed)::text as consumed, sum(restored)::text as restored, sum(granted)::text as granted,
    sum(expired)::text as expired, sum(generations)::text as generations
  from usage_rollup
  where account_id = ? and slot >= ? and slot < ?
  group by 1, 2, 3, 4, 5
  order by 1, 2, 3, 4, 5
  limit ?`;

export async function usageSeries(q: Query, accountId: string, bounds: readonly Date[], groupBy: ReadonlySet<UsageDimension>, maxRows: number): Promise<UsageSeriesRow[]> {
  const rows = await q(
    SERIES,
    [bounds, groupBy.has("model"), groupBy.has("kind"), groupBy.has("member"), groupBy.has("caller"), accountId, bounds[0], bounds[bounds.length - 1], maxRows + 1],
    "usage_series",
  );
  return rows.map((r) => {
    const group: Partial<Record<UsageDimension, string>> = {};
    for (const d of groupBy) group[d] = r[d] as string;
    return {
      bucket: Number(r["bucket"]) - 1,
      group,
      consumed: BigInt(r["consumed"] as string),
      restored: BigInt(r["restored"] as string),
      granted: BigInt(r["granted"] as string),
      expired: BigInt(r["expired"] as string),
      generations: BigInt(r["generations"] as string),
    };
  });
}

/**
 * When the account was created, and the credits captured in each of the `days` days before the
 * end of the current hour by the account's own clock (`now` is the server's; the account's test
 * clock offset is applied here, so this needs no book first and runs beside its load; index 0:
 * the day that ends then), from the hourly level (the `kind` dimension: every movement once). One
 * statement, about 24 × `days` × the kinds rows.
 */
export async function recentConsumption(q: Query, accountId: string, now: Date, days: number): Promise<{ createdAt: Date; perDay: bigint[] } | null> {
  const rows = await q(
    `select a.created_at, (select coalesce(json_agg(json_build_array(d.day, d.consumed)), '[]') from (
        select floor(extract(epoch from (w.until - hour)) / 86400)::int as day, sum(consumed)::text as consumed
          from usage_hourly where account_id = a.account_id and dim = 'kind' and hour >= w.until - ? * interval '1 day' and hour < w.until
         group by 1) d) as days
       from accounts a
       cross join lateral (
         select to_timestamp(floor(extract(epoch from ?::timestamptz + a.clock_offset_ms * interval '1 millisecond') / 3600) * 3600 + 3600) as until) w
      where a.account_id = ?`,
    [days, now, accountId],
    "recent_consumption",
  );
  const row = rows[0];
  if (!row) return null;
  const perDay = Array.from({ length: days }, () => 0n);
  for (const [day, consumed] of row["days"] as [number, string][]) if (day >= 0 && day < days) perDay[day] = BigInt(consumed);
  return { createdAt: row["created_at"] as Date, perDay };
}

/**
 * The rollup rows of the accounts `filter` selects (an SQL condition on `e.account_id`), rebuilt
 * from their entries by the rules of domain/usage.ts: the migration that created the rollup filled
 * it with these statements (written out there as they stood), and an operator (or a test that
 * writes entries directly) can rebuild one account.
 * Run it where no write to those accounts runs concurrently (in the account's locked transaction,
 * or with the service stopped).
 */
export function rebuildUsageRollupSql(filter: string): [remove: string, fill: string] {
  const remove = `delete from usage_rollup e where ${filter}`;
  const fill = `
    with movements as (
      select e.account_id, to_timestamp(floor(extract(epoch from e.created_at) / 900) * 900) as slot,
        case when e.kind in ('CAPTURE', 'RELEASE') then coalesce(r.pricing -> 'spec' ->> 'model', r.metadata ->> 'model', 'unknown') else '' end as model,
        case when e.kind in ('CAPTURE', 'RELEASE') then coalesce(r.pricing -> 'spec' ->> 'kind', 'unknown') else coalesce(b.kind, 'unknown') end as kind,
        case when e.kind in ('CAPTURE', 'RELEASE') then coalesce(nullif(r.member_id, ''), r.metadata ->> 'member_id', 'unknown') else '' end as member_id,
        e.caller, e.kind as entry_kind, e.amount, e.reservation_id, e.entry_id, r.state
      from ledger_entries e
      left join reservations r on r.account_id = e.account_id and r.reservation_id = e.reservation_id
      left join buckets b on b.account_id = e.account_id and b.bucket_id = e.bucket_id
      where e.kind <> 'HOLD' and ${filter}),
    -- A committed hold's generation goes where its last capture or release went.
    last_of_commit as (
      select distinct on (account_id, reservation_id) account_id, reservation_id, entry_id
        from movements where state = 'COMMITTED' and entry_kind in ('CAPTURE', 'RELEASE')
       order by account_id, reservation_id, entry_id desc)
    insert into usage_rollup (account_id, slot, model, kind, member_id, caller, consumed, restored, granted, expired, generations)
    select m.account_id, m.slot, m.model, m.kind, m.member_id, m.caller,
      coalesce(sum(m.amount) filter (where m.entry_kind = 'CAPTURE'), 0),
      coalesce(sum(m.amount) filter (where m.entry_kind = 'RELEASE'), 0),
      coalesce(sum(m.amount) filter (where m.entry_kind in ('GRANT', 'ADJUST')), 0),
      coalesce(sum(m.amount) filter (where m.entry_kind = 'EXPIRE'), 0),
      count(l.entry_id)
    from movements m
    left join last_of_commit l on l.account_id = m.account_id and l.entry_id = m.entry_id
    group by m.account_id, m.slot, m.model, m.kind, m.member_id, m.caller`;
  return [remove, fill];
}


/**
 * The coarser levels, each summed from the one below it: an hour from its slots (once per
 * dimension), a day from its hours. `source` yields, per row below, the account, dimension,
 * instant and value with the five figures; `filter` is an SQL condition on `e.account_id`.
 */
const LEVEL_TABLES: Readonly<Record<UsageLevel, { table: string; column: string; seconds: number; prefixes: readonly string[] | "array"; source: (filter: string) => string }>> = {
  hour: {
    table: "usage_hourly",
    column: "hour",
    seconds: 3600,
    // The figures before each of the level's marks (domain/usage.ts LEVEL_MARKS), in order: an
    // hour's first half (half_*, a column each: the write path adds to them); a day's first k
    // half hours (one two-dimensional array, `prefixes`[figure][k], FIGURES' order: the close
    // writes it whole, and a reader deforms one column, not 235, and reads the two it needs).
    prefixes: ["half"],
    source: (filter) => `
      select e.account_id, d.dim, e.slot as at, d.value, e.consumed, e.restored, e.granted, e.expired, e.generations
        from usage_rollup e
        cross join lateral (values ('model', e.model), ('kind', e.kind), ('member', e.member_id), ('caller', e.caller)) as d(dim, value)
       where ${filter}`,
  },
  day: {
    table: "usage_daily",
    column: "day",
    seconds: 86_400,
    prefixes: "array",
    source: (filter) => `
      select e.account_id, e.dim, e.hour as at, e.value, e.consumed, e.restored, e.granted, e.expired, e.generations
        from usage_hourly e
       where ${filter}`,
  },
};

const FIGURES = ["consumed", "restored", "granted", "expired", "generations"] as const;

/** The figure columns of a level's table: the five, then each mark's prefix of them (LEVEL_MARKS), as columns or as one array. */
function figureColumns(level: UsageLevel): readonly string[] {
  const { prefixes } = LEVEL_TABLES[level];
  return [...FIGURES, ...(prefixes === "array" ? ["prefixes"] : prefixes.flatMap((p) => FIGURES.map((f) => `${p}_${f}`)))];
}

/** The name Reconcile gives a day's prefix: `p{k}_{figure}`, the figures before the k-th half hour. */
function dayPrefixFields(): { name: string; figure: number; mark: number }[] {
  return FIGURES.flatMap((f, i) => LEVEL_MARKS.day.map((_, k) => ({ name: `p${k + 1}_${f}`, figure: i + 1, mark: k + 1 })));
}

/** A level's rows as the level below sums them: account_id, dim, start, value and the figures (figureColumns). */
export function levelFromBelowSql(level: UsageLevel, filter: string): string {
  return levelSumsSql(level, LEVEL_TABLES[level].source(filter));
}

/**
 * A level's rows summed from `source`, a select of account_id, dim, at (an instant inside the
 * level's span), value and the five figures: the level's start of each, the figures, and (unless
 * `withPrefixes` is false) each mark's prefix (the figures of the rows before it). The marks are
 * whole hours or half hours, so a slot is before a mark exactly when its hour is: the same sums
 * come from slots as from hours.
 */
function levelSumsSql(level: UsageLevel, source: string, withPrefixes = true): string {
  const { seconds, prefixes } = LEVEL_TABLES[level];
  const before = (f: string, mark: number) => `coalesce(sum(s.${f}) filter (where s.at < s.start + interval '${mark / 1000} seconds'), 0)`;
  const sums = [
    ...FIGURES.map((f) => `sum(s.${f}) as ${f}`),
    ...(!withPrefixes
      ? []
      : prefixes === "array"
        ? [`array[${FIGURES.map((f) => `array[${LEVEL_MARKS[level].map((m) => `${before(f, m)}::bigint`).join(", ")}]`).join(", ")}] as prefixes`]
        : prefixes.flatMap((p, k) => FIGURES.map((f) => `${before(f, LEVEL_MARKS[level][k]!)} as ${p}_${f}`))),
  ];
  // Each row's start once (the fence), by date_bin from the Unix epoch: integer arithmetic and no
  // time zone (a start as floor(extract(epoch …)) was numeric arithmetic at every mark's test).
  return `
    select s.account_id, s.dim, s.start, s.value, ${sums.join(", ")}
      from (select s.*, date_bin('${seconds} seconds', s.at, timestamptz '1970-01-01 00:00:00+00') as start from (${source}) s offset 0) s
     group by 1, 2, 3, 4`;
}

/**
 * The write path's additions to the hourly level (a CTE of the persist statement, after the CTE
 * named `slots` that holds the batch's slot rows: account_id, slot, model, kind, member_id, caller
 * and the figures). Postgres sums them from the batch's slot rows, once per dimension, as the
 * rebuild sums them from the rollup: the server sends the slot rows only. The daily level is the
 * close's alone (CLOSE_USAGE_DAYS): a write that lands in a day already closed moves the
 * account's first open day back to it instead (the persist statement's account heads), and the
 * next close writes that day again.
 */
export function levelAdditionsSql(slots: string): string {
  const { table, column } = LEVEL_TABLES.hour;
  const figures = figureColumns("hour");
  const source = `
      select s.account_id, d.dim, s.slot as at, d.value, s.consumed, s.restored, s.granted, s.expired, s.generations
        from ${slots} s
        cross join lateral (values ('model', s.model), ('kind', s.kind), ('member', s.member_id), ('caller', s.caller)) as d(dim, value)`;
  return `
  ${table}_added as (
    insert into ${table} as u (account_id, dim, ${column}, value, ${figures.join(", ")}) ${levelSumsSql("hour", source)}
    on conflict (account_id, dim, ${column}, value) do update set ${figures.map((c) => `${c} = u.${c} + excluded.${c}`).join(", ")}
    returning 1)`;
}

/** A level of the accounts `filter` selects (an SQL condition on `e.account_id`), rebuilt from the rows of the level below that `below` selects (`e`: that level's rows). */
export function rebuildLevelSql(level: UsageLevel, filter: string, below = filter): [remove: string, fill: string] {
  const { table, column } = LEVEL_TABLES[level];
  return [
    `delete from ${table} e where ${filter}`,
    `insert into ${table} (account_id, dim, ${column}, value, ${figureColumns(level).join(", ")}) ${levelFromBelowSql(level, below)}`,
  ];
}

/** The account's first open day (`?`: the account): days before it have their usage_daily rows, days from it are summed from the hours. */
const OPEN_FROM = "(select usage_days_open_from from accounts where account_id = ?)";

/**
 * Reconcile's check of a level against the level below (`?`: the account, twice; for the daily
 * level four times): only the (dimension, value, start) rows and figures that differ come back,
 * named by `subject`. The daily level is checked for the closed days (before the account's
 * `usage_days_open_from`): the row of a day a late write reopened is not read until the next
 * close writes it again.
 */
export function levelCheckSql(level: UsageLevel, subject: string, format: string): string {
  const { table, column } = LEVEL_TABLES[level];
  const columns = figureColumns(level);
  const closed = (column: string) => (level === "day" ? ` and ${column} < ${OPEN_FROM}` : "");
  const below = `e.account_id = ?${closed("e.hour")}`;
  // Each figure, and each prefix of the day's array by the name of its mark.
  const fields = [
    ...columns.filter((c) => c !== "prefixes").map((c) => `('${c}', coalesce(h.${c}, 0), coalesce(f.${c}, 0))`),
    ...(columns.includes("prefixes") ? dayPrefixFields().map((p) => `('${p.name}', coalesce(h.prefixes[${p.figure}][${p.mark}], 0), coalesce(f.prefixes[${p.figure}][${p.mark}], 0))`) : []),
  ];
  return `
  select '${subject} ' || coalesce(h.dim, f.dim) || '=' || coalesce(h.value, f.value) || ' ' ||
      to_char(coalesce(h.start, f.start) at time zone 'UTC', '${format}') as subject,
    x.field, x.stored::text as stored, x.from_entries::text as from_entries
    from (select dim, ${column} as start, value, ${columns.join(", ")} from ${table} where account_id = ?${closed(column)}) h
    full join (${levelFromBelowSql(level, below)}) f on f.dim = h.dim and f.start = h.start and f.value = h.value
    cross join lateral (values ${fields.join(",\n      ")}) as x(field, stored, from_entries)
   where x.stored <> x.from_entries`;
}

/**
 * Every level of one account ($1), rebuilt from its entries: run all six, in order, in one
 * transaction. The daily level only for the account's closed days (CLOSE_USAGE_DAYS writes the rest
 * when their turn comes).
 */
export const REBUILD_ACCOUNT_USAGE: readonly string[] = [
  ...rebuildUsageRollupSql("e.account_id = $1"),
  ...rebuildLevelSql("hour", "e.account_id = $1"),
  ...rebuildLevelSql("day", "e.account_id = $1", "e.account_id = $1 and e.hour < (select usage_days_open_from from accounts where account_id = $1)"),
];

/**
 * The sweeper's close of the daily level (three `?`: now by the server's clock, the start of its
 * UTC day, how many accounts at most): accounts whose first open day is before today are locked
 * (skipping those a write holds), the hours of each from its first open day to the start of its
 * own today (by its clock, test clock included) are summed into day rows, and its first open day
 * moves there. A day row so written replaces any row of that day (none is written while the day
 * is open, or the day was reopened). Writes hold the same lock, so a write either lands before the
 * close (its hours are summed) or after it (it finds the day closed and reopens it: the persist
 * statement's heads move the mark back, and a later close writes the day again).
 */
export const CLOSE_USAGE_DAYS = `
  with picked as (
    select account_id, usage_days_open_from as open_from,
      date_bin('${LEVEL_TABLES.day.seconds} seconds', ?::timestamptz + clock_offset_ms * interval '1 millisecond', timestamptz '1970-01-01 00:00:00+00') as today
      from accounts where usage_days_open_from < ?::timestamptz
     order by usage_days_open_from limit ? for update skip locked),
  closing as (select * from picked where today > open_from),
  added as (
    insert into usage_daily as u (account_id, dim, day, value, ${figureColumns("day").join(", ")}) ${levelSumsSql(
      "day",
      `select e.account_id, e.dim, e.hour as at, e.value, ${FIGURES.map((f) => `e.${f}`).join(", ")}
        from closing c
        cross join (values ('model'), ('kind'), ('member'), ('caller')) as d(dim)
        join usage_hourly e on e.account_id = c.account_id and e.dim = d.dim and e.hour >= c.open_from and e.hour < c.today`,
    )}
    on conflict (account_id, dim, day, value) do update set ${figureColumns("day").map((c) => `${c} = excluded.${c}`).join(", ")}
    returning 1),
  moved as (update accounts a set usage_days_open_from = c.today from closing c where a.account_id = c.account_id returning 1)
  select (select count(*) from picked)::int as picked, (select count(*) from moved)::int as closed, (select count(*) from added)::int as day_rows`;

/**
 * The day rows of one account and dimension in [from, to) (`?`s: daysParams): the written rows
 * of the closed days (`closed`), and the open days (from the account's usage_days_open_from:
 * today, and any day the sweeper has not closed yet or a late write reopened) summed from their
 * hours, alike in the five figures. `withPrefixes`: the closed rows' prefix array too (an open
 * day has none: a boundary in it is corrected from its hours, leveledStatement).
 */
function daysSql(withPrefixes: boolean): string {
  const figures = FIGURES.join(", ");
  return `(
    select d.day, d.value, ${figures}${withPrefixes ? ", d.prefixes, true as closed" : ""}
      from usage_daily d where d.account_id = ? and d.dim = ? and d.day >= ? and d.day < least(?::timestamptz, ${OPEN_FROM})
    union all
    select h.start as day, h.value, ${FIGURES.map((f) => `h.${f}::bigint`).join(", ")}${withPrefixes ? ", null::bigint[], false" : ""} from (${levelSumsSql(
      "day",
      `select e.account_id, e.dim, e.hour as at, e.value, ${FIGURES.map((f) => `e.${f}`).join(", ")}
        from usage_hourly e where e.account_id = ? and e.dim = ? and e.hour >= greatest(?::timestamptz, ${OPEN_FROM}) and e.hour < ?`,
      false,
    )}) h)`;
}

function daysParams(accountId: string, dim: UsageDimension, from: Date, to: Date): unknown[] {
  return [accountId, dim, from, to, accountId, accountId, dim, from, accountId, to];
}

/** Which statement reads a plan: days on top with or without day rows to cut, or hours on top. */
type LeveledShape = "day" | "day_cut" | "hour";

/**
 * A series grouped by one dimension (or none: the sums over every kind) read by a level plan
 * (domain/usage.ts `levelPlan`): the top level (days or hours) bucketed by the plan's moved
 * boundaries, plus the day rows, hours and slots that correct each boundary, each correction
 * added to the bucket that starts at its boundary and taken from the one that ends there
 * (levelPlan's rule, modelled by the domain test); buckets outside the series and groups whose
 * figures all net to zero are dropped. Three fixed statements (LeveledShape), each prepared once.
 *
 * Every row read becomes one to three signed (bucket, value, figures) rows — a join with a
 * constant VALUES list of the copies' offsets and signs, whose rows the select list turns into
 * the copies (`unnest` of arrays in the select list set up a set-returning call per array per
 * row: 15–25 % slower; a VALUES list correlated with the row costs ~40 µs a row) — and one
 * aggregation sums them all: no part is summed twice and the server parses only the answer's
 * ~550 rows (it parsed and combined ~1,100–1,650 before).
 * The day rows a boundary's correction cuts are rows the top scan reads anyway (the scan is
 * widened to the corrected days): each yields its whole figures for its bucket and, when its day
 * is corrected (arrays indexed by the day's place in the scan; a DAY or MONTH series corrects a
 * UTC day at most once, its boundaries being 23 hours or more apart), the difference of two of
 * its prefixes for the boundary: one index range, where a probe per boundary cost ~2 ms (and,
 * before the day kept every half hour's prefix, an hour probe per boundary ~50 µs). The
 * hours (an HOUR series' corrections; a DAY series' only in its open days) and slots are LATERAL
 * subqueries fenced by OFFSET 0 so that each range is its own index range (flattened, a generic
 * plan scans the dimension's every hour once per range); the selects around them are fenced too,
 * so that a share or a cut is computed once per row (flattened, Postgres writes the expression
 * out again at each use: 30 array lookups a day row).
 *
 * The answer is one row of two texts: each row's bucket and figures, comma-separated, the rows
 * separated by ';' (numbers only), and the rows' values as a JSON array in the same order (a
 * value is any text). Values are grouped in the C collation (byte order: a sort of the database's
 * collation cost more; the server orders the answer itself).
 */
function leveledStatement(shape: LeveledShape): string {
  // An hour the range cuts counts one half: its first half when the range ends in it, the rest
  // when the range starts in it.
  const hourShare = (f: string) => `(case when h.hour + interval '1 hour' > c.hi then h.half_${f} when h.hour < c.lo then h.${f} - h.half_${f} else h.${f} end)`;
  // A closed day's figures before half hour k (0: nothing, 48: the whole day, else its prefix);
  // a range [lo, hi) of half hours takes before(hi) − before(lo), only on a corrected day.
  const whole = LEVEL_MARKS.day.length + 1;
  const before = (k: string, f: string) => `(case ${k} when 0 then 0 when ${whole} then t.${f} else t.prefixes[${FIGURES.indexOf(f as (typeof FIGURES)[number]) + 1}][${k}] end)`;
  const cut = (f: string) => `case when f.j is not null then f.sgn * (${before("f.hi", f)} - ${before("f.lo", f)}) end`;
  const value = (v: string) => `case when ?::boolean then ${v} collate "C" end as value`;
  // A correction's row twice (the VALUES list `pair`): signed for the bucket starting at its boundary, negated for the one ending there.
  const both = `x.j - s.d, x.value, ${FIGURES.map((f) => `s.m * x.${f}`).join(", ")}`;
  const pair = "cross join (values (0, 1), (1, -1)) as s(d, m)";
  const top = {
    day: `
  select width_bucket(t.day, ?::timestamptz[]) - 1 as bucket, ${value("t.value")}, ${FIGURES.map((f) => `t.${f}`).join(", ")}
    from ${daysSql(false)} t`,
    day_cut: `
  select case s.k when 0 then x.idx else x.j - s.k + 1 end as bucket, x.value,
    ${FIGURES.map((f) => `case s.k when 0 then x.${f} when 1 then x.cut_${f} else -x.cut_${f} end as ${f}`).join(", ")} from (
  select width_bucket(t.day, ?::timestamptz[]) - 1 as idx, ${value("t.value")}, ${FIGURES.map((f) => `t.${f}, ${cut(f)} as cut_${f}`).join(", ")}, f.j
    from ${daysSql(true)} t
    cross join lateral (select case when t.closed then (?::int[])[k] end as j, (?::int[])[k] as sgn, (?::int[])[k] as lo, (?::int[])[k] as hi
       from (select (t.day at time zone 'UTC')::date - (?::timestamptz at time zone 'UTC')::date + 1 as k) d offset 0) f
   offset 0) x
    -- The day row whole (k = 0) and, when its day is closed and corrected, its cut twice (k = 1, 2).
    cross join (values (0), (1), (2)) as s(k) where s.k = 0 or x.j is not null`,
    hour: `
  select width_bucket(t.hour, ?::timestamptz[]) - 1 as bucket, ${value("t.value")}, ${FIGURES.map((f) => `t.${f}`).join(", ")}
    from usage_hourly t where t.account_id = ? and t.dim = ? and t.hour >= ? and t.hour < ?`,
  }[shape];
  return `
  select string_agg(concat_ws(',', y.bucket, ${FIGURES.map((f) => `y.${f}`).join(", ")}), ';') as figures, json_agg(y.value)::text as values from (
  select b.bucket, b.value, ${FIGURES.map((f) => `sum(b.${f})::bigint as ${f}`).join(", ")} from (${top}
  union all
  select ${both} from (
  select c.j, ${value("h.value")}, ${FIGURES.map((f) => `c.sgn * ${hourShare(f)} as ${f}`).join(", ")}
    from unnest(?::timestamptz[], ?::timestamptz[], ?::timestamptz[], ?::int[], ?::int[]) as c(first_hour, lo, hi, j, sgn)
    cross join lateral (select * from usage_hourly h where h.account_id = ? and h.dim = ? and h.hour >= c.first_hour and h.hour < c.hi offset 0) h${
      // A DAY series' corrections are read from the hours only in the open days (a closed day's row cuts them).
      shape === "day_cut" ? `
   where c.hi > ${OPEN_FROM}` : ""}
  offset 0) x ${pair}
  union all
  select ${both} from (
  select c.j, ${value("(case ?::text when 'model' then r.model when 'kind' then r.kind when 'member' then r.member_id else r.caller end)")}, ${FIGURES.map((f) => `c.sgn * r.${f} as ${f}`).join(", ")}
    from unnest(?::timestamptz[], ?::timestamptz[], ?::int[], ?::int[]) as c(lo, hi, j, sgn)
    cross join lateral (select * from usage_rollup r where r.account_id = ? and r.slot >= c.lo and r.slot < c.hi offset 0) r
  offset 0) x ${pair}
  ) b
   where b.bucket >= 0 and b.bucket < ?
   group by 1, 2
  having ${FIGURES.map((f) => `sum(b.${f}) <> 0`).join(" or ")}) y`;
}
const LEVELED: Readonly<Record<LeveledShape, string>> = { day: leveledStatement("day"), day_cut: leveledStatement("day_cut"), hour: leveledStatement("hour") };

function rangeColumns(ranges: readonly SignedRange[]): [Date[], Date[], number[], number[]] {
  return [ranges.map((r) => r.from), ranges.map((r) => r.to), ranges.map((r) => r.boundary), ranges.map((r) => r.sign)];
}

const DAY_MS = 86_400_000;

/**
 * The top scan's parameters for a day-topped plan: the days it reads (the top's range, widened to
 * the corrected days) and, per day of that range, its correction (boundary, sign, half hours) or nulls.
 */
function dayScan(plan: LevelPlan): { from: Date; to: Date; j: (number | null)[]; sgn: (number | null)[]; lo: (number | null)[]; hi: (number | null)[] } {
  const top = plan.topBounds;
  const days = plan.days.map((r) => dayOf(r.from).getTime());
  const from = Math.min(top[0]!.getTime(), ...days);
  const to = Math.max(top[top.length - 1]!.getTime(), ...days.map((d) => d + DAY_MS));
  const n = Math.round((to - from) / DAY_MS);
  const j: (number | null)[] = new Array<number | null>(n).fill(null);
  const sgn = j.slice();
  const lo = j.slice();
  const hi = j.slice();
  plan.days.forEach((r, i) => {
    const k = Math.round((days[i]! - from) / DAY_MS);
    if (j[k] !== null) throw new Error(`two corrections of the UTC day ${new Date(days[i]!).toISOString()}: a day-topped plan corrects a day at most once`);
    const day = new Date(days[i]!);
    j[k] = r.boundary;
    sgn[k] = r.sign;
    lo[k] = markOf(day, r.from);
    hi[k] = markOf(day, r.to);
  });
  return { from: new Date(from), to: new Date(to), j, sgn, lo, hi };
}

export async function leveledSeries(q: Query, accountId: string, plan: LevelPlan, dim: UsageDimension | null): Promise<UsageSeriesRow[]> {
  const grouped = dim !== null;
  const levelDim = dim ?? "kind";
  const top = plan.topBounds;
  const shape: LeveledShape = plan.top === "hour" ? "hour" : plan.days.length > 0 ? "day_cut" : "day";
  const params: unknown[] = [];
  if (shape === "day_cut") {
    const scan = dayScan(plan);
    params.push(top, grouped, ...daysParams(accountId, levelDim, scan.from, scan.to), scan.j, scan.sgn, scan.lo, scan.hi, scan.from);
  } else if (shape === "day") {
    params.push(top, grouped, ...daysParams(accountId, levelDim, top[0]!, top[top.length - 1]!));
  } else {
    params.push(top, grouped, accountId, levelDim, top[0], top[top.length - 1]);
  }
  // A day-topped plan's day ranges are also hour ranges (whole and half hours): the statement
  // reads them from the hours where their day is open.
  const hours = shape === "day_cut" ? [...plan.hours, ...plan.days] : plan.hours;
  params.push(grouped, hours.map((r) => hourOf(r.from)), ...rangeColumns(hours), accountId, levelDim, ...(shape === "day_cut" ? [accountId] : []));
  params.push(grouped, levelDim, ...rangeColumns(plan.slots), accountId, top.length - 1);
  const [row] = await q(LEVELED[shape], params, `usage_leveled_${shape}`);
  const figures = row?.["figures"] as string | null | undefined;
  if (!figures) return [];
  const values = JSON.parse(row!["values"] as string) as (string | null)[];
  // The order is the series' (sortSeries): by bucket, then value in code-unit order, whatever
  // the database's collation.
  const rows = readFigures(figures, values, dim);
  const valueOf = (r: UsageSeriesRow): string => (dim === null ? "" : (r.group[dim] ?? ""));
  return rows.sort((a, b) => a.bucket - b.bucket || (valueOf(a) < valueOf(b) ? -1 : valueOf(a) > valueOf(b) ? 1 : 0));
}
