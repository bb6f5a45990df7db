import type { BalanceView } from "../domain/account-book.js";
import { fail, invariant, ok, type Result } from "../domain/errors.js";
import type { EntryKind } from "../domain/ledger-entry.js";
import type { Difference } from "../domain/reconcile.js";
import { accountTime } from "../domain/clock.js";
import { applyDue, nextChangeAt } from "../domain/maintenance.js";
import { isOverdue, type Reservation } from "../domain/reservation.js";
import type { ActionValues } from "./commands.js";
import { type AppDeps, type Reply, refuse } from "./deps.js";
import type { Encode } from "./holds.js";
import type { StoredEntry } from "./ports.js";

/** Persists whatever has fallen due on the account; the locked, current book's values after it, and its sequence after the due work. */
async function settleDue(
  deps: AppDeps,
  accountId: string,
  reservationId: string | null,
  now: Date,
): Promise<Result<{ readonly settled: ActionValues["SettleDue"]; readonly sequence: bigint }>> {
  const command = { target: { accountId }, createAccount: false, idempotency: null, caller: "system", action: { kind: "SettleDue", reservationId } } as const;
  const outcome = await deps.store.execute(command, now);
  if (outcome.kind === "failed") return { ok: false, failure: outcome.failure };
  invariant(outcome.kind === "applied", "a command without a key is never replayed");
  return ok({ settled: outcome.value as ActionValues["SettleDue"], sequence: outcome.sequence });
}

/** How a balance is encoded: its body once per read, its as-of time on every answer. */
export interface BalanceEncoding {
  /**
   * The balance without its as-of time, with the account's sequence it is the state of (so the
   * two travel, and are cached, as one), in a layout only `stamp` reads.
   */
  body(view: BalanceView, sequence: bigint): Uint8Array;
  /** The response: a body, stamped with the time it is as of. */
  stamp(body: Uint8Array, asOf: Date): Uint8Array;
  /** The sequence a body was encoded with. */
  sequence(body: Uint8Array): bigint;
}

/** An account's balance as one read found it. */
export interface BalanceRead {
  /** The encoded balance and sequence, without its as-of time (BalanceEncoding.body). */
  readonly body: Uint8Array;
  /** By the account's clock. */
  readonly asOf: Date;
  /**
   * Server time (ms) of the first instant the balance can change by itself (something falls due);
   * +Infinity: never; null: not known from this read (it applied due work, whose commit the change
   * feed tells, and a read after that knows).
   */
  readonly dueAtServerMs: number | null;
}

/**
 * The balance of an account as GetBalance reads it: from the balance cache while the account is
 * unchanged and nothing has fallen due on it, else without locking from the store. If an overdue
 * hold or an expired bucket is found, the due work is applied in a locked transaction first (a
 * change record of its own, told through the change feed), so the balance never counts expired credits.
 */
export async function readBalance(deps: AppDeps, accountId: string, encoding: BalanceEncoding): Promise<Result<BalanceRead>> {
  const now = deps.clock.now();
  const cached = deps.balances.get(accountId, now);
  if (cached) return ok({ body: cached.body, asOf: accountTime(cached.clockOffsetMs, now), dueAtServerMs: cached.until - cached.clockOffsetMs });
  const ticket = deps.balances.ticket();
  const read = await deps.store.readBook(accountId, now);
  if (!read) return fail("ACCOUNT_NOT_FOUND", `account ${accountId} not found`, { account_id: accountId });
  const { book } = read;
  const at = accountTime(book.clockOffsetMs, now);
  if (!applyDue(book, at, deps.newId)) {
    const body = encoding.body(book.balance(at), book.sequence);
    const until = nextChangeAt(book, at, read.nextHoldExpiry)?.getTime() ?? Number.POSITIVE_INFINITY;
    deps.balances.set(ticket, accountId, { body, clockOffsetMs: book.clockOffsetMs, until });
    return ok({ body, asOf: at, dueAtServerMs: until - book.clockOffsetMs });
  }
  const settled = await settleDue(deps, accountId, null, now);
  if (!settled.ok) return settled;
  const { balance } = settled.value.settled;
  return ok({ body: encoding.body(balance, settled.value.sequence), asOf: balance.asOf, dueAtServerMs: null });
}

