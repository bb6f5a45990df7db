import { describe, expect, it } from "vitest";
import type { UsageSeriesRow } from "../../src/domain/usage.js";
import { readFigures } from "../../src/store/usage-figures.js";
import { seededRandom, testSeed } from "../support/seeded-random.js";

/**
 * The leveled statement's text against the rows it stands for: random rows written as Postgres
 * writes them (concat_ws and string_agg) read back exactly, at the edges of a double's exact
 * range too (the seed is printed and can be replayed with USAGE_FIGURES_SEED).
 */
const SEED = testSeed("USAGE_FIGURES_SEED");


const FIGURES = ["consumed", "restored", "granted", "expired", "generations"] as const;

/** Around every power of ten up to int64's, and around 2^53 where a double stops being exact. */
const EDGES: readonly bigint[] = [
  0n,
  1n,
  9n,
  ...Array.from({ length: 18 }, (_, k) => 10n ** BigInt(k + 1)).flatMap((p) => [p - 1n, p, p + 1n]),
  2n ** 53n - 1n,
  2n ** 53n,
  2n ** 53n + 1n,
  2n ** 63n - 1n,
];

function text(rows: readonly UsageSeriesRow[]): string {
  return rows.map((r) => [r.bucket, ...FIGURES.map((f) => r[f])].join(",")).join(";");
}

describe("readFigures", () => {
  it(`reads back random rows, every figure's size and sign (seed ${SEED})`, () => {
    console.log(`usage figures seed: ${SEED} (replay with USAGE_FIGURES_SEED=${SEED})`);
    const next = seededRandom(SEED);
    const figure = (): bigint => {
      const edge = EDGES[Math.floor(next() * EDGES.length)]!;
      const sign = next() < 0.2 ? -1n : 1n;
      return next() < 0.5 ? sign * edge : sign * BigInt(Math.floor(next() * 1e6));
    };
    for (let round = 0; round < 200; round++) {
      const values = ["flux-pro", "sdxl", "veo-3", null];
      const rows: UsageSeriesRow[] = Array.from({ length: 1 + Math.floor(next() * 30) }, (_, i) => ({
        bucket: Math.floor(next() * 400),
        group: { model: values[i % values.length] ?? "" },
        consumed: figure(),
        restored: figure(),
        granted: figure(),
        expired: figure(),
        generations: figure(),
      }));
      const read = readFigures(text(rows), rows.map((_, i) => values[i % values.length]!), "model");
      expect(read).toEqual(rows);
    }
  });

  it("gives every row of one value the same group object, and rows without a dimension an empty group", () => {
    const read = readFigures("0,1,0,0,0,1;0,2,0,0,0,1;1,3,0,0,0,1", ["sdxl", "veo-3", "sdxl"], "model");
    expect(read[0]!.group).toBe(read[2]!.group);
    expect(read[1]!.group).toEqual({ model: "veo-3" });
    expect(readFigures("4,5,6,7,8,9", [null], null)).toEqual([{ bucket: 4, group: {}, consumed: 5n, restored: 6n, granted: 7n, expired: 8n, generations: 9n }]);
  });

  it("refuses a field that is empty or not an integer", () => {
    expect(() => readFigures("0,1,,0,0,1", ["sdxl"], "model")).toThrow(/empty field/);
    expect(() => readFigures("0,1,2.5,0,0,1", ["sdxl"], "model")).toThrow(/"2.5" is not an integer/);
    expect(() => readFigures("0,1,2,3", ["sdxl"], "model")).toThrow(/cut short/);
  });
});
