import type { AccountWrite, ApplyStage, CommandOutcome, PendingCommand } from "../app/ports.js";
import type { AccountBook } from "../domain/account-book.js";
import { type BookRequest, booksFromRows, type LoadedBook, loadStatement, lockStatement } from "./account-loader.js";
import { persistStatement } from "./persist.js";
import { accountTime } from "../domain/clock.js";
import { spendWindow } from "../domain/spend-limit.js";
import type { Statement, Transaction } from "./pg.js";

/** A command waiting for its batch; the account it locks is already known. */
export interface QueuedCommand extends PendingCommand {
  /** The reservation a Commit, Release or Extend names. */
  readonly reservationId: string | null;
}

export interface BatchResult {
  /** One outcome per command, in order; null for a command left out (its account's lock was held elsewhere: see AccountLocks). */
  readonly outcomes: (CommandOutcome | null)[];
  /** Reservations the batch created, with their accounts. */
  readonly newReservations: readonly (readonly [reservationId: string, accountId: string])[];
  /** The accounts the batch applied due work to, as it committed them, as of that time. */
  readonly books: readonly { readonly book: AccountBook; readonly at: Date; readonly nextHoldExpiry: Date | null }[];
}

/** How a batch takes its accounts' row locks. */
export interface AccountLocks {
  /**
   * Whether to wait when another transaction holds the account's lock. If not, the batch skips the
   * account and leaves its commands out (it names them to `loaded`): they run later, elsewhere.
   */
  wait(accountId: string): boolean;
  /** How long such a wait may last before the batch fails with lock_not_available (55P03); null: as long as it takes. */
  readonly waitLimitMs: number | null;
}

/** Waits for every lock, however long (the default: a batch that is alone on the database). */
export const WAIT_FOR_LOCKS: AccountLocks = { wait: () => true, waitLimitMs: null };

/**
 * Runs several commands in ONE transaction (the caller's): creates the accounts that need
 * creating, locks every account the commands touch (in account order; an account `locks` does not
 * wait for and another transaction holds is left out, with its commands), loads all their books in
 * one statement, hands them to the apply stage (app/apply.ts: every rule of the commands lives
 * there) and writes every change and every operation record it returns in one statement. Two
 * round trips however many commands.
 */
export async function runCommandBatch(
  tx: Transaction,
  items: readonly QueuedCommand[],
  apply: ApplyStage,
  newId: () => string,
  /** Called once the accounts are locked and loaded (the batch's first round trip is back), with the commands left out (by index). */
  loaded: (leftOut: readonly number[]) => void = () => {},
  locks: AccountLocks = WAIT_FOR_LOCKS,
): Promise<BatchResult> {
  const byAccount = new Map<string, QueuedCommand[]>();
  for (const item of items) {
    const mine = byAccount.get(item.accountId);
    if (mine) mine.push(item);
    else byAccount.set(item.accountId, [item]);
  }
  const requests: BookRequest[] = [...byAccount].map(([accountId, mine]) => {
    // Load the holds overdue by the latest time any of its commands will reach (test-clock steps included).
    const steps = mine.reduce((sum, i) => sum + (i.command.clockStepMs ?? 0), 0);
    return {
      accountId,
      now: new Date(Math.max(...mine.map((i) => i.now.getTime())) + steps),
      reservationIds: mine.flatMap((i) => (i.reservationId ? [i.reservationId] : [])),
      idempotencyKeys: mine.flatMap((i) => (i.command.idempotency ? [i.command.idempotency.key] : [])),
      controls: mine.some((i) => CONTROL_KINDS.has(i.command.action.kind)),
      autoTopUpEpochs: mine.flatMap(({ command: { action } }) => (action.kind === "CompleteAutoTopUp" || action.kind === "FailAutoTopUp" ? [action.epoch] : [])),
    };
  });
  const toCreate = [...new Set(items.filter((i) => i.command.createAccount).map((i) => i.accountId))].sort();
  const create: Statement[] = toCreate.length === 0 ? [] : [
    {
      sql: `insert into accounts (account_id, created_at) select id, ? from unnest(?::text[]) as id order by id on conflict do nothing returning account_id`,
      params: [items[0]!.now, toCreate],
      name: "create_accounts",
    },
  ];
  // One round trip: BEGIN, create, lock, then load — which runs after the locks are held.
  const locking = lockStatements([...byAccount.keys()].sort(), locks);
  const statements = [...create, ...locking, loadStatement(requests)];
  const results = await tx.run(statements);
  const loadedBooks = booksFromRows(results[results.length - 1]!);
  // An account that exists but was not locked is held by another transaction: its commands wait for it elsewhere.
  const locked = new Set(locking.flatMap((s) => results[statements.indexOf(s)]!.map((r) => r["account_id"] as string))); // (SET returns no rows)
  const heldElsewhere = (accountId: string) => loadedBooks.has(accountId) && !locked.has(accountId);
  const leftOut = items.flatMap((item, i) => (heldElsewhere(item.accountId) ? [i] : []));
  loaded(leftOut); // the next batch may load while this one computes and writes
  const created = new Set<string>(create.length > 0 ? results[0]!.map((r) => r["account_id"] as string) : []);
  const included = items.filter((item) => !heldElsewhere(item.accountId));
  await readBackfill(tx, included, loadedBooks);
  const applied = apply(included, loadedBooks, created, newId);
  // One round trip: every write and COMMIT.
  const write = persistStatement(applied.books, applied.operations);
  await tx.commit(write ? [write] : []);
  let next = 0;
  const outcomes = items.map((item) => (heldElsewhere(item.accountId) ? null : applied.outcomes[next++]!));
  const newReservations = applied.books.flatMap(({ book }) => [...book.newReservations].map((id) => [id, book.accountId] as const));
  const books = applied.books.flatMap((w: AccountWrite) => (w.settledAt ? [{ book: w.book, at: w.settledAt, nextHoldExpiry: w.nextHoldExpiry }] : []));
  return { outcomes, newReservations, books };
}

