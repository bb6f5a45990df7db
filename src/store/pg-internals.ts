import { createRequire } from "node:module";
import type pg from "pg";
import { serialize } from "pg-protocol";
import type { Row } from "./rows.js";

/**
 * Every use of node-postgres' internals, in this one file: the pipeline (pg.ts) writes several
 * statements in one round trip, which node-postgres' public API cannot do. What is relied on —
 * test/integration/pg-internals.test.ts checks each and names the one an upgrade moved:
 *
 * - `pg/lib/query.js` exports the Query class. Its constructor takes `{ text, callback }`, and
 *   its reply handlers (handleRowDescription, handleDataRow, handleCommandComplete,
 *   handleReadyForQuery, handleError) collect one result per statement that completes; at
 *   ReadyForQuery the callback gets that result, or an array of them for several statements.
 * - `Query#submit(connection)`: the Client calls it with its Connection when the query's turn
 *   comes; a subclass overriding it writes its own messages. Returning null means "sent".
 * - `Connection#parsedStatements` (name → text of each statement prepared on that connection;
 *   node-postgres' own named queries consult it too) and `Connection#stream` (its socket).
 * - `Client#processID`: the backend pid of a connected client.
 * - pg-protocol's `serialize` (its public API; declared as our own dependency at the version pg
 *   resolves, so both write the same protocol).
 */

/** One statement on the wire: `$n` placeholders, values already mapped, a name ("" = unnamed). */
export interface WireStatement {
  readonly text: string;
  readonly name: string;
  readonly values: unknown[];
}

export interface PgResult {
  readonly rows: Row[];
}

/** The parts of node-postgres' connection a pipeline uses: its socket and its prepared statement names. */
export interface WireConnection {
  readonly parsedStatements: Record<string, string>;
  readonly stream: { write(data: Buffer): boolean };
}

type PipelineCallback = (err: Error | null, results: PgResult | PgResult[]) => void;

const require = createRequire(import.meta.url);
/** node-postgres' Query: its result handling splits the replies of several statements into one result each. */
export const PgQuery = require("pg/lib/query.js") as new (config: { text: string; callback: PipelineCallback }) => object;

/**
 * Several statements in ONE round trip: Parse/Bind/Describe/Execute for each, then a single Sync.
 * Postgres runs them in order, each with its own snapshot, and skips the rest after an error.
 */
class Pipeline extends PgQuery {
  constructor(
    private readonly statements: readonly WireStatement[],
    callback: PipelineCallback,
  ) {
    super({ text: "pipeline", callback });
  }

  submit(connection: WireConnection): null {
    const messages: Buffer[] = [];
    for (const s of this.statements) {
      if (!s.name || connection.parsedStatements[s.name] !== s.text) {
        messages.push(serialize.parse({ text: s.text, name: s.name }));
        // Marked at once, before Postgres confirms: after a failed pipeline the caller must discard
        // the connection (inTransaction does), as it may not hold every statement marked here.
        if (s.name) connection.parsedStatements[s.name] = s.text;
      }
      messages.push(serialize.bind({ statement: s.name, values: s.values }), serialize.describe({ type: "P", name: "" }), serialize.execute({ portal: "" }));
    }
    messages.push(serialize.sync());
    // One buffer, one write: a gathered write of many small buffers costs far more here.
    connection.stream.write(Buffer.concat(messages));
    return null;
  }
}

/** Sends the statements as one pipeline on the client; the callback gets the result of each, in order. */
export function submitPipeline(client: pg.PoolClient, statements: readonly WireStatement[], callback: PipelineCallback): void {
  const query = new Pipeline(statements, callback);
  // A submittable (an object with submit()) gets no promise back: its callback reports. Errors are
  // caught all the same, should a version return one.
  (client.query(query as unknown as pg.QueryConfig) as Promise<unknown> | undefined)?.catch?.((err: Error) => callback(err, []));
}

/** The backend pid of a connected client, or null before it has connected. */
export function backendPid(client: pg.ClientBase): number | null {
  return (client as unknown as { processID: number | null }).processID;
}
