import type { AccountBook } from "../domain/account-book.js";
import { accountTime } from "../domain/clock.js";
import { type AlertPolicy, checkBalanceAlert, NO_ALERT_DEFAULT } from "../domain/balance-alert.js";
import { assertConserved } from "../domain/conservation.js";
import { type Failure, invariant, ok, type Result } from "../domain/errors.js";
import { decideKey, keyAnswer } from "../domain/idempotency.js";
import { applyDue } from "../domain/maintenance.js";
import type { Action, ActionValues } from "./commands.js";
import { applyAdjustCredits, applyPurchaseTopUp } from "./grants.js";
import { applyCommit, applyExtend, applyRelease, applyReserve } from "./holds.js";
import { applySetBalanceAlert } from "./alerts.js";
import { applySetConcurrencyLimit } from "./concurrency-limits.js";
import { usageDeltas } from "../domain/usage.js";
import { applyRemoveSpendLimit, applySetSpendLimit } from "./spend-limits.js";
import { applyCompleteAutoTopUp, applyFailAutoTopUp, applySetAutoTopUp } from "./auto-top-up.js";
import { type AutoTopUpPolicy, DEFAULT_MAX_FAILURES, DEFAULT_REQUEST_TIMEOUT_MS, settleAutoTopUp } from "../domain/auto-top-up.js";
import { requestIfLow } from "../domain/auto-top-up-steps.js";
import { applyAdvanceTestClock, applyChangePlan } from "./plans.js";
import type {
  AccountWrite,
  AnswerEncoders,
  Applied,
  ApplyStage,
  CommandContext,
  CommandOutcome,
  EventEncoder,
  LoadedAccount,
  OperationRecord,
  PendingCommand,
  RecordedOperation,
  StampedEvent,
} from "./ports.js";

/** Runs one action's rule on the locked book at the account's time `now`. */
export type ActionRunner = (book: AccountBook, action: Action, now: Date, newId: () => string) => Result<unknown>;

/** THE table of rules: which use case's rule an action runs. */
export const runAction: ActionRunner = (book, action, now, newId) => {
  switch (action.kind) {
    case "Reserve":
      return applyReserve(book, action, now);
    case "Commit":
      return applyCommit(book, action, now);
    case "Release":
      return applyRelease(book, action, now);
    case "ExtendReservation":
      return applyExtend(book, action, now);
    case "PurchaseTopUp":
      return applyPurchaseTopUp(book, action, now);
    case "AdjustCredits":
      return applyAdjustCredits(book, action, now);
    case "ChangePlan":
      return applyChangePlan(book, action, now, newId);
    case "AdvanceTestClock":
      return applyAdvanceTestClock(book, now);
    case "SetBalanceAlert":
      return applySetBalanceAlert(book, action, now);
    case "SetConcurrencyLimit":
      return applySetConcurrencyLimit(book, action);
    case "SetSpendLimit":
      return applySetSpendLimit(book, action, now);
    case "RemoveSpendLimit":
      return applyRemoveSpendLimit(book, action, now);
    case "SetAutoTopUp":
      return applySetAutoTopUp(book, action, now);
    case "CompleteAutoTopUp":
      return applyCompleteAutoTopUp(book, action, now);
    case "FailAutoTopUp":
      return applyFailAutoTopUp(book, action, now);
    case "SettleDue":
      return ok({ balance: book.balance(now), reservation: action.reservationId ? (book.reservation(action.reservationId) ?? null) : null } satisfies ActionValues["SettleDue"]);
  }
};

export interface ApplyOptions {
  /** Runs each action's rule (tests substitute their own). */
  readonly run?: ActionRunner;
  /** Encodes events for the outbox; null: the outbox is off (a bench-only switch) and no event is written. */
  readonly events?: EventEncoder | null;
  /** Balance alerts' default (BALANCE_ALERT_DEFAULT_PERCENT); absent: no default alert. */
  readonly alerts?: AlertPolicy;
  /** How long before a bucket's expiry CREDITS_EXPIRING falls due (EXPIRY_NOTICE_DAYS); absent or 0: no notices. */
  readonly expiryNoticeMs?: number;
  /** Whether writes add to the usage rollup (default true; USAGE_ROLLUP_ENABLED=false is a bench-only switch). */
  readonly usage?: boolean;
  /** Auto top-up's settings (AUTO_TOP_UP_MAX_FAILURES, AUTO_TOP_UP_REQUEST_TIMEOUT); absent: the defaults. */
  readonly autoTopUp?: AutoTopUpPolicy;
}

