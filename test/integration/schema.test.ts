import type { MikroORM } from "@mikro-orm/postgresql";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { openDatabase } from "../../src/store/database.js";
import { migrations } from "../../src/store/migrations/index.js";
import { runDatabaseUrl, TEST_DATABASE_URL } from "../support/env.js";

let orm: MikroORM;
beforeAll(async () => {
  orm = await openDatabase({ url: TEST_DATABASE_URL, poolMax: 2, migrate: false });
});
afterAll(async () => {
  await orm.close(true);
});

describe("the migrated schema", () => {
  it("has exactly the columns the entity schemas declare, for every table", async () => {
    const conn = orm.em.getConnection();
    for (const meta of orm.getMetadata().getAll().values()) {
      const rows = await conn.execute<{ column_name: string }[]>(
        "select column_name from information_schema.columns where table_schema = 'public' and table_name = ?",
        [meta.tableName],
      );
      const inDb = rows.map((r) => r.column_name).sort();
      const declared = meta.props.flatMap((p) => p.fieldNames ?? []).sort();
      expect(inDb, meta.tableName).toEqual(declared);
    }
  });

  it("refuses to update or delete a ledger entry", async () => {
    const conn = orm.em.getConnection();
    await conn.execute("insert into accounts (account_id, created_at) values ('schema-append-only', now()) on conflict do nothing");
    await conn.execute(
      `insert into ledger_entries (account_id, kind, bucket_id, amount, caller, created_at)
       values ('schema-append-only', 'GRANT', gen_random_uuid(), 1, 'test', now())`,
    );
    await expect(conn.execute("update ledger_entries set amount = 2 where account_id = 'schema-append-only'")).rejects.toThrow(/append-only/);
    await expect(conn.execute("delete from ledger_entries where account_id = 'schema-append-only'")).rejects.toThrow(/append-only/);
  });

  it("applies migrations once even when asked again", async () => {
    const again = await openDatabase({ url: TEST_DATABASE_URL, poolMax: 1, migrate: true });
    // The migrator's own record (a server's ORM does not carry the migrator, so read its table).
    const executed = await again.em.getConnection().execute<{ name: string }[]>("select name from mikro_orm_migrations order by id");
    await again.close(true);
    expect(executed.map((m) => m.name)).toEqual(migrations.map((m) => m.name));
  });

  it("creates a database that does not exist yet and migrates it at start", async () => {
    const url = runDatabaseUrl(`fresh_${process.pid}`);
    const fresh = await openDatabase({ url, poolMax: 1, migrate: true });
    const tables = await fresh.em.getConnection().execute<{ table_name: string }[]>(
      "select table_name from information_schema.tables where table_schema = 'public' order by table_name",
    );
    await fresh.close(true);
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    await admin.query(`drop database "${new URL(url).pathname.slice(1)}" with (force)`);
    await admin.end();
    expect(tables.map((t) => t.table_name)).toEqual(
      expect.arrayContaining(["accounts", "buckets", "ledger_entries", "operations", "reservations"]),
    );
  });
});
