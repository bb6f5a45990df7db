import pg from "pg";
import { openDatabase } from "../../src/store/database.js";
import { TEST_DATABASE_URL } from "./env.js";

/** A fresh test database for every run: dropped, created and migrated by the real migrations. */
export default async function setup(): Promise<void> {
  const admin = new URL(TEST_DATABASE_URL);
  const name = admin.pathname.slice(1);
  admin.pathname = "/postgres";
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  await client.query(`drop database if exists "${name}" with (force)`);
  await client.end();
  const orm = await openDatabase({ url: TEST_DATABASE_URL, poolMax: 2, migrate: true });
  await orm.close(true);
}
