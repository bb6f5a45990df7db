import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { renderSummary, type FigureRow } from "./report.js";

/**
 * Gives the scenario files a directory to drop their figures in, and prints one summary table of
 * all of them when the run ends (also written to RELIABILITY_SUMMARY_FILE when that is set).
 */
export default function setup(): () => void {
  const dir = mkdtempSync(path.join(tmpdir(), "credit-rel-figures-"));
  process.env["RELIABILITY_FIGURES_DIR"] = dir;
  const started = performance.now();
  return () => {
    const rows: FigureRow[] = [];
    for (const f of readdirSync(dir).sort()) rows.push(...(JSON.parse(readFileSync(path.join(dir, f), "utf8")) as FigureRow[]));
    const minutes = ((performance.now() - started) / 60_000).toFixed(1);
    const table = renderSummary(rows, process.env["RELIABILITY_SCALE"] ?? "ci", minutes);
    console.log(`\n${table}`);
    const out = process.env["RELIABILITY_SUMMARY_FILE"];
    if (out) writeFileSync(out, table);
    rmSync(dir, { recursive: true, force: true });
  };
}
