import type { EntityManager } from "@mikro-orm/postgresql";
import type { Query } from "./pg.js";
import { toParam } from "./pg-params.js";
import type { Row } from "./rows.js";

export type { Query } from "./pg.js";

/**
 * Raw statements of the ORM-side stores (plans, rate cards) go through the ORM's knex instance
 * rather than `connection.execute`, which inlines parameters into the SQL text: here they travel
 * as bind parameters ($1, $2 …), so no value is ever parsed as SQL.
 */
export function ormQuery(em: EntityManager): Query {
  const knex = em.getKnex();
  const trx = em.getTransactionContext();
  return async (sql, params = []) => {
    const query = knex.raw(sql, params.map(toParam) as Parameters<typeof knex.raw>[1] & unknown[]);
    if (trx) query.transacting(trx);
    const result = (await query) as { rows: Row[] };
    return result.rows;
  };
}
