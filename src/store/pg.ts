import pg from "pg";
import { invariant } from "../domain/errors.js";
import { toParam, wireValue } from "./pg-params.js";
import { backendPid, submitPipeline, type WireStatement } from "./pg-internals.js";
import type { Row } from "./rows.js";

/**
 * The ledger's own connection pool: node-postgres directly, without the ORM's unit of work or
 * query builder. The hot path is a handful of fixed statements per batch of commands, so the
 * ORM's per-statement machinery (query building, result mapping, transaction context) would
 * cost more than the statements themselves. MikroORM keeps migrations, plans and rate cards.
 */
export interface PgPoolOptions {
  readonly url: string;
  readonly max: number;
  /** Told about errors of idle connections (a restarted Postgres), which must not crash the process. */
  readonly onIdleError: (err: Error) => void;
  /** What pg_stat_activity shows for its connections; "credit-service" unless told. */
  readonly applicationName?: string;
}

export function createPool(options: PgPoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max,
    // Give up on an unreachable database within seconds, so calls fail as UNAVAILABLE instead of hanging.
    connectionTimeoutMillis: 3000,
    idleTimeoutMillis: 30_000,
    application_name: options.applicationName ?? "credit-service",
    // No planner settings here: the hot path sets its own per transaction (HOT_PATH_PLANNER), and
    // everything else (Reconcile, the sweeper's scans, pruning) is planned as Postgres sees fit.
  });
  pool.on("error", options.onIdleError);
  return pool;
}

/**
 * Whether a backend pid is one of the pool's connections right now (a pid is dropped when its
 * connection leaves the pool, before the operating system can give it to another backend).
 */
export function poolBackends(pool: pg.Pool): (pid: number) => boolean {
  const pids = new Set<number>();
  pool.on("connect", (client) => {
    const pid = backendPid(client);
    if (pid !== null) pids.add(pid);
  });
  pool.on("remove", (client) => {
    const pid = backendPid(client);
    if (pid !== null) pids.delete(pid);
  });
  return (pid) => pids.has(pid);
}

/** A connection of its own for LISTEN (a pooled one would be handed to other work). */
export function listenerClient(url: string): pg.Client {
  // TCP keepalive too: a connection the network dropped silently must not look alive for long.
  return new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: 3000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 1000,
    application_name: "credit-service-listener",
  });
}

/**
 * The planner settings of the hot path, set for one transaction (`set_config(…, true)` is `SET
 * LOCAL`) by a statement riding in its first round trip, before any prepared statement of it runs.
 *
 * Each prepared statement is planned once per connection, without its parameters (planning
 * load_books and persist_books for every batch cost Postgres about a third of its CPU per
 * cycle, measured). Such a plan may be made while a table is nearly empty and is kept however
 * the table grows, so nothing in it may depend on table sizes: every statement here reaches
 * its rows through an index by account or id, keys lead with the column that tells rows apart
 * (migration KeyOrder), and scans and joins that read a whole table are priced out, never
 * chosen where an index can do. test/integration/statement-plans.test.ts holds this.
 *
 * Every named statement runs under these settings (inTransaction's transactions, and queryOn's
 * named statements outside one): a generic plan is made under whatever settings are in force at
 * its first execution on a connection, and kept. Unnamed statements outside the hot path
 * (Reconcile, the sweeper's scans, pruning) are planned for their parameters under Postgres'
 * defaults. The settings end with their transaction, so a connection pooler has nothing to keep.
 */
export const HOT_PATH_PLANNER: Statement = {
  sql: `select set_config('plan_cache_mode', 'force_generic_plan', true), set_config('enable_seqscan', 'off', true),
    set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)`,
  name: "hot_path_planner",
};

/**
 * Runs one statement with `?` placeholders; `name` makes it a prepared statement that each
 * connection parses and plans once (only for fixed statement texts: every name is kept per
 * connection), planned and run under HOT_PATH_PLANNER (queryOn and inTransaction see to that;
 * inSnapshot takes no named statement).
 */
export type Query = (sql: string, params?: readonly unknown[], name?: string) => Promise<Row[]>;

const positional = new Map<string, string>();
const POSITIONAL_CACHE_MAX = 512;

/** `?` → `$1, $2 …` (our statements never contain a literal `?`), cached for repeated texts. */
export function toPositional(sql: string): string {
  let out = positional.get(sql);
  if (out === undefined) {
    let n = 0;
    out = sql.replace(/\?/g, () => `$${++n}`);
    if (positional.size >= POSITIONAL_CACHE_MAX) positional.clear();
    positional.set(sql, out);
  }
  return out;
}


/**
 * A Query on a pool, each statement on any free connection. A named one takes the hot path's
 * planner settings in the same round trip: outside BEGIN, the statements up to a Sync are one
 * implicit transaction, so the settings end with it.
 */
export function queryOn(pool: pg.Pool): Query {
  return async (sql, params = [], name) => {
    if (name) return (await onConnection(pool, ({ send }) => send([HOT_PATH_PLANNER, { sql, params, name }])))[1]!;
    return (await pool.query<Row>({ text: toPositional(sql), values: params.map(toParam) })).rows;
  };
}

/** One statement: `?` placeholders, and a `name` for fixed texts that each connection should prepare once. */
export interface Statement {
  readonly sql: string;
  readonly params?: readonly unknown[];
  readonly name?: string;
}

