import type { LevelPlan, UsageDelta, UsageDimension, UsageSeriesRow } from "../domain/usage.js";
import type { AccountBook } from "../domain/account-book.js";
import type { Failure, Result } from "../domain/errors.js";
import type { KeyDecision } from "../domain/idempotency.js";
import type { TopUpPack } from "../domain/grants.js";
import type { Plan } from "../domain/plan.js";
import type { RateCard } from "../domain/pricing.js";
import type { EntryKind } from "../domain/ledger-entry.js";
import type { LedgerEvent, LedgerEventKind } from "../domain/events.js";
import type { Difference } from "../domain/reconcile.js";
import type { Reservation } from "../domain/reservation.js";
import type { Action, ActionValues, RecordedKind } from "./commands.js";

/** An idempotency key claimed by one mutating call, with the hash of the request it came with. */
export interface IdempotencyClaim {
  readonly key: string;
  readonly method: string;
  readonly requestHash: Buffer;
}

/** Which account a command locks: named directly, or through one of its reservations. */
export type CommandTarget = { readonly accountId: string } | { readonly reservationId: string };

/**
 * One command on one account, as data: the store locks the account (named, or through the
 * reservation), loads the book (with `reservationId` if given) and the operation records of the
 * key, hands both to the apply stage (app/apply.ts), and persists what it returns, in one transaction.
 */
export interface AccountCommand {
  readonly target: CommandTarget;
  /** PurchaseTopUp and AdjustCredits bring an account into being; every other command needs one. */
  readonly createAccount: boolean;
  readonly idempotency: IdempotencyClaim | null;
  /** The identity of the calling service, recorded on the entries this command writes. */
  readonly caller: string;
  /** Moves the account's test clock forward by this much before anything falls due (AdvanceTestClock). */
  readonly clockStepMs?: number;
  /** What to do to the book: app/commands.ts lists the actions, app/apply.ts runs them. */
  readonly action: Action;
}

export type CommandOutcome<T = unknown> =
  /** `response`: the encoded answer, recorded with the operation; null for a command without a key (nothing is recorded). */
  /** `sequence`: the account's sequence after the command (its change record's number, or the latest one if it changed nothing). */
  | { readonly kind: "applied"; readonly value: T; readonly response: Uint8Array | null; readonly sequence: bigint }
  | { readonly kind: "replayed"; readonly response: Uint8Array }
  | { readonly kind: "failed"; readonly failure: Failure };

/** A stored operation record: the durable half of idempotency. */
export interface RecordedOperation {
  readonly requestHash: Buffer;
  readonly response: Buffer;
}

/** One account as the store loaded it, locked, for the apply stage. */
export interface LoadedAccount {
  readonly book: AccountBook;
  /** When its earliest open hold falls due, as loaded. */
  readonly nextHoldExpiry: Date | null;
  /** Operation records of the commands' keys, by key. */
  readonly operations: Map<string, RecordedOperation>;
}

/** A command of a batch, its account known. */
export interface PendingCommand {
  readonly command: AccountCommand;
  /** Server time when the call arrived. */
  readonly now: Date;
  readonly accountId: string;
}

/** Who wrote an entry, and when by the account's clock. */
export interface CommandContext {
  readonly caller: string;
  readonly idempotencyKey: string | null;
  readonly now: Date;
}

/** One event of a change record, stamped and encoded: a row of the outbox (docs/events.md). */
export interface StampedEvent {
  readonly kind: LedgerEventKind;
  /** The change record's number: the account's sequence after the change. */
  readonly sequence: bigint;
  /** When it happened by the account's clock. */
  readonly occurredAt: Date;
  /** The encoded payload (rpc/event-encoding.ts): the proto Event with only its payload set. */
  readonly payload: Uint8Array;
}

/** Encodes an event's payload for the outbox; the rpc layer implements it, as it does answers. */
export type EventEncoder = (event: LedgerEvent) => Uint8Array;

