import { writeFileSync } from "node:fs";
import path from "node:path";

export type Scale = "ci" | "full";

/** RELIABILITY_SCALE=ci (default, fits CI) or full (the sizes of issue 6). */
export const SCALE: Scale = process.env["RELIABILITY_SCALE"] === "full" ? "full" : "ci";

export function byScale<T>(ci: T, full: T): T {
  return SCALE === "full" ? full : ci;
}

export interface FigureRow {
  readonly scenario: string;
  readonly figure: string;
  readonly value: string;
  readonly target: string;
  readonly ok: boolean | null;
}

/**
 * Collects one scenario's figures. Figures are recorded before they are asserted, so a failing
 * run still prints (and the summary shows) the value that failed.
 */
export class Figures {
  private readonly rows: FigureRow[] = [];

  constructor(private readonly scenario: string) {}

  /** A figure with a target: `ok` is whether it met it. */
  check(figure: string, value: number | string, target: string, ok: boolean): void {
    this.push({ scenario: this.scenario, figure, value: String(value), target, ok });
  }

  /** A figure with no target (a measurement). */
  info(figure: string, value: number | string): void {
    this.push({ scenario: this.scenario, figure, value: String(value), target: "", ok: null });
  }

  private push(row: FigureRow): void {
    this.rows.push(row);
    console.log(`[${row.scenario}] ${row.figure}: ${row.value}${row.target ? ` (target ${row.target}: ${row.ok ? "ok" : "FAILED"})` : ""}`);
    this.flush();
  }

  private flush(): void {
    const dir = process.env["RELIABILITY_FIGURES_DIR"];
    if (!dir) return;
    writeFileSync(path.join(dir, `${this.scenario.replace(/[^a-z0-9]+/gi, "_")}.json`), JSON.stringify(this.rows));
  }
}

export function renderSummary(rows: readonly FigureRow[], scale: string, minutes: string): string {
  const lines = [
    `Reliability summary (RELIABILITY_SCALE=${scale}, ${minutes} min)`,
    "",
    "| scenario | figure | value | target | |",
    "|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.scenario} | ${r.figure} | ${r.value} | ${r.target} | ${r.ok === null ? "" : r.ok ? "ok" : "**FAILED**"} |`),
  ];
  return lines.join("\n");
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

export const ms = (v: number) => `${v.toFixed(0)} ms`;
