import type { MikroORM } from "@mikro-orm/postgresql";
import type pg from "pg";
import type { AccountCommand, AccountSnapshot, ApplyStage, ChangeFeed, CommandOutcome, EntryListing, EntryQuery, LedgerStore, PendingCommand, WrittenAccount } from "../app/ports.js";
import { FailureError } from "../domain/errors.js";
import type { Difference } from "../domain/reconcile.js";
import type { Reservation } from "../domain/reservation.js";
import { bookFromRow, booksFromRows, loadStatement, lockStatement, nextHoldExpiry, rowsByAccount } from "./account-loader.js";
import { type BatchLocks, GroupCommit, type Settled } from "./batching.js";
import type { PostgresChangeFeed } from "./change-feed.js";
import { type AccountLocks, type BatchResult, type QueuedCommand, runCommandBatch } from "./command-batch.js";
import { ConcurrencyGate } from "./concurrency-gate.js";
import { EntryListings } from "./entry-listing.js";
import { dueWorkStatement } from "./due-work.js";
import { persistStatement } from "./persist.js";
import { inTransaction, type Query, queryOn } from "./pg.js";
import { reconcileAccount } from "./reconcile-scan.js";
import { CLOSE_USAGE_DAYS, leveledSeries, recentConsumption, usageSeries } from "./usage-rollup.js";
import { dayOf, type LevelPlan, type UsageDimension, type UsageSeriesRow } from "../domain/usage.js";
import { ReservationLocator } from "./reservation-locator.js";
import { reservationFromRow } from "./rows.js";
import { guardUnavailable, isStoreUnavailable } from "./unavailable.js";

export interface LedgerStoreOptions {
  /** Write transactions that may run at once, each on its own connection. */
  readonly writeConcurrency: number;
  /** The most commands one transaction takes. */
  readonly maxBatch: number;
  /** false: a transaction takes the commands of one account only (Citus: one shard per transaction). */
  readonly batchAcrossAccounts: boolean;
  /** Transactions take turns, and this many waiting commands (twice over) split into two (GroupCommit's `stagger`); 0: off. */
  readonly staggerFrom?: number;
  /** Told the size of each write batch. */
  readonly onBatch?: (size: number) => void;
  /** Where the store publishes the accounts it wrote (and other processes' writes arrive). */
  readonly changes: PostgresChangeFeed;
  /**
   * Connections for Reconcile, apart from the pool the hot path's writes and reads take turns
   * on (service.ts makes one of a single connection); absent: the store's pool.
   */
  readonly reconcilePool?: pg.Pool;
  /**
   * The commands' rules (app/apply.ts, wired in service.ts): the store locks, loads, calls it, and
   * persists what it returns. A parameter rather than an import, so the store holds no rule.
   */
  readonly apply: ApplyStage;
  /** How long before a bucket's expiry its CREDITS_EXPIRING notice falls due (the apply stage's setting): the sweeper looks that far ahead; absent: 0. */
  readonly expiryNoticeMs?: number;
}

/**
 * Reconciles that may wait for the one running on this server; one more is refused. Each takes
 * up to a core of Postgres for a second or so (200,000 settled holds): run one after another,
 * they never take more than that core from the hot path.
 */
const RECONCILES_WAITING = 16;
const RECONCILE_MAX_WAIT_MS = 60_000;

/**
 * How long a staggered write batch may hold the next one back while it loads. Loading takes 1–3
 * ms here under load; a batch that waits longer is waiting for a lock held elsewhere (another
 * server, a long transaction), and the other accounts' commands must not wait with it.
 */
const STAGGER_MAX_LOAD_WAIT_MS = 25;

/**
 * How long a write batch in a slot waits for an account's lock that one of this server's batches
 * held when it looked (that batch has loaded, so it only computes and commits: a few ms). Longer
 * means the lock changed hands meanwhile (another server, a long transaction): the batch starts
 * again and leaves that account out, for its parking lane, rather than hold a slot.
 */
const OWN_LOCK_WAIT_LIMIT_MS = 1000;

/**
 * How long a parking lane waits for its account's lock at a time. A lock held by another server's
 * batch comes free within milliseconds; one held longer (a long transaction) makes the lane give
 * up for now and take its turn again after the other parked accounts, so that lanes stuck behind
 * long transactions never keep the others' turn from coming.
 */
const LANE_WAIT_LIMIT_MS = 1000;

/** What a batch returns for a command it left out: never delivered (the command waits in its account's lane). */
const LEFT_OUT: Settled<never> = { ok: false, error: new Error("left out of its batch: its account's lock is held elsewhere") };

