/**
 * Calendar boundaries in an IANA time zone (a day, a Monday-based week, a month), from the
 * runtime's own time-zone data (Intl). A boundary is the first instant of that local date: on a
 * day whose midnight a daylight-saving change skips (00:00 → 01:00), the day starts at 01:00; on
 * one whose midnight comes twice, at the first. Days are therefore 23, 24 or 25 hours long.
 */

const DAY_MS = 86_400_000;

/** A local calendar date (month 1–12). */
interface LocalDate {
  readonly year: number;
  readonly month: number;
  readonly day: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: zone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(zone, f);
  }
  return f;
}

/** True for a zone name this runtime knows ("UTC", "Europe/Paris"); checked at the edge. */
export function isTimeZone(zone: string): boolean {
  if (zone.length === 0 || zone.length > 64) return false;
  try {
    formatter(zone);
    return true;
  } catch {
    return false;
  }
}

/**
 * Wall clocks already computed, per zone and instant: series and limits ask for the same
 * boundaries (midnights, month starts) again and again, and each Intl lookup costs microseconds
 * (a 90-day series about 0.5 ms). Bounded (a few MB at most): a zone's map is dropped whole when
 * it fills, and every zone's when a new zone finds ZONES_CACHED there.
 */
const wallClocks = new Map<string, Map<number, number>>();
const WALL_CLOCKS_PER_ZONE = 5_000;
const ZONES_CACHED = 32;

/** The local wall-clock time of `ms` in `zone`, as if it were UTC (ms). */
function wallClock(zone: string, ms: number): number {
  let known = wallClocks.get(zone);
  const hit = known?.get(ms);
  if (hit !== undefined) return hit;
  const parts = formatter(zone).formatToParts(new Date(ms));
  const get = (type: Intl.DateTimeFormatPartTypes) => Number(parts.find((p) => p.type === type)!.value);
  const wall = Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second")) + (ms % 1000 + 1000) % 1000;
  if (!known || known.size >= WALL_CLOCKS_PER_ZONE) {
    if (!known && wallClocks.size >= ZONES_CACHED) wallClocks.clear();
    known = new Map();
    wallClocks.set(zone, known);
  }
  known.set(ms, wall);
  return wall;
}

function localDate(zone: string, ms: number): LocalDate {
  const wall = new Date(wallClock(zone, ms));
  return { year: wall.getUTCFullYear(), month: wall.getUTCMonth() + 1, day: wall.getUTCDate() };
}

function sameDate(a: LocalDate, b: LocalDate): boolean {
  return a.year === b.year && a.month === b.month && a.day === b.day;
}

/**
 * The first instant of a local date. Local midnight minus the zone's offset just before, or just
 * after, that midnight: the earlier candidate that still falls on the date (an offset change never
 * happens twice within a day).
 */
function startOfDate(zone: string, date: LocalDate): Date {
  // Date.UTC normalises day overflow (Jan 32 → Feb 1), so callers may step days freely.
  const midnight = Date.UTC(date.year, date.month - 1, date.day);
  const target = localDate("UTC", midnight);
  const candidates = [midnight - (wallClock(zone, midnight - DAY_MS) - (midnight - DAY_MS)), midnight - (wallClock(zone, midnight + DAY_MS) - (midnight + DAY_MS))].sort((a, b) => a - b);
  for (const c of candidates) if (sameDate(localDate(zone, c), target)) return new Date(c);
  return new Date(candidates[1]!);
}

export interface Span {
  readonly start: Date;
  readonly end: Date;
}

/** The local day containing `at`. */
export function dayOf(zone: string, at: Date): Span {
  const d = localDate(zone, at.getTime());
  return { start: startOfDate(zone, d), end: startOfDate(zone, { ...d, day: d.day + 1 }) };
}

/** The local week (Monday 00:00 to the next Monday) containing `at`. */
export function weekOf(zone: string, at: Date): Span {
  const d = localDate(zone, at.getTime());
  const weekday = new Date(Date.UTC(d.year, d.month - 1, d.day)).getUTCDay(); // 0 = Sunday
  const monday = d.day - ((weekday + 6) % 7);
  return { start: startOfDate(zone, { ...d, day: monday }), end: startOfDate(zone, { ...d, day: monday + 7 }) };
}

/** The local calendar month containing `at`. */
export function monthOf(zone: string, at: Date): Span {
  const d = localDate(zone, at.getTime());
  return { start: startOfDate(zone, { ...d, day: 1 }), end: startOfDate(zone, { year: d.year, month: d.month + 1, day: 1 }) };
}

export type CalendarUnit = "HOUR" | "DAY" | "MONTH";

const HOUR_MS = 3_600_000;

/** The start of the local clock hour containing `at` (its wall clock's minutes and seconds taken off). */
function hourStart(zone: string, ms: number): number {
  const wall = wallClock(zone, ms);
  return ms - (((wall % HOUR_MS) + HOUR_MS) % HOUR_MS);
}

/** The boundary after `b` (itself a boundary of `unit`). Most steps take one zone lookup: a fixed step, checked. */
function nextBoundary(zone: string, unit: CalendarUnit, b: number): number {
  switch (unit) {
    case "HOUR": {
      const c = b + HOUR_MS;
      if (wallClock(zone, c) % HOUR_MS === 0) return c;
      const h = hourStart(zone, c);
      return h > b ? h : c;
    }
    case "DAY": {
      const c = b + DAY_MS;
      if (wallClock(zone, c) % DAY_MS === 0) return c;
      return dayOf(zone, new Date(b)).end.getTime();
    }
    case "MONTH":
      return monthOf(zone, new Date(b)).end.getTime();
  }
}

/**
 * The boundaries of the `unit` buckets in `zone` that cover [start, end): the start of the
 * bucket containing `start`, each next one, and last the first boundary at or after `end`. null
 * when that is more than `max` buckets.
 */
export function boundaries(zone: string, unit: CalendarUnit, start: Date, end: Date, max: number): Date[] | null {
  let b = unit === "HOUR" ? hourStart(zone, start.getTime()) : unit === "DAY" ? dayOf(zone, start).start.getTime() : monthOf(zone, start).start.getTime();
  const out = [new Date(b)];
  while (b < end.getTime()) {
    if (out.length > max) return null;
    b = nextBoundary(zone, unit, b);
    out.push(new Date(b));
  }
  return out;
}
