import type { MikroORM } from "@mikro-orm/postgresql";
import type { EntryListing, EntryQuery } from "../app/ports.js";
import { FailureError } from "../domain/errors.js";
import { ConcurrencyGate } from "./concurrency-gate.js";
import { entryFromRow, type Row } from "./rows.js";
import { ormQuery } from "./sql.js";
import { guardUnavailable } from "./unavailable.js";

/** The longest one listing statement runs; then it is cancelled and its connection freed. */
export const LISTING_STATEMENT_TIMEOUT_MS = 10_000;
/** Listings that may wait for a turn beyond those running; one more is refused at once. */
export const LISTINGS_WAITING = 16;
/** The longest a listing waits for its turn. */
export const LISTING_MAX_WAIT_MS = 10_000;

/**
 * An upper bound of one entry's size in a ListLedgerEntries answer, computed by Postgres. Protobuf
 * spends at most one byte more on a metadata pair than its JSON text does (`"k": "v", `: 8 bytes
 * around key and value against at most 9), and under 130 bytes on the fixed-size fields (entry and
 * bucket ids, amount, kind, time, framing); 256 covers both for up to 126 metadata pairs.
 */
const ENTRY_BYTES = `(octet_length(e.metadata::text) + octet_length(e.account_id) + octet_length(e.caller) + coalesce(octet_length(e.idempotency_key), 0) + octet_length(e.member_id) + 256)`;

/**
 * One page of an account's entries in one statement: up to `limit` + 1 entries (the one after the
 * page tells whether more follow), cut in Postgres once their running size passes the budget, so
 * that entries the page cannot carry are never sent to the server. Rows whose preceding rows already
 * pass the budget are dropped, except the first two: the page always takes its first entry, and
 * the second then says whether more follow.
 */
function pageStatement(query: EntryQuery): { sql: string; params: unknown[] } {
  const where: string[] = [];
  const params: unknown[] = [];
  const and = (condition: string, ...values: unknown[]) => {
    where.push(condition);
    params.push(...values);
  };
  and("e.account_id = ?", query.accountId);
  if (query.afterEntryId !== null) and("e.entry_id > ?", query.afterEntryId);
  if (query.from) and("e.created_at >= ?", query.from);
  if (query.to) and("e.created_at < ?", query.to);
  if (query.kinds.length > 0) and(`e.kind in (${query.kinds.map(() => "?").join(", ")})`, ...query.kinds);
  const sql = `select * from (
      select e.*, ${ENTRY_BYTES} as entry_bytes, sum(${ENTRY_BYTES}) over w as page_bytes, row_number() over w as n
        from ledger_entries e
       where ${where.join(" and ")}
      window w as (order by e.entry_id rows unbounded preceding)
       order by e.entry_id
       limit ?
    ) page
    where n <= 2 or page_bytes - entry_bytes <= ?
    order by entry_id`;
  return { sql, params: [...params, query.limit + 1, query.maxBytes] };
}

function pageOf(rows: readonly Row[], query: EntryQuery): EntryListing {
  const entries = [];
  for (const row of rows) {
    if (entries.length === query.limit) break;
    if (entries.length > 0 && Number(row["page_bytes"]) > query.maxBytes) break;
    entries.push(entryFromRow(row));
  }
  return { entries, more: entries.length < rows.length };
}

function readLimit(message: string, limit: string): FailureError {
  return new FailureError({ reason: "READ_LIMIT_EXCEEDED", message, metadata: { limit } });
}

/**
 * Ledger listings on the ORM pool, which plan and rate card lookups (ChangePlan, PurchaseTopUp,
 * ListPlans) need too. Listings are the only heavy statements there, so they get half of it: at
 * most half its connections run listings, a few more listings wait their turn, and the rest are
 * refused with READ_LIMIT_EXCEEDED (RESOURCE_EXHAUSTED) instead of queueing in front of plan lookups.
 */
export class EntryListings {
  private gate: ConcurrencyGate | null = null;

  async list(orm: MikroORM, query: EntryQuery): Promise<EntryListing> {
    this.gate ??= new ConcurrencyGate({
      running: Math.max(1, Math.floor((orm.config.get("pool")?.max ?? 2) / 2)),
      waiting: LISTINGS_WAITING,
      maxWaitMs: LISTING_MAX_WAIT_MS,
      refuse: () => readLimit("too many ledger listings are running on this server; retry later", "concurrency"),
    });
    return this.gate.run(() =>
      guardUnavailable(() =>
        orm.em.fork().transactional(async (em) => {
          const q = ormQuery(em);
          await q(`select set_config('statement_timeout', ?, true)`, [String(LISTING_STATEMENT_TIMEOUT_MS)]);
          const { sql, params } = pageStatement(query);
          return pageOf(await q(sql, params), query);
        }),
      ).catch((err: unknown) => {
        if ((err as { code?: unknown }).code !== "57014") throw err; // query_canceled: the statement timeout
        throw readLimit(`the listing ran longer than ${LISTING_STATEMENT_TIMEOUT_MS} ms; narrow it (time range, kinds) or retry`, "duration");
      }),
    );
  }
}