function isLockTimeout(err: unknown): boolean {
  return (err as { code?: string })?.code === "55P03";
}

function isOperationConflict(err: unknown): boolean {
  const e = err as { code?: string; constraint?: string };
  return e?.code === "23505" && e.constraint === "operations_pkey";
}

/**
 * Postgres implementation of the LedgerStore port. Commands on accounts are grouped: concurrent
 * commands share one transaction (see GroupCommit and runCommandBatch), with the accounts locked
 * in order. If a batch fails for any reason other than an unreachable database,
 * each of its commands runs again alone, so one bad command never fails its neighbours.
 */
export class PostgresLedgerStore implements LedgerStore {
  private readonly q: Query;
  private readonly writes: GroupCommit<QueuedCommand, CommandOutcome>;
  private readonly reads: GroupCommit<{ accountId: string; now: Date }, AccountSnapshot | null>;
  private readonly locator = new ReservationLocator(50_000);
  private readonly feed: PostgresChangeFeed;
  private readonly reconcilePool: pg.Pool;
  private readonly reconciles = new ConcurrencyGate({
    running: 1,
    waiting: RECONCILES_WAITING,
    maxWaitMs: RECONCILE_MAX_WAIT_MS,
    refuse: () =>
      new FailureError({ reason: "READ_LIMIT_EXCEEDED", message: "too many Reconciles are waiting on this server; retry later", metadata: { limit: "concurrency" } }),
  });
  private readonly apply: ApplyStage;
  private readonly expiryNoticeMs: number;

  constructor(
    private readonly pool: pg.Pool,
    /** The ORM, for the paged entry listing. */
    private readonly orm: MikroORM,
    /** Ids for buckets the store's due-work pass creates (subscription periods). */
    private readonly newId: () => string,
    options: LedgerStoreOptions,
  ) {
    this.q = queryOn(pool);
    this.feed = options.changes;
    this.reconcilePool = options.reconcilePool ?? pool;
    this.apply = options.apply;
    this.expiryNoticeMs = options.expiryNoticeMs ?? 0;
    this.writes = new GroupCommit({
      concurrency: options.writeConcurrency,
      maxBatch: options.maxBatch,
      acrossKeys: options.batchAcrossAccounts,
      run: (items, loaded, locks) => this.runWrites(items, loaded, locks),
      ...(options.staggerFrom ? { stagger: { splitFrom: options.staggerFrom, maxLoadWaitMs: STAGGER_MAX_LOAD_WAIT_MS } } : {}),
      onBatch: options.onBatch,
    });
    // Reads share one statement per batch too; two at once keep one batch loading while the next gathers.
    this.reads = new GroupCommit({ concurrency: 2, maxBatch: options.maxBatch, run: (items) => this.runReads(items) });
  }

  get changes(): ChangeFeed {
    return this.feed;
  }

  async execute(command: AccountCommand, now: Date): Promise<CommandOutcome> {
    let accountId: string;
    let reservationId: string | null = null;
    if ("reservationId" in command.target) {
      reservationId = command.target.reservationId;
      const found = await this.locateReservation(reservationId);
      if (found === null) {
        return { kind: "failed", failure: { reason: "RESERVATION_NOT_FOUND", message: `reservation ${reservationId} not found`, metadata: { reservation_id: reservationId } } };
      }
      accountId = found;
    } else {
      accountId = command.target.accountId;
    }
    return this.writes.submit(accountId, { command, now, accountId, reservationId });
  }

  /** The account a reservation belongs to (a fact that never changes, so it is cached). */
  async locateReservation(reservationId: string): Promise<string | null> {
    const cached = this.locator.get(reservationId);
    if (cached !== undefined) return cached;
    const rows = await guardUnavailable(() => this.q(`select account_id from reservations where reservation_id = ?::uuid`, [reservationId], "locate_reservation"));
    const accountId = (rows[0]?.["account_id"] as string | undefined) ?? null;
    if (accountId !== null) this.locator.set(reservationId, accountId);
    return accountId;
  }

  /**
   * A batch in a slot waits only for the locks this server's loaded batches hold (they come free
   * within milliseconds); an account locked by anyone else is left out, and its commands wait for
   * the lock in its parking lane, on a connection of their own, as long as it takes (in turns of
   * LANE_WAIT_LIMIT_MS when it takes longer).
   */
  private accountLocks(locks: BatchLocks): AccountLocks {
    if (locks.lane !== null) return { wait: () => true, waitLimitMs: LANE_WAIT_LIMIT_MS };
    return { wait: (accountId) => locks.heldByOther(accountId), waitLimitMs: OWN_LOCK_WAIT_LIMIT_MS };
  }

