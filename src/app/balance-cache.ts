import type { ChangeFeed } from "./ports.js";

/** One account's balance as last read, valid until the account changes or `until` comes. */
export interface CachedBalance {
  /** The encoded balance without its as-of time, which each answer stamps anew. */
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
  /** Told whether each lookup was answered from the cache. */
  readonly onLookup?: (hit: boolean) => void;
  /** A monotonic clock in ms (tests step it). */
  readonly monotonicMs?: () => number;
}

/**
 * GetBalance answers kept per account, so that a read of an account nobody wrote since costs no
 * database round trip. An entry goes when the change feed names its account (this process's
 * writes before they are answered, other processes' through Postgres), when anything may have
 * changed (the feed was lost), when its account's next due instant comes, or after `maxAgeMs`.
 * While the feed is not live nothing is served or kept.
 *
 * A read that was running when its account changed must not store what it read: each read takes
 * a ticket (the change count when it began) and may store only if its account has not changed
 * since. Changes are remembered per account only while reads that began before them still run.
 */
export class BalanceCache {
  private readonly entries = new Map<string, { readonly value: CachedBalance; readonly storedAt: number }>();
  private changes = 0;
  private clearedAt = 0;
  private readonly changedAt = new Map<string, number>();
  /** Running reads by ticket, oldest first (tickets only grow). */
  private readonly running = new Map<number, number>();
  private readonly monotonicMs: () => number;

  constructor(
    private readonly feed: ChangeFeed,
    private readonly options: BalanceCacheOptions,
  ) {
    this.monotonicMs = options.monotonicMs ?? (() => performance.now());
    if (options.maxEntries > 0) feed.subscribe((ids) => this.changed(ids));
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

  private lookup(accountId: string, serverNow: Date): CachedBalance | undefined {
    if (!this.feed.live) return undefined;
    const entry = this.entries.get(accountId);
    if (!entry) return undefined;
    const { value } = entry;
    if (this.monotonicMs() - entry.storedAt >= this.options.maxAgeMs || serverNow.getTime() + value.clockOffsetMs >= value.until) {
      this.entries.delete(accountId);
      return undefined;
    }
    // Most recently read last: eviction takes the first.
    this.entries.delete(accountId);
    this.entries.set(accountId, entry);
    return value;
  }

  /** Call before reading an account from the store; pass the ticket to `set` and `end`. */
  begin(): number {
    const ticket = this.changes;
    this.running.set(ticket, (this.running.get(ticket) ?? 0) + 1);
    return ticket;
  }

  /** Keeps what a read found, unless its account (or anything) changed after the read began. */
  set(ticket: number, accountId: string, value: CachedBalance): void {
    if (this.options.maxEntries === 0 || !this.feed.live) return;
    if (this.clearedAt > ticket || (this.changedAt.get(accountId) ?? -1) > ticket) return;
    this.entries.delete(accountId);
    this.entries.set(accountId, { value, storedAt: this.monotonicMs() });
    if (this.entries.size > this.options.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  end(ticket: number): void {
    const left = (this.running.get(ticket) ?? 1) - 1;
    if (left > 0) this.running.set(ticket, left);
    else this.running.delete(ticket);
    if (this.running.size === 0) this.changedAt.clear();
    else {
      const oldest = this.running.keys().next().value!;
      for (const [id, at] of this.changedAt) if (at <= oldest) this.changedAt.delete(id);
    }
  }

  private changed(accountIds: readonly string[] | null): void {
    this.changes += 1;
    if (accountIds === null) {
      this.entries.clear();
      this.clearedAt = this.changes;
      return;
    }
    for (const id of accountIds) {
      this.entries.delete(id);
      if (this.running.size > 0) this.changedAt.set(id, this.changes);
    }
  }
}