export const DEFAULT_AUTO_TOP_UP: AutoTopUpPolicy = { maxFailures: DEFAULT_MAX_FAILURES, requestTimeoutMs: DEFAULT_REQUEST_TIMEOUT_MS };

/** What the apply stage judges every change record by, besides the action's own rule. */
interface DuePolicy {
  readonly alerts: AlertPolicy;
  readonly expiryNoticeMs: number;
  readonly usage?: boolean;
  readonly autoTopUp?: AutoTopUpPolicy;
}

/**
 * The apply stage: given an encoder per recorded action and one for events, the function the
 * store calls between loading and persisting a batch.
 */
export function createApplyStage(encoders: AnswerEncoders, options: ApplyOptions = {}): ApplyStage {
  const run = options.run ?? runAction;
  const events = options.events ?? null;
  const policy: DuePolicy = {
    alerts: options.alerts ?? NO_ALERT_DEFAULT,
    expiryNoticeMs: options.expiryNoticeMs ?? 0,
    usage: options.usage ?? true,
    autoTopUp: options.autoTopUp ?? DEFAULT_AUTO_TOP_UP,
  };
  return (commands, accounts, created, newId) => applyCommands(commands, accounts, created, newId, encoders, run, events, policy);
}

/** Mutable per-account state of a batch: the book, who wrote each entry, and the account's latest time. */
interface Working {
  readonly book: AccountBook;
  readonly contexts: CommandContext[];
  now: Date;
  /** Its earliest open hold's expiry when loaded. */
  readonly loadedHoldExpiry: Date | null;
  settledAt: Date | null;
  readonly operations: Map<string, RecordedOperation>;
  /** The events of its change records so far, stamped. */
  readonly events: StampedEvent[];
}

function failed(failure: Failure): CommandOutcome<never> {
  return { kind: "failed", failure };
}

/**
 * Runs a batch's commands on their locked, loaded books, in arrival order — commands on the same
 * account one after the other on the same book, exactly as if each had its own transaction — and
 * returns each one's outcome and every write, for the store to persist in one statement. Pure:
 * no I/O. Each command still behaves as on its own: a replayed key returns its recorded response
 * (also a key recorded earlier in this batch), a failed command changes nothing, and entries
 * carry their own command's caller, key and time. Every changed bucket is checked for
 * conservation before anything is handed back to be written.
 */
export function applyCommands(
  commands: readonly PendingCommand[],
  accounts: ReadonlyMap<string, LoadedAccount>,
  created: ReadonlySet<string>,
  newId: () => string,
  encoders: AnswerEncoders,
  run: ActionRunner = runAction,
  encodeEvent: EventEncoder | null = null,
  policy: DuePolicy = { alerts: NO_ALERT_DEFAULT, expiryNoticeMs: 0 },
): Applied {
  // An account this batch created comes into being when its first creating command runs: a
  // command that arrived before that one must not see it (as if each had its own transaction).
  const unborn = new Set(created);
  const working = new Map<string, Working>();
  const operations: OperationRecord[] = [];
  const outcomes = commands.map((item) => {
    if (item.command.createAccount) unborn.delete(item.accountId);
    const account = unborn.has(item.accountId) ? undefined : accounts.get(item.accountId);
    if (!account) return failed({ reason: "ACCOUNT_NOT_FOUND", message: `account ${item.accountId} not found`, metadata: { account_id: item.accountId } });
    let work = working.get(item.accountId);
    if (!work) {
      work = { book: account.book, contexts: [], now: item.now, loadedHoldExpiry: account.nextHoldExpiry, settledAt: null, operations: account.operations, events: [] };
      working.set(item.accountId, work);
    }
    return applyOne(item, work, operations, newId, encoders, run, encodeEvent, policy);
  });
  const books: AccountWrite[] = [];
  for (const w of working.values()) {
    // The last check before the write: a movement that broke the books never reaches Postgres.
    assertConserved(w.book);
    const usage = policy.usage === false ? [] : usageDeltas(w.book, (i) => ({ caller: w.book.entries[i]!.automatic ? "system" : w.contexts[i]!.caller, now: w.contexts[i]!.now }));
    books.push({ book: w.book, contexts: w.contexts, events: w.events, now: w.now, settledAt: w.settledAt, nextHoldExpiry: earliestHold(w), usage });
  }
  return { outcomes, books, operations };
}

