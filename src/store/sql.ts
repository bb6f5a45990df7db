import type { EntityManager } from "@mikro-orm/postgresql";
import type { Row } from "./rows.js";

/** Runs one raw statement (knex `?` placeholders) on the EntityManager's connection and transaction. */
export type Query = (sql: string, params?: readonly unknown[]) => Promise<Row[]>;

/**
 * Raw statements go through the ORM's knex instance rather than `connection.execute`, which
 * inlines parameters into the SQL text: here they travel as bind parameters ($1, $2 …), so no
 * value is ever parsed as SQL and Postgres can reuse plans.
 */
export function queryOn(em: EntityManager): Query {
  const knex = em.getKnex();
  const trx = em.getTransactionContext();
  return async (sql, params = []) => {
    const query = knex.raw(sql, params.map(toParam) as Parameters<typeof knex.raw>[1] & unknown[]);
    if (trx) query.transacting(trx);
    const result = (await query) as { rows: Row[] };
    return result.rows;
  };
}

/** node-postgres does not serialize bigint; send it as text, Postgres casts it to bigint. */
function toParam(value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/** `(?, ?, ?), (?, ?, ?)` for a multi-row VALUES list. */
export function valuesList(rows: number, columns: number, casts: readonly string[] = []): string {
  const one = `(${Array.from({ length: columns }, (_, i) => `?${casts[i] ?? ""}`).join(", ")})`;
  return Array.from({ length: rows }, () => one).join(", ");
}
