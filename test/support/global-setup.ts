import pg from "pg";
import { openDatabase } from "../../src/store/database.js";
import { runDatabaseUrl } from "./env.js";

async function dropDatabase(url: string): Promise<void> {
  const admin = new URL(url);
  const name = decodeURIComponent(admin.pathname.slice(1));
  admin.pathname = "/postgres";
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  await client.query(`drop database if exists "${name}" with (force)`);
  await client.end();
}

/**
 * A fresh database for this run, created and migrated by the real migrations, and dropped at
 * the end. Its URL reaches the test workers through TEST_DATABASE_URL.
 */
export default async function setup(): Promise<() => Promise<void>> {
  const url = runDatabaseUrl(String(process.pid));
  process.env["TEST_DATABASE_URL"] = url;
  await dropDatabase(url);
  const orm = await openDatabase({ url, poolMax: 2, migrate: true });
  await orm.close(true);
  return () => dropDatabase(url);
}