/** GetBalance: the balance as readBalance finds it, stamped with its as-of time. */
export async function getBalance(deps: AppDeps, accountId: string, encoding: BalanceEncoding): Promise<Reply> {
  const read = await readBalance(deps, accountId, encoding);
  return read.ok ? { ok: true, bytes: encoding.stamp(read.value.body, read.value.asOf) } : read;
}

/** GetReservation shows an overdue hold as EXPIRED, releasing it first. */
export async function getReservation(deps: AppDeps, reservationId: string, encode: Encode<Reservation>): Promise<Reply> {
  const now = deps.clock.now();
  const reservation = await deps.store.findReservation(reservationId);
  if (!reservation) return refuse("RESERVATION_NOT_FOUND", `reservation ${reservationId} not found`, { reservation_id: reservationId });
  if (reservation.status !== "HELD") return { ok: true, bytes: encode(reservation) };
  // An open hold is judged by its account's clock (which a test clock may have moved ahead).
  const read = await deps.store.readBook(reservation.accountId, now);
  const at = accountTime(read?.book.clockOffsetMs ?? 0, now);
  if (!isOverdue(reservation, at)) return { ok: true, bytes: encode(reservation) };
  const settled = await settleDue(deps, reservation.accountId, reservationId, now);
  return settled.ok ? { ok: true, bytes: encode(settled.value.settled.reservation ?? reservation) } : settled;
}

/**
 * The most bytes one ListLedgerEntries answer carries, whatever its page size: a quarter of
 * gRPC's 4 MiB send limit, so pages of entries with the largest metadata still answer. A page
 * ends early when its next entry would pass it; its next_page_token continues from there.
 */
export const LEDGER_PAGE_MAX_BYTES = 1024 * 1024;

export interface ListEntriesInput {
  readonly accountId: string;
  readonly afterEntryId: bigint | null;
  readonly pageSize: number;
  readonly from: Date | null;
  readonly to: Date | null;
  readonly kinds: readonly EntryKind[];
}

export interface EntryPage {
  readonly entries: readonly StoredEntry[];
  /** The last entry id of this page when more may follow. */
  readonly nextAfterEntryId: bigint | null;
}

/** ListLedgerEntries: one page of an account's entries, oldest first. */
export async function listLedgerEntries(deps: AppDeps, input: ListEntriesInput, encode: Encode<EntryPage>): Promise<Reply> {
  if (!(await deps.store.accountExists(input.accountId))) {
    return refuse("ACCOUNT_NOT_FOUND", `account ${input.accountId} not found`, { account_id: input.accountId });
  }
  const { entries, more } = await deps.store.listEntries({
    accountId: input.accountId,
    afterEntryId: input.afterEntryId,
    limit: input.pageSize,
    maxBytes: LEDGER_PAGE_MAX_BYTES - 64, // room for next_page_token
    from: input.from,
    to: input.to,
    kinds: input.kinds,
  });
  return { ok: true, bytes: encode({ entries, nextAfterEntryId: more ? entries[entries.length - 1]!.entryId : null }) };
}

/** Reconcile: the account's stored buckets and holds against what its entries add up to. */
export async function reconcile(deps: AppDeps, accountId: string, encode: Encode<readonly Difference[]>): Promise<Reply> {
  if (!(await deps.store.accountExists(accountId))) {
    return refuse("ACCOUNT_NOT_FOUND", `account ${accountId} not found`, { account_id: accountId });
  }
  return { ok: true, bytes: encode(await deps.store.reconcile(accountId)) };
}
