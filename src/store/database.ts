/**
 * The ORM side of the store. Postgres is reached two ways, on two pools, by design
 * (docs/architecture.md):
 * - MikroORM (this file, schema.ts, migrations/, sql.ts's ormQuery): the schema and its
 *   migrations, and the admin and read side — plans (plan-store.ts), rate cards
 *   (rate-card-store.ts), the ledger listing (entry-listing.ts) — where a call is one or two
 *   statements and clarity matters more than round trips;
 * - node-postgres with a pipeline (pg.ts, pg-internals.ts): the ledger's hot path (ledger-store.ts,
 *   batching.ts, command-batch.ts, account-loader.ts, persist.ts), two round trips per batch of
 *   commands with fixed prepared statements, and Reconcile on a connection of its own.
 */
import { type Logger, MikroORM, type Options, PostgreSqlDriver } from "@mikro-orm/postgresql";
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
 * The ORM's own warnings (a pooled connection that failed, a rollback that failed) go where the
 * caller says; everything else it would log (queries, discovery, deprecations) is dropped.
 */
function driverLogger(onWarning: ((message: string) => void) | undefined): Logger {
  const report = (namespace: string, message: string) => {
    if (namespace !== "deprecated") onWarning?.(message);
  };
  return {
    log: () => {},
    logQuery: () => {},
    warn: report,
    error: report,
    setDebugMode: () => {},
    isEnabled: () => false,
  };
}

/**
 * The ORM on its own pool. Built with the constructor rather than `MikroORM.init`, which imports
 * every ORM extension installed (the migrator among them) whether it is used or not.
 */
function createOrm(options: { url: string; poolMax: number; onDriverWarning?: (message: string) => void }, extra: Pick<Options, "extensions" | "migrations"> = {}): MikroORM {
  return new MikroORM({
    driver: PostgreSqlDriver,
    clientUrl: options.url,
    entities,
    pool: { min: 0, max: options.poolMax },
    // Options of node-postgres' Pool. Give up on an unreachable database (or a pool that stays
    // busy) within seconds, so calls fail as UNAVAILABLE instead of hanging. node-postgres' own
    // type parsers, not the ORM's: the ORM keeps timestamps as text (it converts them for
    // entities), but this side only runs raw statements, which read rows like the hot path's
    // pool does (timestamptz as Date, int8 as text), so rows.ts has one reading of each column.
    driverOptions: { connectionTimeoutMillis: 3000, types: new pg.TypeOverrides() },
    loggerFactory: () => driverLogger(options.onDriverWarning),
    allowGlobalContext: false,
    debug: false,
    ...extra,
  });
}

/**
 * Applies pending migrations, one server at a time (an advisory lock). The migrator and the
 * migrations are loaded only here, on demand: a server started with DB_MIGRATE=false (migrations
 * run beforehand by `npm run migrate`) never loads them.
 */
export async function migrate(url: string): Promise<void> {
  await ensureDatabase(url);
  const [{ Migrator }, { migrations }] = await Promise.all([import("@mikro-orm/migrations"), import("./migrations/index.js")]);
  const orm = createOrm(
    { url, poolMax: 1 },
    {
      extensions: [Migrator],
      migrations: { migrationsList: migrations, transactional: true, allOrNothing: true, snapshot: false, silent: true },
    },
  );
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
  return createOrm(options);
}
