import pg from "pg";
import { describe, expect, it } from "vitest";
import { openDatabase } from "../../src/store/database.js";
import { ormQuery } from "../../src/store/sql.js";
import { TEST_DATABASE_URL } from "../support/env.js";

/** The ORM's own pool (plans, rate cards): its connection failures are reported, not fatal, and its statements reach Postgres. */
describe("the ORM's pool", () => {
  it("reports an idle connection that Postgres ended through onDriverWarning, and serves the next statement", async () => {
    const warnings: string[] = [];
    const orm = await openDatabase({ url: TEST_DATABASE_URL, poolMax: 1, migrate: false, onDriverWarning: (m) => warnings.push(m) });
    try {
      const q = ormQuery(orm.em.fork());
      const [{ pid }] = (await q("select pg_backend_pid() as pid")) as [{ pid: number }];
      const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await admin.connect();
      try {
        await admin.query("select pg_terminate_backend($1)", [pid]);
      } finally {
        await admin.end();
      }
      await expect.poll(() => warnings.join("\n"), { timeout: 10_000 }).toMatch(/terminat/i);
      // A new connection serves the next statement, with bind parameters.
      const rows = await ormQuery(orm.em.fork())("select ?::bigint + 1 as n, pg_backend_pid() <> ? as fresh", [9007199254740993n, pid]);
      expect(rows).toEqual([{ n: "9007199254740994", fresh: true }]);
    } finally {
      await orm.close(true);
    }
  });

  it("runs a transaction's statements on the transaction's connection", async () => {
    const orm = await openDatabase({ url: TEST_DATABASE_URL, poolMax: 2, migrate: false });
    try {
      const seen = await orm.em.fork().transactional(async (em) => {
        const q = ormQuery(em);
        await q("create temporary table orm_tx_probe (n int) on commit drop");
        await q("insert into orm_tx_probe values (?)", [7]);
        return q("select n, txid_current_if_assigned() is not null as in_tx from orm_tx_probe");
      });
      expect(seen).toEqual([{ n: 7, in_tx: true }]);
    } finally {
      await orm.close(true);
    }
  });
});
