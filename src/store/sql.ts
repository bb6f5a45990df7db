import type { EntityManager } from "@mikro-orm/postgresql";
import type { Row } from "./rows.js";

/** Runs one raw statement (knex `?` placeholders) on the EntityManager's connection and transaction. */
export type Query = (sql: string, params?: readonly unknown[]) => Promise<Row[]>;

export function queryOn(em: EntityManager): Query {
  const connection = em.getConnection();
  return (sql, params = []) =>
    connection.execute<Row[]>(sql, params.map(toParam), "all", em.getTransactionContext());
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
