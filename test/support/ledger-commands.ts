/**
 * Commands and probes for tests of the ledger store's write path against the real Postgres
 * (PostgresLedgerStore built directly, no server, no Redis). Every command here is a real
 * AccountCommand (data) run by the real apply stage (src/app/apply.ts) and its rules on the books
 * the store loads; answers are encoded as JSON (TEST_ANSWERS) so tests can read them. A test may
 * wrap one command's rule (withRun) to count its runs or to play a bug.
 */
import { createHash, randomUUID } from "node:crypto";
import type { MikroORM } from "@mikro-orm/postgresql";
import type pg from "pg";
import { expect } from "vitest";
import { encodeEvent } from "../../src/rpc/event-encoding.js";
import { type ActionRunner, createApplyStage, runAction } from "../../src/app/apply.js";
import type { Action } from "../../src/app/commands.js";
import type { AccountCommand, AnswerEncoders, ApplyStage, CommandOutcome, IdempotencyClaim } from "../../src/app/ports.js";
import type { AccountBook } from "../../src/domain/account-book.js";
import type { Result } from "../../src/domain/errors.js";
import { PostgresChangeFeed } from "../../src/store/change-feed.js";
import { PostgresLedgerStore } from "../../src/store/ledger-store.js";
import { listenerClient } from "../../src/store/pg.js";
import { TEST_DATABASE_URL } from "./env.js";

export const HOUR = 3_600_000;

export function json(value: Record<string, unknown>): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)));
}

/** Answers as JSON, of what the tests read. */
export const TEST_ANSWERS: AnswerEncoders = {
  Reserve: (r) => json({ reservationId: r.reservation.id, held: r.reservation.heldAmount, accountHeld: r.balance.held, available: r.balance.available }),
  Commit: (r) => json({ state: r.reservation.status, available: r.balance.available }),
  Release: (r) => json({ state: r.reservation.status, available: r.balance.available }),
  ExtendReservation: (r) => json({ reservationId: r.reservation.id, expiresAt: r.reservation.expiresAt.toISOString() }),
  PurchaseTopUp: (g) => json({ bucketId: g.bucket.id, available: g.balance.available }),
  AdjustCredits: (g) => json({ bucketId: g.bucket.id, available: g.balance.available }),
  ChangePlan: (c) => json({ change: c.change.kind, available: c.balance.available }),
  AdvanceTestClock: (c) => json({ at: c.now.toISOString() }),
  SetBalanceAlert: (a) => json({ state: a.alert.state, threshold: a.alert.thresholdCredits, available: a.balance.available }),
  SetConcurrencyLimit: (v) => json({ member: v.limit.memberId, open: v.limit.openHolds, held: v.limit.heldCredits }),
  SetSpendLimit: (v) => json({ member: v.limit.memberId, period: v.limit.period, used: v.limit.used }),
  RemoveSpendLimit: (v) => json({ member: v.removed.memberId, period: v.removed.period }),
  SetAutoTopUp: (v) => json({ state: v.rule.state, outstanding: v.rule.outstanding?.requestId ?? null }),
  CompleteAutoTopUp: (v) => json({ requestId: v.request.requestId, bucketId: v.bucket?.id ?? null, available: v.balance.available }),
  FailAutoTopUp: (v) => json({ requestId: v.request.requestId, state: v.rule.state }),
};

/** A command's own rule, in place of its action's: `real` runs the action's rule. */
export type TestRun = (book: AccountBook, now: Date, real: () => Result<unknown>) => Result<unknown>;

const runs = new WeakMap<Action, TestRun>();

/** The command, its rule replaced by `run` (which may call the real one). */
export function withRun(command: AccountCommand, run: TestRun): AccountCommand {
  const action = { ...command.action };
  runs.set(action, run);
  return { ...command, action };
}

const testRunner: ActionRunner = (book, action, now, newId) => {
  const real = () => runAction(book, action, now, newId);
  const own = runs.get(action);
  return own ? own(book, now, real) : real();
};

/** The real apply stage with JSON answers and the rules withRun gave. */
export const TEST_APPLY: ApplyStage = createApplyStage(TEST_ANSWERS, { run: testRunner, events: encodeEvent });


export interface Batch {
  readonly size: number;
  /** How many command run() calls of this store had happened when the batch started. */
  readonly runsBefore: number;
}

export interface Probe {
  readonly store: PostgresLedgerStore;
  readonly batches: Batch[];
  /** Counts a run() call of a command submitted to this store. */
  ran(): void;
  /** run() calls counted so far. */
  runs(): number;
}

export interface StoreOptions {
  readonly writeConcurrency: number;
  readonly maxBatch: number;
  readonly batchAcrossAccounts?: boolean;
  readonly staggerFrom?: number;
}