/**
 * Runs the statements in ONE round trip on the connection (written by src/store/pg-internals.ts);
 * the rows of each, in order. Postgres runs them in order, each with its own snapshot, and skips
 * the rest after an error. node-postgres sends one statement per round trip, and on a busy 2-core
 * machine every round trip costs a context switch each way; BEGIN + lock + load, or write +
 * COMMIT, need only one. If it fails, discard the connection (`release(err)`) rather than reuse it.
 */
export function pipeline(client: pg.PoolClient, statements: readonly Statement[]): Promise<Row[][]> {
  let wire: WireStatement[];
  try {
    // Values are mapped before anything is written, so a bad value fails the call, not the connection.
    wire = statements.map((s) => ({ text: toPositional(s.sql), name: s.name ?? "", values: (s.params ?? []).map(wireValue) }));
  } catch (err) {
    return Promise.reject(err as Error);
  }
  return new Promise((resolve, reject) => {
    submitPipeline(client, wire, (err, results) => {
      if (err) return reject(err);
      const all = Array.isArray(results) ? results : [results];
      resolve(statements.map((_, i) => all[i]?.rows ?? []));
    });
  });
}

/** A transaction on one connection, opened by its first round trip. */
export interface Transaction {
  /** One statement, one round trip. */
  readonly query: Query;
  /** Statements in one round trip; the rows of each. */
  run(statements: readonly Statement[]): Promise<Row[][]>;
  /** The last statements and COMMIT in one round trip. */
  commit(statements?: readonly Statement[]): Promise<Row[][]>;
}

const COMMIT: Statement = { sql: "commit" };

/** A write transaction of the hot path: READ COMMITTED, with the hot path's planner settings. */
const HOT_PATH_BEGIN: readonly Statement[] = [{ sql: "begin" }, HOT_PATH_PLANNER];
/**
 * A consistent read: one snapshot for every statement, no row lock possible (Postgres refuses
 * FOR UPDATE/SHARE in a read-only transaction), planned under Postgres' defaults.
 */
const SNAPSHOT_BEGIN: readonly Statement[] = [{ sql: "begin isolation level repeatable read, read only" }];

/** One checked-out connection: its pipelines, and what to do when it must not be reused. */
interface Connection {
  readonly client: pg.PoolClient;
  /** The statements in one round trip; if that fails, the connection is discarded, not reused. */
  send(statements: readonly Statement[]): Promise<Row[][]>;
  /** Marks the connection to be discarded when `work` ends. */
  broke(err: Error): void;
}

/**
 * Runs `work` on one checked-out connection. One whose pipeline failed is discarded rather than
 * returned to the pool: its prepared statements are no longer known for sure.
 */
async function onConnection<T>(pool: pg.Pool, work: (connection: Connection) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  // A checked-out connection can fail while no statement is on it (Postgres shutting down between
  // two round trips): node-postgres then emits 'error', which with no listener would end the
  // process. Noted here instead: the next round trip fails, and the connection is discarded.
  const broke = (err: Error) => {
    broken ??= err;
  };
  client.on("error", broke);
  const send = async (statements: readonly Statement[]) => {
    try {
      return await pipeline(client, statements);
    } catch (err) {
      broke(err as Error);
      throw err;
    }
  };
  try {
    return await work({ client, send, broke });
  } finally {
    client.off("error", broke);
    client.release(broken);
  }
}

/**
 * Runs `work` in one transaction on one connection, opened by `begin` riding with the first
 * statements, and COMMIT with the last. If work does not commit, its transaction is committed
 * when it returns; if it throws, rolled back. A connection whose pipeline failed is discarded.
 */
function transaction<T>(pool: pg.Pool, begin: readonly Statement[], work: (tx: Transaction) => Promise<T>): Promise<T> {
  // A prepared statement keeps the plan made at its first execution: only under the hot path's settings.
  const named = begin.includes(HOT_PATH_PLANNER);
  return onConnection(pool, async (connection) => {
    let begun = false;
    let ended = false;
    const send = async (statements: readonly Statement[], end: boolean): Promise<Row[][]> => {
      invariant(!ended, "the transaction has already ended");
      invariant(named || statements.every((s) => !s.name), "a named statement outside the hot path's planner settings");
      const head = begun ? [] : begin;
      begun = true;
      const rows = await connection.send([...head, ...statements, ...(end ? [COMMIT] : [])]);
      ended = end;
      return rows.slice(head.length, head.length + statements.length);
    };
    const tx: Transaction = {
      query: async (sql, params, name) => (await send([{ sql, params, name }], false))[0]!,
      run: (statements) => send(statements, false),
      commit: (statements = []) => send(statements, true),
    };
    try {
      const out = await work(tx);
      if (begun && !ended) await tx.commit();
      return out;
    } catch (err) {
      if (begun && !ended) await connection.client.query("rollback").catch(connection.broke);
      throw err;
    }
  });
}

/**
 * Runs `work` in one READ COMMITTED transaction of the hot path (its planner settings,
 * HOT_PATH_PLANNER, ride with BEGIN). See `transaction` for commit, rollback and failure.
 */
export function inTransaction<T>(pool: pg.Pool, work: (tx: Transaction) => Promise<T>): Promise<T> {
  return transaction(pool, HOT_PATH_BEGIN, work);
}

/**
 * Runs `work` in one REPEATABLE READ, READ ONLY transaction: every statement sees the same
 * snapshot, and nothing is locked beyond what reading takes (no row lock, no lock a writer
 * waits for). For long consistent reads such as Reconcile; planned under Postgres' defaults.
 */
export function inSnapshot<T>(pool: pg.Pool, work: (tx: Transaction) => Promise<T>): Promise<T> {
  return transaction(pool, SNAPSHOT_BEGIN, work);
}
