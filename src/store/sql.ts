import type { EntityManager } from "@mikro-orm/postgresql";
import { CompiledQuery } from "kysely";
import { type Query, toPositional } from "./pg.js";
import { toParam } from "./pg-params.js";
import type { Row } from "./rows.js";

export type { Query } from "./pg.js";

/**
 * Raw statements of the ORM-side stores (plans, rate cards) go through the ORM's Kysely instance
 * (bound to the EntityManager's transaction, if any) rather than `em.execute`, which inlines
 * parameters into the SQL text: here they travel as bind parameters ($1, $2 …), so no value is
 * ever parsed as SQL.
 */
export function ormQuery(em: EntityManager): Query {
  const kysely = em.getKysely();
  return async (sql, params = []) => {
    const result = await kysely.executeQuery<Row>(CompiledQuery.raw(toPositional(sql), params.map(toParam)));
    return result.rows as Row[];
  };
}
