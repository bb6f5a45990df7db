import { accountTime } from "../domain/clock.js";
import { fail, ok, type Result } from "../domain/errors.js";
import { type Forecast, forecast, PACE_WINDOW_DAYS, paceWindowDays } from "../domain/forecast.js";
import { applyDue } from "../domain/maintenance.js";
import { boundaries, type CalendarUnit } from "../domain/time-zone.js";
import { isZero, levelPlan, sortSeries, type UsageDimension, type UsageSeriesRow } from "../domain/usage.js";
import type { AppDeps } from "./deps.js";

/** How long a range each granularity may cover (in buckets: the range is widened to whole buckets). */
export const MAX_BUCKETS: Readonly<Record<CalendarUnit, number>> = { HOUR: 31 * 24 + 1, DAY: 400, MONTH: 37 };

/** The most rows one answer carries (about 150 bytes each): past it the caller narrows the range or the grouping. */
export const MAX_USAGE_ROWS = 10_000;

export interface UsageQuery {
  readonly accountId: string;
  readonly start: Date;
  readonly end: Date;
  readonly unit: CalendarUnit;
  readonly groupBy: ReadonlySet<UsageDimension>;
  readonly timeZone: string;
}

export interface UsageSeries {
  /** Each row's bucket starts at `bounds[row.bucket]`. */
  readonly rows: readonly UsageSeriesRow[];
  /** The buckets' boundaries in the time zone: bucket i is [bounds[i], bounds[i + 1]). */
  readonly bounds: readonly Date[];
  readonly asOf: Date;
}

/**
 * GetUsage: sums of the rollup, never the ledger. The bucket boundaries are computed here in the
 * time zone (domain/time-zone.ts), so a day is the zone's calendar day whatever its length.
 */
export async function getUsage(deps: AppDeps, query: UsageQuery): Promise<Result<UsageSeries>> {
  const bounds = boundaries(query.timeZone, query.unit, query.start, query.end, MAX_BUCKETS[query.unit]);
  if (!bounds) {
    return fail("INVALID_FIELD", `end_time: a ${query.unit} series covers at most ${MAX_BUCKETS[query.unit]} buckets (${rangeRule()})`, { field: "end_time" });
  }
  const now = deps.clock.now();
  // Grouped by one dimension or none: the daily (DAY, MONTH) or hourly (HOUR) level, corrected at
  // each boundary for the zone. Two or more dimensions: the slots, which hold every combination.
  // The series does not depend on the book (only its clock, for as_of, and that it exists): both
  // reads go side by side.
  const dim = query.groupBy.size <= 1 ? ([...query.groupBy][0] ?? null) : undefined;
  const series = async (): Promise<UsageSeriesRow[]> => {
    if (dim !== undefined) {
      const plan = levelPlan(bounds, query.unit === "HOUR" ? "hour" : "day");
      return deps.store.leveledUsageSeries(query.accountId, plan, dim);
    }
    return sortSeries((await deps.store.usageSeries(query.accountId, bounds, query.groupBy, MAX_USAGE_ROWS)).filter((r) => !isZero(r)));
  };
  const [read, rows] = await Promise.all([deps.store.readBook(query.accountId, now), series()]);
  if (!read) return fail("ACCOUNT_NOT_FOUND", `account ${query.accountId} not found`, { account_id: query.accountId });
  if (rows.length > MAX_USAGE_ROWS) {
    return fail("READ_LIMIT_EXCEEDED", `the series has more than ${MAX_USAGE_ROWS} rows: narrow the range or the grouping`, { limit: "rows", max: String(MAX_USAGE_ROWS) });
  }
  return ok({ rows, bounds, asOf: accountTime(read.book.clockOffsetMs, now) });
}

function rangeRule(): string {
  return "31 days of HOUR, 400 days of DAY, 37 months of MONTH";
}

/**
 * ForecastBalance: the lock-free book (due work settled in the read's own copy, not written), the
 * pace from the rollup, and the drain simulated in the domain (domain/forecast.ts).
 */
export async function forecastBalance(deps: AppDeps, accountId: string): Promise<Result<Forecast>> {
  const now = deps.clock.now();
  // The book and the pace are independent reads: side by side, one round trip of latency.
  const [read, recent] = await Promise.all([deps.store.readBook(accountId, now), deps.store.recentConsumption(accountId, now, PACE_WINDOW_DAYS)]);
  if (!read || !recent) return fail("ACCOUNT_NOT_FOUND", `account ${accountId} not found`, { account_id: accountId });
  const { book } = read;
  const at = accountTime(book.clockOffsetMs, now);
  applyDue(book, at, deps.newId);
  // The account's age by its own clock: created by server time, when its test clock (if it has one) had not moved yet.
  const days = paceWindowDays(at, recent.createdAt);
  return ok(forecast(book, at, recent.perDay, days));
}