/** A book to write back, with the context of each of its entries (`contexts[i]` for `book.entries[i]`). */
export interface BookWrite {
  readonly book: AccountBook;
  readonly contexts: readonly CommandContext[];
  /** The events of its change records, in order (empty when the outbox is off). */
  readonly events: readonly StampedEvent[];
  /** The account's time after its last command. */
  readonly now: Date;
  /** What it adds to the usage rollup (domain/usage.ts); absent or empty: nothing (the rollup is off, a bench-only switch). */
  readonly usage?: readonly UsageDelta[];
}

/** A book the apply stage changed, with what readers may keep of it once it is committed. */
export interface AccountWrite extends BookWrite {
  /** The account's time when due work was last applied to it (null: only replays and refusals ran). */
  readonly settledAt: Date | null;
  /** When its earliest open hold falls due after the batch, or earlier (never later). */
  readonly nextHoldExpiry: Date | null;
}

/** The durable idempotency record of one applied call: its request's hash and its response. */
export interface OperationRecord {
  readonly accountId: string;
  readonly key: string;
  readonly method: string;
  readonly requestHash: Buffer;
  readonly response: Uint8Array;
  readonly createdAt: Date;
}

/** What a batch's commands did: one outcome per command, in order, and every write, for one statement. */
export interface Applied {
  readonly outcomes: CommandOutcome[];
  readonly books: readonly AccountWrite[];
  readonly operations: readonly OperationRecord[];
}

/**
 * The apply stage as the store calls it, between loading and persisting: pure, no I/O.
 * `created`: the accounts this batch's transaction created (they exist from their first creating command on).
 */
export type ApplyStage = (commands: readonly PendingCommand[], accounts: ReadonlyMap<string, LoadedAccount>, created: ReadonlySet<string>, newId: () => string) => Applied;

/** Encodes each recorded command's answer (rpc/answers.ts implements it): the bytes stored with its operation record. */
export type AnswerEncoders = { readonly [K in RecordedKind]: (value: ActionValues[K]) => Uint8Array };

export interface StoredEntry {
  readonly entryId: bigint;
  readonly accountId: string;
  readonly kind: EntryKind;
  readonly bucketId: string;
  readonly reservationId: string | null;
  readonly amount: bigint;
  readonly idempotencyKey: string | null;
  readonly caller: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly createdAt: Date;
  /** The reservation's member ("" for none). */
  readonly memberId: string;
}

export interface EntryQuery {
  readonly accountId: string;
  readonly afterEntryId: bigint | null;
  readonly limit: number;
  /** The page also ends before the entry that would take its encoded size past this (the first entry always goes in). */
  readonly maxBytes: number;
  readonly from: Date | null;
  readonly to: Date | null;
  readonly kinds: readonly EntryKind[];
}

/** One page of entries, oldest first, and whether more follow it. */
export interface EntryListing {
  readonly entries: readonly StoredEntry[];
  readonly more: boolean;
}

/** What a read of one account found. */
export interface AccountSnapshot {
  readonly book: AccountBook;
  /** When its earliest open hold falls due, by the account's clock (null: none is open). */
  readonly nextHoldExpiry: Date | null;
}

/** An account as one of this process's write transactions left it, committed. */
export interface WrittenAccount {
  readonly book: AccountBook;
  /** The account's time after its last command in the transaction. */
  readonly at: Date;
  /** When its earliest open hold falls due after the transaction, or earlier (never later). */
  readonly nextHoldExpiry: Date | null;
  /** The feed's sequence when the transaction began: changes after it may postdate the book. */
  readonly since: number;
}

/**
 * Which accounts changed: told after every write this process commits, before its callers hear
 * of it (with the books it wrote), and, through the database, after every write any other
 * process commits. Each event advances `sequence`.
 */
export interface ChangeFeed {
  /** false while another process's writes could go unseen (the feed is connecting or lost). */
  readonly live: boolean;
  /** Events told so far. */
  readonly sequence: number;
  /** `null`: anything may have changed (the feed was lost or has just been regained). */
  subscribe(listener: (accountIds: readonly string[] | null, written: readonly WrittenAccount[]) => void): void;
}