/** One command: replay check, test-clock step, due work, the action's rule, entry stamping, answer and record. */
function applyOne(
  item: PendingCommand,
  work: Working,
  operations: OperationRecord[],
  newId: () => string,
  encoders: AnswerEncoders,
  run: ActionRunner,
  encodeEvent: EventEncoder | null,
  policy: DuePolicy,
): CommandOutcome {
  const { command } = item;
  const { book } = work;
  const claim = command.idempotency;
  if (claim) {
    const recorded = work.operations.get(claim.key);
    const decision = decideKey(claim, recorded && { state: "done", ...recorded });
    if (decision) {
      const answer = keyAnswer(claim.key, decision);
      return answer.ok ? { kind: "replayed", response: answer.response } : failed(answer.failure);
    }
  }
  // Everything from here on (test-clock step, due work, the action) is one change record: if it
  // changed the book at all, the account's sequence moves on by exactly one (see below).
  const changesBefore = book.changeCount;
  const eventsBefore = book.events.length;
  // A test-clock step is taken before anything falls due, so the holds due during it are released.
  const step = command.clockStepMs ?? 0;
  if (step > 0) book.advanceClock(step, item.now);
  const at = accountTime(book.clockOffsetMs, item.now);
  applyDue(book, at, newId, policy.expiryNoticeMs);
  // An auto top-up request past its expiry re-arms its rule (and a new month counts from 0): not a change by itself.
  const ruleDue = book.autoTopUp !== null && settleAutoTopUp(book.autoTopUp, at);
  work.settledAt = at;
  const dueEnd = book.entries.length;
  const dueEvents = book.events.length;
  const result = run(book, command.action, at, newId);
  // Entries are stamped with the account's time after the command (a test clock may have moved).
  const ctx: CommandContext = { caller: command.caller, idempotencyKey: claim?.key ?? null, now: accountTime(book.clockOffsetMs, item.now) };
  while (work.contexts.length < book.entries.length) work.contexts.push(ctx);
  work.now = ctx.now;
  if (!result.ok) invariant(book.entries.length === dueEnd && book.events.length === dueEvents, "a failed command changed the book");
  // A change (or a rule the due work re-armed) that leaves the account below its auto top-up
  // threshold makes the rule's one request, in this change record. Not after a failed payment:
  // the next change asks again, a declined card is not charged again at once.
  if (book.autoTopUp && (book.changeCount !== changesBefore || ruleDue) && command.action.kind !== "FailAutoTopUp") {
    requestIfLow(book, ctx.now, policy.autoTopUp ?? DEFAULT_AUTO_TOP_UP);
  }
  // One number per change record, under the account's lock in this transaction: a command and the
  // due work applied just before it share one; a failed command whose due work changed the book
  // leaves that due work a record of its own; a command that changed nothing gets none.
  if (book.changeCount !== changesBefore) {
    // A change record that moved the balance across an alert line says so, in the same record.
    checkBalanceAlert(book, ctx.now, policy.alerts);
    book.sequence += 1n;
    // Every change record states at least one event: a consumer of the feed sees every sequence number.
    invariant(book.events.length > eventsBefore, `a change of account ${item.accountId} stated no event`);
    if (encodeEvent) {
      for (const event of book.events.slice(eventsBefore)) {
        work.events.push({ kind: event.kind, sequence: book.sequence, occurredAt: ctx.now, payload: encodeEvent(event) });
      }
    }
  }
  if (!result.ok) return failed(result.failure);
  const sequence = book.sequence;
  if (!claim) return { kind: "applied", value: result.value, response: null, sequence };
  const kind = command.action.kind;
  invariant(kind !== "SettleDue", "due work alone is never recorded");
  const response = (encoders[kind] as (value: unknown) => Uint8Array)(result.value);
  operations.push({ accountId: item.accountId, key: claim.key, method: claim.method, requestHash: claim.requestHash, response, createdAt: item.now });
  // A second call with the same key later in this batch replays this one.
  work.operations.set(claim.key, { requestHash: claim.requestHash, response: Buffer.from(response) });
  return { kind: "applied", value: result.value, response, sequence };
}

/** The earliest expiry among the holds open when loaded and those the batch opened or extended (never later than the truth). */
function earliestHold({ book, loadedHoldExpiry }: Working): Date | null {
  let earliest = loadedHoldExpiry?.getTime() ?? Number.POSITIVE_INFINITY;
  for (const r of book.allReservations()) if (r.status === "HELD" && r.expiresAt.getTime() < earliest) earliest = r.expiresAt.getTime();
  return Number.isFinite(earliest) ? new Date(earliest) : null;
}