  private async runWrites(items: QueuedCommand[], loaded: (leftOut?: readonly number[]) => void, batchLocks: BatchLocks): Promise<Settled<CommandOutcome>[]> {
    const locks = this.accountLocks(batchLocks);
    const settle = (outcome: CommandOutcome | null): Settled<CommandOutcome> => (outcome === null ? LEFT_OUT : { ok: true, value: outcome });
    /** Accounts whose commands went to their lane: a later command of theirs goes there too, never ahead. */
    const leftAccounts = new Set<string>();
    const leave = (indices: readonly number[]) => {
      for (const i of indices) leftAccounts.add(items[i]!.accountId);
      loaded(indices);
    };
    try {
      return (await this.writeBatch(items, leave, locks)).map(settle);
    } catch (err) {
      const unavailable = isStoreUnavailable(err) || (err instanceof FailureError && err.failure.reason === "STORE_UNAVAILABLE");
      if (items.length === 1 || unavailable) return items.map(() => ({ ok: false, error: err }));
      // One bad command must not fail its neighbours: each runs again on its own.
      const settled: Settled<CommandOutcome>[] = [];
      for (const [i, item] of items.entries()) {
        if (leftAccounts.has(item.accountId)) {
          leave([i]); // its account's earlier commands wait in the lane: it joins them (if not there already)
          settled.push(LEFT_OUT);
          continue;
        }
        try {
          const alone = await this.writeBatch([item], (leftOut) => leave(leftOut.length > 0 ? [i] : []), locks);
          settled.push(settle(alone[0]!));
        } catch (error) {
          settled.push({ ok: false, error });
        }
      }
      return settled;
    }
  }

  private async writeBatch(items: QueuedCommand[], loaded: (leftOut: readonly number[]) => void, locks: AccountLocks): Promise<(CommandOutcome | null)[]> {
    const since = this.feed.sequence;
    let written: WrittenAccount[] = [];
    try {
      const result = await this.writeBatchOnce(items, loaded, locks);
      written = result.books.map((b) => ({ ...b, since }));
      return result.outcomes;
    } finally {
      // Before anyone is answered: readers drop these accounts (even a failed COMMIT may have
      // committed) and, after a commit, keep the books as written.
      this.feed.publish([...new Set(items.map((i) => i.accountId))], written);
    }
  }

  private async writeBatchOnce(items: QueuedCommand[], loaded: (leftOut: readonly number[]) => void, locks: AccountLocks): Promise<BatchResult> {
    return guardUnavailable(async () => {
      const run = (how: AccountLocks) => inTransaction(this.pool, (tx) => runCommandBatch(tx, items, this.apply, this.newId, loaded, how));
      let result;
      try {
        result = await run(locks);
      } catch (err) {
        // Two calls with one key on an account created by both at once: the loser replays the winner.
        if (items.length === 1 && isOperationConflict(err)) result = await run(locks);
        // A wait outlasted its limit: take what is free now and leave the rest out (for a lane: until its next turn).
        else if (isLockTimeout(err) && locks.waitLimitMs !== null) result = await run({ wait: () => false, waitLimitMs: null });
        else throw err;
      }
      for (const [reservationId, accountId] of result.newReservations) this.locator.set(reservationId, accountId);
      return result;
    });
  }

  async readBook(accountId: string, now: Date): Promise<AccountSnapshot | null> {
    return this.reads.submit(accountId, { accountId, now });
  }

  /** Many GetBalance reads in one statement (one snapshot); no lock, no transaction. */
  private async runReads(items: { accountId: string; now: Date }[]): Promise<Settled<AccountSnapshot | null>[]> {
    // One row per account, loaded as of the latest reader's time (so no reader misses a hold that fell due).
    const latest = new Map<string, Date>();
    for (const i of items) {
      const seen = latest.get(i.accountId);
      if (!seen || seen < i.now) latest.set(i.accountId, i.now);
    }
    const load = loadStatement([...latest].map(([accountId, now]) => ({ accountId, now, reservationIds: [], idempotencyKeys: [] })));
    const rows = rowsByAccount(await guardUnavailable(() => this.q(load.sql, load.params, load.name)));
    // Each reader gets its own book: a caller may apply due work to it.
    return items.map((i) => {
      const row = rows.get(i.accountId);
      return { ok: true, value: row ? { book: bookFromRow(i.accountId, row), nextHoldExpiry: nextHoldExpiry(row) } : null };
    });
  }