/** A place in the event feed: after event `idx` of the batch at `position`, or (idx null) after the whole batch. */
export interface EventCursor {
  readonly position: bigint;
  readonly idx: number | null;
}

/** One event as the feed holds it. */
export interface FeedEvent {
  readonly batchId: bigint;
  readonly position: bigint;
  readonly idx: number;
  /** Whether it is the last event of its batch (its cursor then covers the whole batch). */
  readonly lastOfBatch: boolean;
  readonly accountId: string;
  readonly sequence: bigint;
  readonly kind: LedgerEventKind;
  readonly occurredAt: Date;
  readonly recordedAt: Date;
  readonly payload: Uint8Array;
}

export interface EventQuery {
  /** null: from the oldest retained event. */
  readonly after: EventCursor | null;
  readonly limit: number;
  /** Empty: every kind. */
  readonly kinds: readonly LedgerEventKind[];
  readonly accountId: string | null;
}

export type EventPage =
  /** `next`: where the next page starts (the last event's place, or the end of what was scanned when filters skipped the rest). */
  /** `head`: the feed's last position in the page's snapshot (a reader at it has read everything). */
  | { readonly kind: "page"; readonly events: readonly FeedEvent[]; readonly next: EventCursor; readonly head: bigint }
  /** The cursor points before what retention kept; `oldest` is the cursor to restart from. */
  | { readonly kind: "expired"; readonly oldest: EventCursor }
  /** The cursor points past the end of the feed: it was never handed out by this database. */
  | { readonly kind: "ahead"; readonly head: EventCursor };

/** The outbox as the feed reads it (store/event-outbox.ts). */
export interface EventOutbox {
  /**
   * One sequencer pass: numbers committed batches; how many, the feed's last position after it,
   * and whether it stopped at its limit (null: another process is running a pass right now).
   */
  sequence(): Promise<{ readonly numbered: number; readonly head: bigint; readonly more: boolean } | null>;
  page(query: EventQuery): Promise<EventPage>;
  /** Removes batches recorded more than `retentionMs` ago by the database's clock, oldest first, at most `limit`; how many. */
  prune(retentionMs: number, limit: number): Promise<number>;
}

/** The narrow store the use cases need; Postgres implements it (src/store). */
export interface LedgerStore {
  execute(command: AccountCommand, now: Date): Promise<CommandOutcome>;
  /** The account's live buckets and its overdue holds, read without a lock; null if unknown. */
  readBook(accountId: string, now: Date): Promise<AccountSnapshot | null>;
  /** Tells which accounts changed, so that what was read from them can be dropped. */
  readonly changes: ChangeFeed;
  findReservation(reservationId: string): Promise<Reservation | null>;
  /** The account a reservation belongs to (remembered: it never changes), or null if there is no such reservation. */
  locateReservation(reservationId: string): Promise<string | null>;
  accountExists(accountId: string): Promise<boolean>;
  /** A page of the account's entries; refused (READ_LIMIT_EXCEEDED) when too many listings run or one runs too long. */
  listEntries(query: EntryQuery): Promise<EntryListing>;
  /** Accounts with an overdue hold or an expired bucket that still has free credits. */
  accountsWithDueWork(now: Date, limit: number): Promise<string[]>;
  /** Applies due work to the account if no other transaction holds it; false if skipped. */
  applyDueIfUnlocked(accountId: string, now: Date): Promise<boolean>;
  pruneOperations(olderThan: Date, limit: number): Promise<number>;
  /** Writes the daily usage rows of past days of at most `limit` accounts not held elsewhere (store/usage-rollup.ts CLOSE_USAGE_DAYS); how many accounts it closed. */
  closeUsageDays(now: Date, limit: number): Promise<number>;
  /** Differences between stored buckets and holds and what the entries add up to; empty when they agree. */
  reconcile(accountId: string): Promise<Difference[]>;
  /** A usage series from the rollup over [bounds[0], bounds[last]), at most maxRows + 1 rows (one more tells it was cut). */
  usageSeries(accountId: string, bounds: readonly Date[], groupBy: ReadonlySet<UsageDimension>, maxRows: number): Promise<UsageSeriesRow[]>;
  /** The series of one dimension (or none) read from the coarser levels by a plan (domain/usage.ts `levelPlan`), in the series' order, zero rows left out. */
  leveledUsageSeries(accountId: string, plan: LevelPlan, dim: UsageDimension | null): Promise<UsageSeriesRow[]>;
  /** When the account was created, and the credits captured in each of the `days` days before the end of the account's current hour (`now`: the server's clock; 0: the latest); null for an unknown account. */
  recentConsumption(accountId: string, now: Date, days: number): Promise<{ createdAt: Date; perDay: bigint[] } | null>;
  ping(): Promise<void>;
}

