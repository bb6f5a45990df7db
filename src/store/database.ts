import { Migrator } from "@mikro-orm/migrations";
import { MikroORM, PostgreSqlDriver } from "@mikro-orm/postgresql";
import pg from "pg";
import { Migration20261125000000Initial } from "./migrations/Migration20261125000000Initial.js";
import { Migration20261125100000Plans } from "./migrations/Migration20261125100000Plans.js";
import { Migration20261125200000Pricing } from "./migrations/Migration20261125200000Pricing.js";
import { Migration20261125300000HotPathIndexes } from "./migrations/Migration20261125300000HotPathIndexes.js";
import { entities } from "./schema.js";

export interface DatabaseOptions {
  readonly url: string;
  readonly poolMax: number;
  /** Create the database if missing and apply pending migrations. */
  readonly migrate: boolean;
  /** Where the database driver's own warnings go (instead of the console). */
  readonly onDriverWarning?: (message: string) => void;
}

/** Checked-in migrations, in order. Listed explicitly so they run the same from src/ (tsx) and dist/. */
export const migrations = [
  { name: "Migration20261125000000Initial", class: Migration20261125000000Initial },
  { name: "Migration20261125100000Plans", class: Migration20261125100000Plans },
  { name: "Migration20261125200000Pricing", class: Migration20261125200000Pricing },
  { name: "Migration20261125300000HotPathIndexes", class: Migration20261125300000HotPathIndexes },
];

/** An arbitrary constant: the advisory lock that serializes migrations of several starting servers. */
const MIGRATION_LOCK = 7_242_615_001;

function databaseName(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ""));
  if (!name) throw new Error("DATABASE_URL must name a database");
  return name;
}

/** Creates the database named by the URL if it does not exist (connecting to `postgres` to do so). */
export async function ensureDatabase(url: string): Promise<void> {
  const name = databaseName(url);
  const admin = new URL(url);
  admin.pathname = "/postgres";
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    const found = await client.query("select 1 from pg_database where datname = $1", [name]);
    if (found.rowCount === 0) {
      await client.query(`create database "${name.replaceAll('"', '""')}"`).catch((err: { code?: string }) => {
        if (err.code !== "42P04") throw err; // created meanwhile by another server
      });
    }
  } finally {
    await client.end();
  }
}

async function withMigrationLock(url: string, work: () => Promise<void>): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK]);
    await work();
  } finally {
    await client.end(); // ends the session, which releases the lock
  }
}

export async function openDatabase(options: DatabaseOptions): Promise<MikroORM> {
  if (options.migrate) await ensureDatabase(options.url);
  const orm = await MikroORM.init({
    driver: PostgreSqlDriver,
    clientUrl: options.url,
    entities,
    extensions: [Migrator],
    pool: { min: 0, max: options.poolMax },
    // Give up on an unreachable database within seconds, so calls fail as UNAVAILABLE instead of hanging.
    driverOptions: {
      acquireConnectionTimeout: 5000,
      connection: { connectionTimeoutMillis: 3000 },
      log: {
        warn: (message: string) => options.onDriverWarning?.(String(message)),
        error: (message: string) => options.onDriverWarning?.(String(message)),
        deprecate: () => {},
        debug: () => {},
      },
    },
    migrations: { migrationsList: migrations, transactional: true, allOrNothing: true, snapshot: false, silent: true },
    allowGlobalContext: false,
    debug: false,
  });
  if (options.migrate) await withMigrationLock(options.url, async () => void (await orm.migrator.up()));
  return orm;
}