  async findReservation(reservationId: string): Promise<Reservation | null> {
    return guardUnavailable(async () => {
      const rows = await this.q(`select * from reservations where reservation_id = ?::uuid`, [reservationId]);
      return rows.length === 0 ? null : reservationFromRow(rows[0]!);
    });
  }

  usageSeries(accountId: string, bounds: readonly Date[], groupBy: ReadonlySet<UsageDimension>, maxRows: number): Promise<UsageSeriesRow[]> {
    return guardUnavailable(() => usageSeries(this.q, accountId, bounds, groupBy, maxRows));
  }

  leveledUsageSeries(accountId: string, plan: LevelPlan, dim: UsageDimension | null): Promise<UsageSeriesRow[]> {
    return guardUnavailable(() => leveledSeries(this.q, accountId, plan, dim));
  }

  recentConsumption(accountId: string, now: Date, days: number): Promise<{ createdAt: Date; perDay: bigint[] } | null> {
    return guardUnavailable(() => recentConsumption(this.q, accountId, now, days));
  }

  async accountExists(accountId: string): Promise<boolean> {
    return guardUnavailable(async () => (await this.q(`select 1 from accounts where account_id = ?`, [accountId])).length > 0);
  }

  /** Listings share the ORM pool with plan lookups: EntryListings bounds how much of it they take. */
  private readonly listings = new EntryListings();

  async listEntries(query: EntryQuery): Promise<EntryListing> {
    return this.listings.list(this.orm, query);
  }

  async accountsWithDueWork(now: Date, limit: number): Promise<string[]> {
    return guardUnavailable(async () => {
      const due = dueWorkStatement(now, limit, this.expiryNoticeMs);
      const rows = await this.q(due.sql, due.params);
      return rows.map((r) => r["account_id"] as string);
    });
  }

  async applyDueIfUnlocked(accountId: string, now: Date): Promise<boolean> {
    try {
      return await this.applyDueOnce(accountId, now);
    } finally {
      this.feed.publish([accountId]);
    }
  }

  private applyDueOnce(accountId: string, now: Date): Promise<boolean> {
    return guardUnavailable(() =>
      inTransaction(this.pool, async (tx) => {
        // Skip an account another transaction (a request, another server's sweeper) holds: it is being handled.
        const [locked, rows] = await tx.run([
          lockStatement([accountId], "skip-locked"),
          loadStatement([{ accountId, now, reservationIds: [], idempotencyKeys: [] }]),
        ]);
        const loaded = booksFromRows(rows!);
        if (locked!.length === 0 || !loaded.has(accountId)) return false;
        // Due work alone, through the apply stage like any command: a change record of its own, with its events.
        const settle: PendingCommand = {
          command: { target: { accountId }, createAccount: false, idempotency: null, caller: "system", action: { kind: "SettleDue", reservationId: null } },
          now,
          accountId,
        };
        const applied = this.apply([settle], loaded, new Set(), this.newId);
        const write = persistStatement(applied.books);
        if (!write) return false;
        await tx.commit([write]);
        return true;
      }),
    );
  }

  async pruneOperations(olderThan: Date, limit: number): Promise<number> {
    return guardUnavailable(async () => {
      const rows = await this.q(
        // Oldest first through operations_created: without the order the planner may scan the whole
        // table, and when nothing is old enough that reads every row (each sweep, every 5 s).
        `delete from operations where ctid in (select ctid from operations where created_at < ? order by created_at limit ?) returning 1`,
        [olderThan, limit],
      );
      return rows.length;
    });
  }

  async closeUsageDays(now: Date, limit: number): Promise<number> {
    return guardUnavailable(async () => {
      const rows = await this.q(CLOSE_USAGE_DAYS, [now, dayOf(now), limit], "close_usage_days");
      return Number(rows[0]?.["closed"] ?? 0);
    });
  }

  async reconcile(accountId: string): Promise<Difference[]> {
    return this.reconciles.run(() => guardUnavailable(() => reconcileAccount(this.reconcilePool, accountId)));
  }

  async countHeld(): Promise<number> {
    const rows = await this.q(`select count(*)::int as n from reservations where state = 'HELD'`);
    return Number(rows[0]?.["n"] ?? 0);
  }

  async ping(): Promise<void> {
    await this.q(`select 1`);
  }
}