/** A store on the pool whose batches (and their commands' run() calls) are counted. */
export function makeProbe(on: pg.Pool, orm: MikroORM, options: StoreOptions): Probe {
  const batches: Batch[] = [];
  let runs = 0;
  // Built as a variable (not a literal) so the store's option type may grow without touching this file.
  const storeOptions = {
    batchAcrossAccounts: true,
    ...options,
    onBatch: (size: number) => batches.push({ size, runsBefore: runs }),
    apply: TEST_APPLY,
    changes: new PostgresChangeFeed({ connect: () => listenerClient(TEST_DATABASE_URL), retryMs: 1000, checkMs: 2000, checkTimeoutMs: 1000 }),
  };
  const store = new PostgresLedgerStore(on, orm, randomUUID, storeOptions);
  return { store, batches, ran: () => (runs += 1), runs: () => runs };
}

export const sizes = (p: Probe) => p.batches.map((b) => b.size);
export const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

export function newAccount(prefix = "gc"): string {
  return `${prefix}-${randomUUID()}`;
}

export function hash(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

export function claim(key: string, request: string, method = "Reserve"): IdempotencyClaim {
  return { key, method, requestHash: hash(request) };
}

/** AdjustCredits as src/app/grants.ts builds it: creates the account and grants an ADJUSTMENT bucket. */
export function adjustCommand(accountId: string, amount: bigint, caller = "funder"): AccountCommand {
  return {
    target: { accountId },
    createAccount: true,
    idempotency: claim(`fund-${randomUUID()}`, `fund:${accountId}:${amount}`, "AdjustCredits"),
    caller,
    action: { kind: "AdjustCredits", bucketId: randomUUID(), amount, expiresAt: null, reason: "group-commit test", actor: caller },
  };
}

/** Funds each account with one ADJUSTMENT bucket, through `funder`. */
export async function fundAccounts(funder: PostgresLedgerStore, accountIds: readonly string[], amount: bigint): Promise<void> {
  const outcomes = await Promise.all(accountIds.map((id) => funder.execute(adjustCommand(id, amount), new Date())));
  expect(outcomes.map((o) => o.kind)).toEqual(accountIds.map(() => "applied"));
}

export interface ReserveOptions {
  readonly key?: string;
  /** The request text hashed into the claim (defaults to one unique per call). */
  readonly request?: string;
  readonly caller?: string;
  readonly reservationId?: string;
  readonly probe?: Probe;
  /** Runs after the domain reserve (to simulate a bug after the book was already changed). */
  readonly after?: (book: AccountBook) => void;
  readonly metadata?: Readonly<Record<string, string>>;
}

/** Reserve as src/app/holds.ts builds it (raw amount). */
export function reserveCommand(accountId: string, amount: bigint, o: ReserveOptions = {}): AccountCommand & { reservationId: string } {
  const reservationId = o.reservationId ?? randomUUID();
  const key = o.key ?? `res-${randomUUID()}`;
  const command: AccountCommand = {
    target: { accountId },
    createAccount: false,
    idempotency: claim(key, o.request ?? `reserve:${accountId}:${amount}:${randomUUID()}`),
    caller: o.caller ?? "gc-test",
    action: { kind: "Reserve", reservationId, cost: { amount }, ttlMs: HOUR, metadata: o.metadata ?? { test: "group-commit" }, memberId: "" },
  };
  const counted = o.probe || o.after ? withRun(command, (book, _now, real) => {
    o.probe?.ran();
    const result = real();
    o.after?.(book);
    return result;
  }) : command;
  return { ...counted, reservationId };
}

/** Commit or Release as src/app/holds.ts builds them: targeted by reservation id only. */
export function settleCommand(
  reservationId: string,
  how: { commit: bigint } | { release: true },
  probe?: { runs: number },
): AccountCommand {
  const command: AccountCommand = {
    target: { reservationId },
    createAccount: false,
    idempotency: claim(`settle-${randomUUID()}`, `settle:${reservationId}:${JSON.stringify(how, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v))}`, "Commit"),
    caller: "gc-settler",
    action: "commit" in how
      ? { kind: "Commit", reservationId, actual: { amount: how.commit } }
      : { kind: "Release", reservationId, reason: "CANCELLED", detail: "test" },
  };
  if (!probe) return command;
  return withRun(command, (_book, _now, real) => {
    probe.runs += 1;
    return real();
  });
}

export async function queryRows<T extends Record<string, unknown>>(pool: pg.Pool, text: string, params: unknown[] = []): Promise<T[]> {
  return (await pool.query(text, params)).rows as T[];
}

/** The account's held and available credits, as `reader` reads them. */
export async function balanceOf(reader: PostgresLedgerStore, accountId: string): Promise<{ held: bigint; available: bigint }> {
  const book = (await reader.readBook(accountId, new Date()))?.book;
  expect(book).toBeDefined();
  return { held: book!.held(), available: book!.available(new Date()) };
}

export function failureOf(outcome: CommandOutcome): string | null {
  return outcome.kind === "failed" ? outcome.failure.reason : null;
}

