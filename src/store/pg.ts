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
}

export function createPool(options: PgPoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max,
    // Give up on an unreachable database within seconds, so calls fail as UNAVAILABLE instead of hanging.
    connectionTimeoutMillis: 3000,
    idleTimeoutMillis: 30_000,
    application_name: "credit-service",
    // Each prepared statement is planned once per connection, without its parameters (planning
    // load_books and persist_books for every batch cost Postgres about a third of its CPU per
    // cycle, measured). Such a plan may be made while a table is nearly empty and is kept however
    // the table grows, so nothing in it may depend on table sizes: every statement here reaches
    // its rows through an index by account or id, keys lead with the column that tells rows apart
    // (migration KeyOrder), and scans and joins that read a whole table are priced out, never
    // chosen where an index can do. test/integration/statement-plans.test.ts holds this.
    options: "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off",
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
 * Runs one statement with `?` placeholders; `name` makes it a prepared statement that each
 * connection parses and plans once (only for fixed statement texts: every name is kept per connection).
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


/** A Query on a pool (each statement on any free connection) or on one checked-out connection. */
export function queryOn(target: pg.Pool | pg.PoolClient): Query {
  return async (sql, params = [], name) => {
    const config: pg.QueryConfig = { text: toPositional(sql), values: params.map(toParam) };
    if (name) config.name = name;
    return (await target.query<Row>(config)).rows;
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

const BEGIN: Statement = { sql: "begin" };
const COMMIT: Statement = { sql: "commit" };

/**
 * Runs `work` in one READ COMMITTED transaction on one connection: BEGIN rides with the first
 * statements and COMMIT with the last. If work does not commit, its transaction is committed when
 * it returns; if it throws, rolled back. A connection whose pipeline failed is discarded rather
 * than returned to the pool (its prepared statements are no longer known for sure).
 */
export async function inTransaction<T>(pool: pg.Pool, work: (tx: Transaction) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let begun = false;
  let ended = false;
  let broken: Error | undefined;
  // A checked-out connection can fail while no statement is on it (Postgres shutting down between
  // two round trips): node-postgres then emits 'error', which with no listener would end the
  // process. Noted here instead: the next round trip fails, and the connection is discarded.
  const onError = (err: Error) => {
    broken ??= err;
  };
  client.on("error", onError);
  const send = async (statements: readonly Statement[], end: boolean): Promise<Row[][]> => {
    invariant(!ended, "the transaction has already ended");
    const head = begun ? [] : [BEGIN];
    begun = true;
    try {
      const rows = await pipeline(client, [...head, ...statements, ...(end ? [COMMIT] : [])]);
      ended = end;
      return rows.slice(head.length, head.length + statements.length);
    } catch (err) {
      broken = err as Error;
      throw err;
    }
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
    if (begun && !ended) {
      await client.query("rollback").catch((rollbackErr: Error) => {
        broken = rollbackErr;
      });
    }
    throw err;
  } finally {
    client.off("error", onError);
    client.release(broken);
  }
}
