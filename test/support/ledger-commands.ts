/**
 * Commands and probes for tests of the ledger store's write path against the real Postgres
 * (PostgresLedgerStore built directly, no server, no Redis). Every command here is a real
 * AccountCommand running the real domain functions (reserve / commit / release /
 * grantAdjustment) on the books the store loads.
 */
import { createHash, randomUUID } from "node:crypto";
import type { MikroORM } from "@mikro-orm/postgresql";
import type pg from "pg";
import { expect } from "vitest";
import type { AccountCommand, CommandOutcome, IdempotencyClaim } from "../../src/app/ports.js";
import type { AccountBook } from "../../src/domain/account-book.js";
import type { Bucket } from "../../src/domain/bucket.js";
import { grantAdjustment } from "../../src/domain/grants.js";
import { commit as commitHold, release as releaseHold, reserve as reserveHold, type Settled } from "../../src/domain/holds.js";
import type { Reservation } from "../../src/domain/reservation.js";
import { PostgresChangeFeed } from "../../src/store/change-feed.js";
import { PostgresLedgerStore } from "../../src/store/ledger-store.js";
import { listenerClient } from "../../src/store/pg.js";
import { TEST_DATABASE_URL } from "./env.js";

export const HOUR = 3_600_000;


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

export function json(value: Record<string, unknown>): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)));
}

/** AdjustCredits as src/app/grants.ts builds it: creates the account and grants an ADJUSTMENT bucket. */
export function adjustCommand(accountId: string, amount: bigint, caller = "funder"): AccountCommand<Bucket> {
  const bucketId = randomUUID();
  return {
    target: { accountId },
    createAccount: true,
    idempotency: claim(`fund-${randomUUID()}`, `fund:${accountId}:${amount}`, "AdjustCredits"),
    caller,
    run: (book, at) => grantAdjustment(book, { bucketId, amount, expiresAt: null, reason: "group-commit test", actor: caller }, at),
    encode: (bucket, book, at) => json({ bucketId: bucket.id, available: book.available(at) }),
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
}

/** Reserve as src/app/holds.ts builds it (raw amount). */
export function reserveCommand(accountId: string, amount: bigint, o: ReserveOptions = {}): AccountCommand<Reservation> & { reservationId: string } {
  const reservationId = o.reservationId ?? randomUUID();
  const key = o.key ?? `res-${randomUUID()}`;
  return {
    reservationId,
    target: { accountId },
    createAccount: false,
    idempotency: claim(key, o.request ?? `reserve:${accountId}:${amount}:${randomUUID()}`),
    caller: o.caller ?? "gc-test",
    run: (book, now) => {
      o.probe?.ran();
      const result = reserveHold(book, { reservationId, amount, ttlMs: HOUR, metadata: { test: "group-commit" } }, now);
      o.after?.(book);
      return result;
    },
    encode: (reservation, book, now) =>
      json({ reservationId: reservation.id, held: reservation.heldAmount, accountHeld: book.held(), available: book.available(now) }),
  };
}

/** Commit or Release as src/app/holds.ts builds them: targeted by reservation id only. */
export function settleCommand(
  reservationId: string,
  how: { commit: bigint } | { release: true },
  probe?: { runs: number },
): AccountCommand<Settled> {
  return {
    target: { reservationId },
    createAccount: false,
    idempotency: claim(`settle-${randomUUID()}`, `settle:${reservationId}:${JSON.stringify(how, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v))}`, "Commit"),
    caller: "gc-settler",
    run: (book, now) => {
      if (probe) probe.runs += 1;
      const reservation = book.reservation(reservationId);
      if (!reservation) throw new Error(`reservation ${reservationId} was not loaded`);
      return "commit" in how ? commitHold(book, reservation, how.commit, now) : releaseHold(book, reservation, "CANCELLED", "test", now);
    },
    encode: (settled, book, now) => json({ state: settled.reservation.status, available: book.available(now) }),
  };
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

export function failureOf(outcome: CommandOutcome<unknown>): string | null {
  return outcome.kind === "failed" ? outcome.failure.reason : null;
}

