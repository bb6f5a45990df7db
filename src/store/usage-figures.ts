import type { UsageDimension, UsageSeriesRow } from "../domain/usage.js";

/**
 * The leveled statement's answer, "bucket,consumed,restored,granted,expired,generations;…" (one
 * row per bucket and value, integers in decimal), read in one pass. Splitting it made a string
 * for every field and an array for every row: about half of what a 90-day GetUsage call
 * allocated (docs/performance-log.md), and the server's scavenges come with what it allocates.
 */
export function readFigures(text: string, values: readonly (string | null)[], dim: UsageDimension | null): UsageSeriesRow[] {
  const rows: UsageSeriesRow[] = [];
  // One group object per value, shared by its rows.
  const groups = new Map<string, UsageSeriesRow["group"]>();
  const reader = new FigureReader(text);
  while (reader.more()) {
    const bucket = Number(reader.integer(","));
    const consumed = reader.integer(",");
    const restored = reader.integer(",");
    const granted = reader.integer(",");
    const expired = reader.integer(",");
    const generations = reader.integer(";");
    const value = values[rows.length] ?? "";
    let group = groups.get(value);
    if (!group) groups.set(value, (group = dim === null ? {} : { [dim]: value }));
    rows.push({ bucket, group, consumed, restored, granted, expired, generations });
  }
  return rows;
}

/** A decimal of at most this many digits is exact as a double (2^53 has 16). */
const EXACT_DIGITS = 15;
const MINUS = 45;
const ZERO_CHAR = 48;

class FigureReader {
  private at = 0;

  constructor(private readonly text: string) {}

  more(): boolean {
    return this.at < this.text.length;
  }

  /** The integer from here to `end` (or the text's end), which it steps past. */
  integer(end: string): bigint {
    const { text } = this;
    const start = this.at;
    if (start >= text.length) throw new Error(`usage figures: a row cut short at ${start}`);
    const stop = text.indexOf(end, start);
    const to = stop < 0 ? text.length : stop;
    this.at = to + 1;
    const negative = text.charCodeAt(start) === MINUS;
    const first = negative ? start + 1 : start;
    if (to === first) throw new Error(`usage figures: an empty field at ${start}`);
    // Long figures go through BigInt's own parser; short ones are summed as a double, exactly.
    if (to - first > EXACT_DIGITS) return BigInt(text.slice(start, to));
    let n = 0;
    for (let i = first; i < to; i++) {
      const digit = text.charCodeAt(i) - ZERO_CHAR;
      if (digit < 0 || digit > 9) throw new Error(`usage figures: "${text.slice(start, to)}" is not an integer`);
      n = n * 10 + digit;
    }
    // Most figures of a day are 0 (nothing granted, nothing expired): one shared 0n, no allocation.
    return n === 0 ? 0n : BigInt(negative ? -n : n);
  }
}
