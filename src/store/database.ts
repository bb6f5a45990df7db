import { MikroORM, PostgreSqlDriver } from "@mikro-orm/postgresql";
import pg from "pg";
import { entities } from "./schema.js";

export interface DatabaseOptions {
  readonly url: string;
  readonly poolMax: number;
  /** Create the database if missing and apply pending migrations. */
  readonly migrate: boolean;
  /** Where the database driver's own warnings go (instead of the console). */
  readonly onDriverWarning?: (message: string) => void;
}

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

/**
 * Applies pending migrations, one server at a time (an advisory lock). The migrator and the
 * migrations are loaded only here, on demand: a server started with DB_MIGRATE=false (migrations
 * run beforehand by `npm run migrate`) never loads them, which keeps tens of MB out of its memory.
 */
export async function migrate(url: string): Promise<void> {
  await ensureDatabase(url);
  const [{ Migrator }, { migrations }] = await Promise.all([import("@mikro-orm/migrations"), import("./migrations/index.js")]);
  const orm = await MikroORM.init({
    driver: PostgreSqlDriver,
    clientUrl: url,
    entities,
    extensions: [Migrator],
    pool: { min: 0, max: 1 },
    migrations: { migrationsList: migrations, transactional: true, allOrNothing: true, snapshot: false, silent: true },
    allowGlobalContext: false,
    debug: false,
  });
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK]);
    await orm.migrator.up();
  } finally {
    await client.end(); // ends the session, which releases the lock
    await orm.close(true);
  }
}

export async function openDatabase(options: DatabaseOptions): Promise<MikroORM> {
  if (options.migrate) await migrate(options.url);
  return MikroORM.init({
    driver: PostgreSqlDriver,
    clientUrl: options.url,
    entities,
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
    allowGlobalContext: false,
    debug: false,
  });
}
