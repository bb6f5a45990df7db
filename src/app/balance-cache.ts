import type { BalanceView } from "../domain/account-book.js";
import { nextChangeAt } from "../domain/maintenance.js";
import type { ChangeFeed, WrittenAccount } from "./ports.js";

/** One account's balance as last read or written, valid until the account changes or `until` comes. */
export interface CachedBalance {
  /** The encoded balance (with the account's sequence it is the state of) without its as-of time, which each answer stamps anew. */
  readonly body: Uint8Array;
  /** The account's test-clock offset when it was read. */
  readonly clockOffsetMs: number;
  /** By the account's clock (ms): the first instant something falls due on it by itself. */
  readonly until: number;
}

export interface BalanceCacheOptions {
  /** Accounts kept, least recently read dropped first; 0 turns the cache off. */
  readonly maxEntries: number;
  /** An entry is dropped this long after its read, whatever the feed says. */
  readonly maxAgeMs: number;
  /** Encodes a balance and its account's sequence without its as-of time (for the books this process writes). */
  readonly encode: (view: BalanceView, sequence: bigint) => Uint8Array;
  /** Told whether each lookup was answered from the cache. */
  readonly onLookup?: (hit: boolean) => void;
  /** A monotonic clock in ms (tests step it). */
  readonly monotonicMs?: () => number;
}

/** How long the sequence of each account's last change is remembered: a read or write that takes longer stores nothing. */
const CHANGES_REMEMBERED_MS = 10_000;

/**
 * Bytes only: a written book's balance is encoded when it is kept, not when first read. A kept
 * view held its buckets' objects (1–2 KB an account against ~150 bytes encoded) and a write-heavy
 * run keeps tens of thousands of accounts never read; encoding each written balance costs a few
 * microseconds.
 */
interface Entry {
  readonly body: Uint8Array;
  readonly clockOffsetMs: number;
  readonly until: number;
  readonly storedAt: number;
}

/**
 * GetBalance answers kept per account, so that reading an account nobody wrote since costs no
 * database round trip. An entry goes when the change feed names its account (this process's
 * writes before they are answered, other processes' through Postgres), when anything may have
 * changed (the feed was lost), when its account's next due instant comes, or after `maxAgeMs`.
 * While the feed is not live nothing is served or kept. The books this process writes are kept
 * (encoded) as they were committed, so a read after a write needs no round trip either.
 *
 * What a read (or a write) found may be kept only if its account has not changed since the read
 * began: each takes a ticket (the feed's sequence) first, and the sequence of every account's
 * last change is remembered for CHANGES_REMEMBERED_MS.
 */
export class BalanceCache {
  private readonly entries = new Map<string, Entry>();
  /** Sequence of each account's last change, oldest first. */
  private readonly changedAt = new Map<string, { readonly sequence: number; readonly atMs: number }>();
  /** Changes up to this sequence may be forgotten. */
  private forgottenUpTo = 0;
  private clearedAt = 0;
  private readonly monotonicMs: () => number;

  constructor(
    private readonly feed: ChangeFeed,
    private readonly options: BalanceCacheOptions,
  ) {
    this.monotonicMs = options.monotonicMs ?? (() => performance.now());
    if (options.maxEntries > 0) feed.subscribe((ids, written) => this.changed(ids, written));
  }

  get size(): number {
    return this.entries.size;
  }

  /** The account's cached balance if it is still exact at `serverNow`. */
  get(accountId: string, serverNow: Date): CachedBalance | undefined {
    const found = this.lookup(accountId, serverNow);
    this.options.onLookup?.(found !== undefined);
    return found;
  }

  /** Take before reading an account from the store; pass it to `set`. */
  ticket(): number {
    return this.feed.sequence;
  }

  /** Keeps what a read found, unless its account (or anything) changed after the read began. */
  set(ticket: number, accountId: string, value: CachedBalance): void {
    if (this.mayKeep(ticket, this.changedAt.get(accountId)?.sequence)) this.put(accountId, value);
  }

  private lookup(accountId: string, serverNow: Date): CachedBalance | undefined {
    if (!this.feed.live) return undefined;
    const entry = this.entries.get(accountId);
    if (!entry) return undefined;
    if (this.monotonicMs() - entry.storedAt >= this.options.maxAgeMs || serverNow.getTime() + entry.clockOffsetMs >= entry.until) {
      this.entries.delete(accountId);
      return undefined;
    }
    const body = entry.body;
    // Most recently read last: eviction takes the first.
    this.entries.delete(accountId);
    this.entries.set(accountId, entry);
    return { body, clockOffsetMs: entry.clockOffsetMs, until: entry.until };
  }

  private mayKeep(ticket: number, lastChange: number | undefined): boolean {
    if (this.options.maxEntries === 0 || !this.feed.live) return false;
    return this.clearedAt <= ticket && this.forgottenUpTo <= ticket && (lastChange ?? -1) <= ticket;
  }

  private put(accountId: string, entry: Omit<Entry, "storedAt">): void {
    this.entries.delete(accountId);
    this.entries.set(accountId, { ...entry, storedAt: this.monotonicMs() });
    if (this.entries.size > this.options.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  private changed(accountIds: readonly string[] | null, written: readonly WrittenAccount[]): void {
    const sequence = this.feed.sequence;
    if (accountIds === null) {
      this.entries.clear();
      this.clearedAt = sequence;
      return;
    }
    const now = this.monotonicMs();
    const before = new Map(written.map((w) => [w.book.accountId, this.changedAt.get(w.book.accountId)?.sequence]));
    for (const id of accountIds) {
      this.entries.delete(id);
      this.changedAt.delete(id);
      this.changedAt.set(id, { sequence, atMs: now });
    }
    // A write's own event must not refuse its own books; any change between its start and now does.
    for (const w of written) {
      if (!this.mayKeep(w.since, before.get(w.book.accountId))) continue;
      const until = nextChangeAt(w.book, w.at, w.nextHoldExpiry)?.getTime() ?? Number.POSITIVE_INFINITY;
      this.put(w.book.accountId, { body: this.options.encode(w.book.balance(w.at), w.book.sequence), clockOffsetMs: w.book.clockOffsetMs, until });
    }
    for (const [id, change] of this.changedAt) {
      if (now - change.atMs < CHANGES_REMEMBERED_MS) break;
      this.changedAt.delete(id);
      this.forgottenUpTo = change.sequence;
    }
  }
}
