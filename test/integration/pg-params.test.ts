import fc from "fast-check";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toParam } from "../../src/store/pg-params.js";
import { createPool, pipeline } from "../../src/store/pg.js";
import { TEST_DATABASE_URL } from "../support/env.js";

/**
 * The ledger's pipeline writes array parameters as literals of its own (src/store/pg-params.ts).
 * Postgres must read each one as the same value node-postgres' own literal gives: both go through
 * the same cast, and the rows that come back must be equal.
 */
let pool: pg.Pool;
let client: pg.PoolClient;
beforeAll(async () => {
  pool = createPool({ url: TEST_DATABASE_URL, max: 1, onIdleError: () => {} });
  client = await pool.connect();
});
afterAll(async () => {
  client.release();
  await pool.end();
});

type ArrayType = "text[]" | "uuid[]" | "bigint[]" | "int[]" | "timestamptz[]" | "bytea[]" | "jsonb[]" | "text[][]";

/** The value as Postgres reads it from our literal and from node-postgres' literal. */
async function bothWays(type: ArrayType, values: readonly unknown[]): Promise<[unknown, unknown]> {
  const ours = (await pipeline(client, [{ sql: `select ?::${type} as v`, params: [values] }]))[0]![0];
  const theirs = await client.query<{ v: unknown }>(`select $1::${type} as v`, [toParam(values)]);
  return [ours!["v"], theirs.rows[0]!.v];
}

describe("array parameters in the pipeline", () => {
  it("reads back as node-postgres' literals do, for every kind of element the ledger sends", async () => {
    const cases: [ArrayType, unknown[]][] = [
      ["text[]", ["plain", "", "NULL", "null", 'a "quoted" word', "back\\slash", "comma,brace{}", " spaced ", "ünï©ødé ✓", "\\\"", null]],
      ["uuid[]", ["3cddf8b6-2bce-4146-86bf-d31b204de1b2", null, "00000000-0000-0000-0000-000000000000"]],
      ["bigint[]", [0n, -1n, 9223372036854775807n, -9223372036854775808n, null]],
      ["int[]", [0, -5, 2147483647, null]],
      ["timestamptz[]", [new Date("2026-12-01T03:06:17.123Z"), new Date(0), new Date("0001-01-01T00:00:00.000Z"), new Date("9999-12-31T23:59:59.999Z"), null]],
      ["bytea[]", [Buffer.from([0, 1, 2, 255]), Buffer.alloc(0), new Uint8Array([10, 92, 34]), null]],
      ["jsonb[]", [JSON.stringify({ a: 'x"y', b: "c\\d", n: [1, 2] }), "{}", "[]", null]],
      ["text[][]", [["a", "b"], ["c,d", 'e"f']]],
      ["text[]", []],
    ];
    for (const [type, values] of cases) {
      const [ours, theirs] = await bothWays(type, values);
      expect(ours, `${type} ${JSON.stringify(values, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v))}`).toEqual(theirs);
    }
  });

  it("reads back any text, bigint and timestamp arrays as node-postgres' literals do", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.option(fc.string({ unit: "grapheme" }).filter((s) => !s.includes("\u0000")))),
        fc.array(fc.option(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }))),
        fc.array(fc.option(fc.date({ min: new Date("0001-01-01T00:00:00Z"), max: new Date("9999-12-31T23:59:59Z"), noInvalidDate: true }))),
        async (texts, bigints, dates) => {
          for (const [type, values] of [["text[]", texts], ["bigint[]", bigints], ["timestamptz[]", dates]] as const) {
            const [ours, theirs] = await bothWays(type, values);
            expect(ours).toEqual(theirs);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