/** Commands that set an account's team controls: the book is loaded with them and its running holds even when it has none yet. */
const CONTROL_KINDS: ReadonlySet<string> = new Set(["SetConcurrencyLimit", "SetSpendLimit", "RemoveSpendLimit"]);

/**
 * A spend limit set for the first time starts from what its scope's Commits already captured in the
 * current period, and a plan change moves BILLING_PERIOD limits to a period starting at that
 * instant (domain/spend-limit.ts). The period needs the locked book (its test clock, its
 * plan), so only a batch with a SetSpendLimit takes this extra round trip, under the same locks,
 * before anything applies: the sum of captured credits per (account, member, period start), for
 * the period start at the command's time with and without the batch's test-clock steps. A batch
 * with a ChangePlan on an account with a BILLING_PERIOD limit takes it too. The scan
 * covers the account's holds (an admin path; the hot path never runs it).
 */
async function readBackfill(tx: Transaction, items: readonly QueuedCommand[], books: ReadonlyMap<string, LoadedBook>): Promise<void> {
  const wanted = new Map<string, { accountId: string; memberId: string; since: Date }>();
  for (const item of items) {
    const action = item.command.action;
    const book = books.get(item.accountId)?.book;
    if (!book || (action.kind !== "SetSpendLimit" && action.kind !== "ChangePlan")) continue;
    const steps = items.filter((i) => i.accountId === item.accountId).reduce((sum, i) => sum + (i.command.clockStepMs ?? 0), 0);
    for (const offset of new Set([book.clockOffsetMs, book.clockOffsetMs + steps])) {
      const at = accountTime(offset, item.now);
      const ask = (memberId: string, since: Date) =>
        wanted.set(`${item.accountId}\u0000${memberId}\u0000${since.getTime()}`, { accountId: item.accountId, memberId, since });
      if (action.kind === "SetSpendLimit") ask(action.limit.memberId, spendWindow(action.limit, at, book.subscription).start);
      // A plan change re-anchors the allowance period at this instant (SpendLimits.rebase).
      else for (const l of book.spend?.limits.values() ?? []) if (l.period === "BILLING_PERIOD") ask(l.memberId, at);
    }
  }
  if (wanted.size === 0) return;
  const asked = [...wanted.values()];
  const [rows] = await tx.run([
    {
      sql: `select (select coalesce(sum(r.captured_amount), 0) from reservations r
                     where r.account_id = q.account_id and r.state = 'COMMITTED' and r.created_at >= q.since
                       and (q.member_id = '' or r.member_id = q.member_id))::text as captured
              from unnest(?::text[], ?::text[], ?::timestamptz[]) with ordinality as q(account_id, member_id, since, ord)
             order by q.ord`,
      params: [asked.map((a) => a.accountId), asked.map((a) => a.memberId), asked.map((a) => a.since)],
      name: "spend_backfill",
    },
  ]);
  asked.forEach((a, i) => books.get(a.accountId)!.book.spend!.learnCaptured(a.memberId, a.since, BigInt(rows![i]!["captured"] as string)));
}

/**
 * The statements that lock the accounts (each in account order): first, while the batch holds no
 * account yet (but those it has just created), those it waits for, with the wait limited if
 * `locks` says so; then the others, skipping those held elsewhere. A batch that waits holds nothing
 * another can be waiting for, so batches never deadlock, whoever holds what.
 */
function lockStatements(accountIds: readonly string[], locks: AccountLocks): Statement[] {
  const wait = new Set(accountIds.filter((id) => locks.wait(id)));
  const skip = accountIds.filter((id) => !wait.has(id));
  const out: Statement[] = [];
  if (wait.size > 0) {
    const limit = locks.waitLimitMs === null ? [] : [{ sql: `set local lock_timeout = ${Math.max(1, Math.round(locks.waitLimitMs))}` }];
    // The limit is the lock statement's alone: the transaction's later statements keep the session's.
    out.push(...limit, lockStatement([...wait], "wait"), ...(limit.length > 0 ? [{ sql: "set local lock_timeout to default" }] : []));
  }
  if (skip.length > 0) out.push(lockStatement(skip, "skip-locked"));
  return out;
}
