import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TEST_DATABASE_URL } from "../support/env.js";

/**
 * The node-postgres internals src/store/pg-internals.ts relies on (listed in its header). After a
 * pg upgrade, this file says which one moved before the ledger's pipeline fails in obscure ways.
 */
const require = createRequire(import.meta.url);
const INTERNALS = "src/store/pg-internals.ts";

function packageOf(resolvedFile: string): { name: string; version: string } {
  let dir = path.dirname(resolvedFile);
  for (;;) {
    try {
      const json = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as { name?: string; version: string };
      if (json.name) return { name: json.name, version: json.version };
    } catch {
      // no package.json here: one level up
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${resolvedFile}`);
    dir = up;
  }
}

/**
 * Loaded only after the module paths were checked (pg.ts loads pg-internals.ts, which loads the
 * modules), so a moved module fails the first test with a clear message rather than this file's import.
 */
async function internals(): Promise<typeof import("../../src/store/pg-internals.js")> {
  return import("../../src/store/pg-internals.js");
}
async function pgStore(): Promise<typeof import("../../src/store/pg.js")> {
  return import("../../src/store/pg.js");
}

describe("node-postgres internals the pipeline relies on", () => {
  const pgVersion = packageOf(require.resolve("pg")).version;

  it("pg/lib/query.js resolves, and pg uses the same pg-protocol as the one package.json declares", () => {
    let queryModule: string | undefined;
    try {
      queryModule = require.resolve("pg/lib/query.js");
    } catch {
      // reported below
    }
    expect(queryModule, `pg ${pgVersion} has no pg/lib/query.js any more: ${INTERNALS} loads node-postgres' Query class from it`).toBeDefined();

    const ours = require.resolve("pg-protocol");
    const pgs = require.resolve("pg-protocol", { paths: [path.dirname(require.resolve("pg"))] });
    const declared = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { dependencies: Record<string, string> }).dependencies["pg-protocol"];
    expect(
      pgs,
      `pg ${pgVersion} uses pg-protocol ${packageOf(pgs).version} but package.json declares ${declared} (installed ${packageOf(ours).version}): ` +
        `set pg-protocol to the version pg depends on, so the pipeline writes the protocol pg reads`,
    ).toBe(ours);
    expect(packageOf(ours).version, "package.json's pg-protocol is not the installed one: run npm install").toBe(declared);
  });

  it("Query takes { text, callback } and has the reply handlers the pipeline inherits; pg-protocol serializes", async () => {
    const { PgQuery } = await internals();
    const { serialize } = await import("pg-protocol");
    const callback = () => {};
    const query = new PgQuery({ text: "probe", callback }) as Record<string, unknown>;
    expect(query["text"], `pg ${pgVersion}: Query's constructor no longer reads { text } (${INTERNALS})`).toBe("probe");
    expect(query["callback"], `pg ${pgVersion}: Query's constructor no longer reads { callback } (${INTERNALS})`).toBe(callback);
    for (const method of ["submit", "handleRowDescription", "handleDataRow", "handleCommandComplete", "handleReadyForQuery", "handleError"]) {
      expect(typeof query[method], `pg ${pgVersion}: Query#${method} is gone; ${INTERNALS}'s Pipeline relies on it`).toBe("function");
    }
    for (const message of ["parse", "bind", "describe", "execute", "sync"] as const) {
      expect(typeof serialize[message], `pg-protocol: serialize.${message} is gone (${INTERNALS})`).toBe("function");
    }
  });

  describe("on a live connection", () => {
    let pool: pg.Pool;
    let client: pg.PoolClient;
    let pipeline: Awaited<ReturnType<typeof pgStore>>["pipeline"];
    beforeAll(async () => {
      const store = await pgStore();
      pipeline = store.pipeline;
      pool = store.createPool({ url: TEST_DATABASE_URL, max: 1, onIdleError: () => {} });
      client = await pool.connect();
    });
    afterAll(async () => {
      client?.release(true); // prepared statements of this test are not handed on
      await pool?.end();
    });

    it("a client has processID, and submit(connection) gets a connection with parsedStatements and stream", async () => {
      const { PgQuery, backendPid } = await internals();
      const [{ pid }] = (await client.query<{ pid: number }>("select pg_backend_pid() as pid")).rows as [{ pid: number }];
      expect(backendPid(client), `pg ${pgVersion}: Client#processID is not the backend pid any more (${INTERNALS}'s backendPid)`).toBe(pid);

      // The same hook the pipeline overrides: the Client hands the query its Connection.
      let seen: Record<string, unknown> | undefined;
      class Probe extends PgQuery {
        submit(connection: Record<string, unknown>): unknown {
          seen = connection;
          return (PgQuery.prototype as { submit(c: unknown): unknown }).submit.call(this, connection);
        }
      }
      await new Promise<void>((resolve, reject) => {
        client.query(new Probe({ text: "select 1", callback: (err) => (err ? reject(err) : resolve()) }) as unknown as pg.QueryConfig);
      });
      expect(seen, `pg ${pgVersion}: the Client no longer calls Query#submit(connection) (${INTERNALS})`).toBeDefined();
      expect(typeof seen!["parsedStatements"], `pg ${pgVersion}: Connection#parsedStatements is gone (${INTERNALS})`).toBe("object");
      expect(typeof (seen!["stream"] as { write?: unknown } | undefined)?.write, `pg ${pgVersion}: Connection#stream is not a writable socket (${INTERNALS})`).toBe(
        "function",
      );

      // node-postgres' own named queries record themselves in parsedStatements: the pipeline shares that record.
      await client.query({ name: "internals_probe", text: "select $1::int + 1 as v", values: [1] });
      expect(
        (seen!["parsedStatements"] as Record<string, string>)["internals_probe"],
        `pg ${pgVersion}: a named query no longer records its text in Connection#parsedStatements (${INTERNALS})`,
      ).toBe("select $1::int + 1 as v");
    });

    it("a pipeline makes one round trip of several statements, and shares prepared statements with node-postgres' own queries", async () => {
      // Prepared above by node-postgres: the pipeline must not parse it again (Postgres would refuse a second Parse of the name).
      const named = { sql: "select ?::int + 1 as v", name: "internals_probe" };
      const results = await pipeline(client, [
        { sql: "begin" },
        { ...named, params: [41] },
        { sql: "select ?::text as a union all select ?::text", params: ["x", "y"] },
        { sql: "select ?::bigint as big", params: [9223372036854775807n] },
        { sql: "commit" },
      ]);
      expect(results, `pg ${pgVersion}: a pipelined round trip no longer returns each statement's rows in order (${INTERNALS})`).toEqual([
        [],
        [{ v: 42 }],
        [{ a: "x" }, { a: "y" }],
        [{ big: "9223372036854775807" }],
        [],
      ]);

      // Prepared by a pipeline, then used by node-postgres (which must see it as parsed) and by a pipeline again.
      const fresh = { sql: "select ?::int * 2 as v", name: "internals_pipeline_probe" };
      expect(await pipeline(client, [{ ...fresh, params: [2] }])).toEqual([[{ v: 4 }]]);
      expect((await client.query({ name: fresh.name, text: "select $1::int * 2 as v", values: [3] })).rows).toEqual([{ v: 6 }]);
      expect(await pipeline(client, [{ ...fresh, params: [5] }])).toEqual([[{ v: 10 }]]);
      const prepared = await client.query<{ name: string }>("select name from pg_prepared_statements where name like 'internals%' order by name");
      expect(prepared.rows.map((r) => r.name)).toEqual(["internals_pipeline_probe", "internals_probe"]);
    });
  });
});
