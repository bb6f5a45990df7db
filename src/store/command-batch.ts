import type { AccountCommand, CommandOutcome } from "../app/ports.js";
import type { AccountBook } from "../domain/account-book.js";
import { type Failure, invariant } from "../domain/errors.js";
import { applyDue } from "../domain/maintenance.js";
import { accountTime } from "../domain/clock.js";
import { type BookRequest, booksFromRows, loadStatement, lockStatement, type StoredOperation } from "./account-loader.js";
import { type BookWrite, type CommandContext, type OperationRecord, persistStatement } from "./persist.js";
import type { Statement, Transaction } from "./pg.js";

/** A command waiting for its batch; the account it locks is already known. */
export interface QueuedCommand {
  readonly command: AccountCommand<unknown>;
  /** Server time when the call arrived. */
  readonly now: Date;
  readonly accountId: string;
  /** The reservation a Commit, Release or Extend names. */
  readonly reservationId: string | null;
}

export interface BatchResult {
  /** One outcome per command, in order; null for a command left out (its account's lock was held elsewhere: see AccountLocks). */
  readonly outcomes: (CommandOutcome<unknown> | null)[];
  /** Reservations the batch created, with their accounts. */
  readonly newReservations: readonly (readonly [reservationId: string, accountId: string])[];
  /** The accounts the batch applied due work to, as it committed them, as of that time. */
  readonly books: readonly { readonly book: AccountBook; readonly at: Date; readonly nextHoldExpiry: Date | null }[];
}

function failed(failure: Failure): CommandOutcome<never> {
  return { kind: "failed", failure };
}

/** Mutable per-account state of a batch: the book, who wrote each entry, and the account's latest time. */
interface Working extends BookWrite {
  readonly contexts: CommandContext[];
  now: Date;
  /** Its earliest open hold's expiry when loaded. */
  readonly nextHoldExpiry: Date | null;
  /** The account's time when due work was last applied to it (null: only replays ran). */
  settledAt: Date | null;
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
 * one statement, runs the commands in arrival order — commands on the same account one after the
 * other on the same book, exactly as if each had its own transaction — and writes every change and
 * every operation record in one statement. Two round trips however many commands.
 *
 * Each command still behaves as on its own: a replayed key returns its recorded response (also a
 * key recorded earlier in this batch), a failed command changes nothing, and entries carry their
 * own command's caller, key and time.
 */
export async function runCommandBatch(
  tx: Transaction,
  items: readonly QueuedCommand[],
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
  // An account this batch created comes into being when its first creating command runs: a
  // command that arrived before that one must not see it (as if each had its own transaction).
  const unborn = new Set(create.length > 0 ? results[0]!.map((r) => r["account_id"] as string) : []);
  const working = new Map<string, Working>();
  const records: OperationRecord[] = [];
  const outcomes = items.map((item) => {
    if (heldElsewhere(item.accountId)) return null;
    if (item.command.createAccount) unborn.delete(item.accountId);
    const account = unborn.has(item.accountId) ? undefined : loadedBooks.get(item.accountId);
    if (!account) return failed({ reason: "ACCOUNT_NOT_FOUND", message: `account ${item.accountId} not found`, metadata: { account_id: item.accountId } });
    let work = working.get(item.accountId);
    if (!work) working.set(item.accountId, (work = { book: account.book, contexts: [], now: item.now, nextHoldExpiry: account.nextHoldExpiry, settledAt: null }));
    return runOne(item, account.operations, work, records, newId);
  });
  // One round trip: every write and COMMIT.
  const write = persistStatement([...working.values()], records);
  await tx.commit(write ? [write] : []);
  const newReservations = [...working.values()].flatMap(({ book }) => [...book.newReservations].map((id) => [id, book.accountId] as const));
  const books = [...working.values()].flatMap((w) => (w.settledAt ? [{ book: w.book, at: w.settledAt, nextHoldExpiry: earliestHold(w) }] : []));
  return { outcomes, newReservations, books };
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

/** The earliest expiry among the holds open when loaded and those the batch opened or extended (never later than the truth). */
function earliestHold({ book, nextHoldExpiry }: Working): Date | null {
  let earliest = nextHoldExpiry?.getTime() ?? Number.POSITIVE_INFINITY;
  for (const r of book.allReservations()) if (r.status === "HELD" && r.expiresAt.getTime() < earliest) earliest = r.expiresAt.getTime();
  return Number.isFinite(earliest) ? new Date(earliest) : null;
}

function runOne(
  item: QueuedCommand,
  operations: Map<string, StoredOperation>,
  work: Working,
  records: OperationRecord[],
  newId: () => string,
): CommandOutcome<unknown> {
  const { command } = item;
  const { book } = work;
  const claim = command.idempotency;
  const recorded = claim ? operations.get(claim.key) : undefined;
  if (claim && recorded) {
    if (Buffer.compare(recorded.requestHash, claim.requestHash) === 0) return { kind: "replayed", response: new Uint8Array(recorded.response) };
    return failed({
      reason: "IDEMPOTENCY_KEY_REUSED",
      message: `idempotency key ${claim.key} was already used for a different request`,
      metadata: { idempotency_key: claim.key },
    });
  }
  // A test-clock step is taken before anything falls due, so the holds due during it are released.
  const step = command.clockStepMs ?? 0;
  if (step > 0) book.advanceClock(step);
  const at = accountTime(book.clockOffsetMs, item.now);
  applyDue(book, at, newId);
  work.settledAt = at;
  const dueEnd = book.entries.length;
  const result = command.run(book, at);
  // Entries are stamped with the account's time after the command (a test clock may have moved).
  const ctx: CommandContext = { caller: command.caller, idempotencyKey: claim?.key ?? null, now: accountTime(book.clockOffsetMs, item.now) };
  while (work.contexts.length < book.entries.length) work.contexts.push(ctx);
  work.now = ctx.now;
  if (!result.ok) {
    invariant(book.entries.length === dueEnd, "a failed command changed the book");
    return failed(result.failure);
  }
  const response = command.encode(result.value, book, at);
  if (claim) {
    records.push({ accountId: item.accountId, key: claim.key, method: claim.method, requestHash: claim.requestHash, response, createdAt: item.now });
    // A second call with the same key later in this batch replays this one.
    operations.set(claim.key, { requestHash: claim.requestHash, response: Buffer.from(response) });
  }
  return { kind: "applied", value: result.value, response };
}