export type CacheLookup =
  | { readonly kind: "claimed"; readonly token: string }
  /** The key is known: what domain/idempotency.ts decides for this request. */
  | KeyDecision
  /** Redis holds a value for the key that fails its authentication: run on Postgres, then overwrite it. */
  | { readonly kind: "untrusted" }
  | { readonly kind: "unavailable" };

/**
 * Whose keys an idempotency key is among: always an account's (a command on a reservation is
 * scoped to the reservation's account), in Redis as in Postgres. One scope, so a key means the
 * same thing in both and no two scopes' keys can meet.
 */
export interface IdempotencyScope {
  readonly kind: "account";
  readonly id: string;
}

/** The fast path of idempotency (Redis). Postgres remains the truth when it is lost or down. */
export interface IdempotencyCache {
  /** Claims the key for this request, or says what is already known about it. */
  begin(scope: IdempotencyScope, claim: IdempotencyClaim): Promise<CacheLookup>;
  /** Stores the response under the key. */
  complete(scope: IdempotencyScope, claim: IdempotencyClaim, response: Uint8Array): Promise<void>;
  /** Drops our claim (the call failed and changed nothing), so a retry runs again. */
  abandon(scope: IdempotencyScope, claim: IdempotencyClaim, token: string): Promise<void>;
  close(): Promise<void>;
}

/** A business plan to store: its terms and the account's custom top-up packs. */
export interface CustomPlanInput {
  readonly plan: Omit<Plan, "version">;
  readonly packs: readonly TopUpPack[];
}

/** Plans and packs (Postgres). Catalog plans are shared; business plans and packs belong to one account. */
export interface PlanCatalog {
  /** The latest version of every public plan. */
  listPlans(): Promise<Plan[]>;
  /** The latest version of a plan the account may choose (public, or its own business plan). */
  findPlan(planId: string, accountId: string): Promise<Plan | null>;
  /** Stores a business plan: a new version only when the terms differ. Fails if the id belongs to someone else. */
  saveCustomPlan(input: CustomPlanInput, now: Date): Promise<Result<{ plan: Plan; packs: TopUpPack[] }>>;
  findTopUpPack(accountId: string, packId: string): Promise<TopUpPack | null>;
  /** Makes the stored catalog match the given plans, adding a version for each changed plan. */
  syncCatalog(plans: readonly Omit<Plan, "version">[], now: Date): Promise<number>;
}

/** Rate card versions: the current one prices new holds; old ones price commits of holds made with them. */
export interface RateCards {
  readonly current: RateCard;
  /** A version by id (from memory, or from the database if another server stored it). */
  version(version: string): Promise<RateCard | null>;
}

/** Business pricing of accounts. */
export interface AccountPricing {
  /** The account's multiplier in permille, or null if the account does not exist. */
  get(accountId: string): Promise<number | null>;
  /** Sets it; false if the account does not exist. */
  set(accountId: string, permille: number): Promise<boolean>;
}
