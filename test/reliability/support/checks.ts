import type pg from "pg";
import type { CreditClients } from "../../../src/client/index.js";
import type { Ack } from "./load.js";

export interface ReservationRow {
  account_id: string;
  reservation_id: string;
  state: string;
  held_amount: string;
  captured_amount: string;
  released_amount: string;
  holds: string;
  captures: string;
  releases: string;
  expires: string;
  hold_sum: string;
  capture_sum: string;
  release_sum: string;
}

/** Every reservation of the accounts with the count and sum of its ledger entries by kind, straight from Postgres. */
export async function reservationLedger(db: pg.Pool, accountIds: readonly string[]): Promise<Map<string, ReservationRow>> {
  const { rows } = await db.query<ReservationRow>(
    `select r.account_id, r.reservation_id::text, r.state, r.held_amount::text, r.captured_amount::text, r.released_amount::text,
            count(*) filter (where e.kind = 'HOLD')::text as holds,
            count(*) filter (where e.kind = 'CAPTURE')::text as captures,
            count(*) filter (where e.kind = 'RELEASE')::text as releases,
            count(*) filter (where e.kind = 'EXPIRE')::text as expires,
            coalesce(sum(e.amount) filter (where e.kind = 'HOLD'), 0)::text as hold_sum,
            coalesce(sum(e.amount) filter (where e.kind = 'CAPTURE'), 0)::text as capture_sum,
            coalesce(sum(e.amount) filter (where e.kind = 'RELEASE'), 0)::text as release_sum
       from reservations r
       left join ledger_entries e on e.account_id = r.account_id and e.reservation_id = r.reservation_id
      where r.account_id = any($1)
      group by r.account_id, r.reservation_id`,
    [accountIds],
  );
  return new Map(rows.map((r) => [r.reservation_id, r]));
}

/**
 * Double effects for single-bucket accounts with Commit ≤ hold: a reservation with more than one
 * HOLD, CAPTURE or RELEASE entry, entries that do not add up to its amounts, or a reservation no
 * acknowledged Reserve produced (a retried Reserve applied twice).
 */
export function doubleEffects(ledger: Map<string, ReservationRow>, acks: readonly Ack[]): { count: number; examples: string[] } {
  const acked = new Set(acks.filter((a) => a.kind === "reserve").map((a) => a.reservationId));
  const examples: string[] = [];
  for (const r of ledger.values()) {
    const problems: string[] = [];
    if (!acked.has(r.reservation_id)) problems.push("no acknowledged Reserve made it");
    if (Number(r.holds) !== 1) problems.push(`${r.holds} HOLD entries`);
    if (Number(r.captures) > 1) problems.push(`${r.captures} CAPTURE entries`);
    if (Number(r.releases) > 1) problems.push(`${r.releases} RELEASE entries`);
    if (r.hold_sum !== r.held_amount) problems.push(`HOLD sum ${r.hold_sum} ≠ held ${r.held_amount}`);
    if (r.capture_sum !== r.captured_amount) problems.push(`CAPTURE sum ${r.capture_sum} ≠ captured ${r.captured_amount}`);
    if (r.state !== "HELD" && BigInt(r.capture_sum) + BigInt(r.release_sum) !== BigInt(r.hold_sum)) problems.push("settled entries do not add up to the hold");
    if (problems.length > 0) examples.push(`${r.reservation_id} (${r.state}): ${problems.join(", ")}`);
  }
  return { count: examples.length, examples: examples.slice(0, 10) };
}

/** Acknowledged calls whose effect is not in Postgres as acknowledged. */
export function lostAcks(ledger: Map<string, ReservationRow>, acks: readonly Ack[]): { count: number; examples: string[] } {
  const examples: string[] = [];
  const settled = new Set(acks.filter((a) => a.kind !== "reserve").map((a) => a.reservationId));
  for (const a of acks) {
    const r = ledger.get(a.reservationId);
    let problem = "";
    if (!r) problem = "reservation missing";
    else if (a.kind === "reserve" && BigInt(r.held_amount) !== a.amount) problem = `held ${r.held_amount} ≠ ${a.amount}`;
    else if (a.kind === "reserve" && !settled.has(a.reservationId) && a.abandoned && r.state !== "EXPIRED" && r.state !== "HELD") problem = `abandoned hold is ${r.state}`;
    else if (a.kind === "commit" && (r.state !== "COMMITTED" || BigInt(r.captured_amount) !== a.amount)) problem = `commit of ${a.amount} acknowledged, stored ${r.state} ${r.captured_amount}`;
    else if (a.kind === "release" && r.state !== "RELEASED") problem = `release acknowledged, stored ${r.state}`;
    if (problem) examples.push(`${a.kind} ${a.reservationId}: ${problem}`);
  }
  return { count: examples.length, examples: examples.slice(0, 10) };
}

/** Reconcile RPC over every account: the number of differences between stored amounts and entries. */
export async function reconcileAll(clients: CreditClients, accountIds: readonly string[]): Promise<{ differences: number; examples: string[] }> {
  let differences = 0;
  const examples: string[] = [];
  for (const accountId of accountIds) {
    const r = await clients.admin.reconcile({ accountId });
    differences += r.differences.length;
    if (!r.consistent && r.differences.length === 0) differences += 1;
    for (const d of r.differences.slice(0, 3)) examples.push(`${accountId} ${d.subject} ${d.field}: stored ${d.stored}, entries ${d.fromEntries}`);
  }
  return { differences, examples: examples.slice(0, 10) };
}

/**
 * Conservation per single-bucket account: funded = available + held + captured, with available and
 * held as GetBalance reports them and captured summed from CAPTURE entries in Postgres.
 */
export async function conservation(db: pg.Pool, clients: CreditClients, funded: Map<string, bigint>): Promise<{ count: number; examples: string[] }> {
  const examples: string[] = [];
  for (const [accountId, amount] of funded) {
    const { balance } = await clients.credit.getBalance({ accountId });
    const { rows } = await db.query<{ c: string; e: string }>(
      `select coalesce(sum(amount) filter (where kind = 'CAPTURE'), 0)::text as c, coalesce(sum(amount) filter (where kind = 'EXPIRE'), 0)::text as e
         from ledger_entries where account_id = $1`,
      [accountId],
    );
    const captured = BigInt(rows[0]!.c);
    const expired = BigInt(rows[0]!.e);
    const total = balance!.available + balance!.held + captured + expired;
    if (total !== amount || balance!.available < 0n) examples.push(`${accountId}: funded ${amount}, available ${balance!.available} + held ${balance!.held} + captured ${captured} + expired ${expired} = ${total}`);
  }
  return { count: examples.length, examples };
}

export async function heldCount(db: pg.Pool, accountIds: readonly string[]): Promise<number> {
  const { rows } = await db.query<{ n: string }>(`select count(*)::text as n from reservations where state = 'HELD' and account_id = any($1)`, [accountIds]);
  return Number(rows[0]!.n);
}
