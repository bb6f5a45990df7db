import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { BalanceCache, type CachedBalance } from "../../src/app/balance-cache.js";
import type { ChangeFeed, WrittenAccount } from "../../src/app/ports.js";
import { AccountBook, type BalanceView } from "../../src/domain/account-book.js";
import { MAX_BALANCE_BUCKETS } from "../../src/domain/limits.js";
import { GetBalanceResponseSchema } from "../../src/gen/credit/v1/credit_service_pb.js";
import { getBalanceEncoding } from "../../src/rpc/balance-encoding.js";
import { changePayloads } from "../../src/store/change-feed.js";
import { balance } from "../../src/rpc/encode.js";

/** A change feed the test drives: `change(ids)` as a write would, `lose()` / `regain()` as the connection would. */
class TestFeed implements ChangeFeed {
  live = true;
  sequence = 0;
  private listeners: ((ids: readonly string[] | null, written: readonly WrittenAccount[]) => void)[] = [];
  subscribe(listener: (ids: readonly string[] | null, written: readonly WrittenAccount[]) => void): void {
    this.listeners.push(listener);
  }
  change(ids: readonly string[] | null, written: readonly WrittenAccount[] = []): void {
    this.sequence += 1;
    for (const l of this.listeners) l(ids, written);
  }
  lose(): void {
    this.live = false;
    this.change(null);
  }
  regain(): void {
    this.live = true;
    this.change(null);
  }
}

const NOW = new Date("2030-01-15T12:00:00Z");
const entry = (tag: number, until = Number.POSITIVE_INFINITY, clockOffsetMs = 0): CachedBalance => ({ body: new Uint8Array([tag]), clockOffsetMs, until });

function setup(maxEntries = 10, maxAgeMs = 30_000) {
  const feed = new TestFeed();
  let mono = 0;
  const lookups: boolean[] = [];
  const encoded: BalanceView[] = [];
  const sequences: bigint[] = [];
  const encode = (view: BalanceView, sequence: bigint) => {
    encoded.push(view);
    sequences.push(sequence);
    return new Uint8Array([Number(view.available)]);
  };
  const cache = new BalanceCache(feed, { maxEntries, maxAgeMs, encode, monotonicMs: () => mono, onLookup: (hit) => lookups.push(hit) });
  /** A read that stores what it found, as GetBalance does. */
  const store = (id: string, value: CachedBalance) => cache.set(cache.ticket(), id, value);
  return { feed, cache, store, lookups, encoded, sequences, step: (ms: number) => (mono += ms) };
}

describe("BalanceCache", () => {
  it("answers a stored account until the feed names it", () => {
    const { feed, cache, store, lookups } = setup();
    expect(cache.get("a", NOW)).toBeUndefined();
    store("a", entry(1));
    store("b", entry(2));
    expect(cache.get("a", NOW)?.body).toEqual(new Uint8Array([1]));
    feed.change(["a"]);
    expect(cache.get("a", NOW)).toBeUndefined();
    expect(cache.get("b", NOW)?.body).toEqual(new Uint8Array([2]));
    expect(lookups).toEqual([false, true, false, true]);
  });

  it("keeps nothing a read found if its account changed while the read ran", () => {
    const { feed, cache } = setup();
    const ticket = cache.ticket();
    feed.change(["a"]); // a write committed after the read began: the read may have seen the old state
    cache.set(ticket, "a", entry(1));
    cache.set(ticket, "b", entry(2)); // another account: unaffected
    expect(cache.get("a", NOW)).toBeUndefined();
    expect(cache.get("b", NOW)).toBeDefined();
  });

  it("keeps what a read found when the change came before the read began", () => {
    const { feed, cache } = setup();
    feed.change(["a"]);
    cache.set(cache.ticket(), "a", entry(1));
    expect(cache.get("a", NOW)).toBeDefined();
  });

  it("forgets changes after a while, and then refuses reads that began before they were forgotten", () => {
    const { feed, cache, step } = setup(10, 60_000);
    const slow = cache.ticket();
    feed.change(["a"]);
    step(10_001);
    feed.change(["b"]); // prunes the change of a
    cache.set(slow, "a", entry(1));
    expect(cache.get("a", NOW)).toBeUndefined();
    cache.set(cache.ticket(), "a", entry(2));
    expect(cache.get("a", NOW)?.body).toEqual(new Uint8Array([2]));
  });

  it("serves and keeps nothing while the feed is not live, and starts afresh when it is back", () => {
    const { feed, cache, store } = setup();
    store("a", entry(1));
    const ticket = cache.ticket();
    feed.lose();
    expect(cache.get("a", NOW)).toBeUndefined();
    store("a", entry(2));
    expect(cache.get("a", NOW)).toBeUndefined();
    feed.regain();
    cache.set(ticket, "a", entry(3)); // began before the loss: it may have missed a change
    expect(cache.get("a", NOW)).toBeUndefined();
    store("a", entry(4));
    expect(cache.get("a", NOW)?.body).toEqual(new Uint8Array([4]));
  });

  it("drops an entry at its account's next due instant, by the account's own clock", () => {
    const { cache, store } = setup();
    const until = NOW.getTime() + 1000;
    store("plain", entry(1, until));
    store("ahead", entry(2, until, 600)); // a test clock 600 ms ahead
    expect(cache.get("plain", new Date(until - 1))).toBeDefined();
    expect(cache.get("plain", new Date(until))).toBeUndefined();
    expect(cache.get("ahead", new Date(until - 601))).toBeDefined();
    expect(cache.get("ahead", new Date(until - 600))).toBeUndefined();
  });

  it("drops an entry after the maximum age", () => {
    const { cache, store, step } = setup(10, 5000);
    store("a", entry(1));
    step(4999);
    expect(cache.get("a", NOW)).toBeDefined();
    step(1);
    expect(cache.get("a", NOW)).toBeUndefined();
  });

  it("evicts the least recently read account beyond its size", () => {
    const { cache, store } = setup(2);
    store("a", entry(1));
    store("b", entry(2));
    expect(cache.get("a", NOW)).toBeDefined(); // a is now the most recent
    store("c", entry(3));
    expect(cache.size).toBe(2);
    expect(cache.get("b", NOW)).toBeUndefined();
    expect(cache.get("a", NOW)).toBeDefined();
    expect(cache.get("c", NOW)).toBeDefined();
  });

  it("with size 0 keeps nothing", () => {
    const { cache, store } = setup(0);
    store("a", entry(1));
    expect(cache.get("a", NOW)).toBeUndefined();
    expect(cache.size).toBe(0);
  });
});

describe("BalanceCache: the books this process writes", () => {
  const book = (id: string, credits: bigint, expiresAt: Date | null = null) =>
    new AccountBook(id, [{ id: `${id}-b`, accountId: id, kind: "ADJUSTMENT", granted: credits, remaining: credits, held: 0n, validFrom: NOW, expiresAt, sourceRef: "adj", createdAt: NOW }], []);
  const written = (b: AccountBook, since: number, nextHoldExpiry: Date | null = null): WrittenAccount => ({ book: b, at: NOW, nextHoldExpiry, since });

  it("keeps a committed book encoded once, when it is kept (bytes, not the book's objects), and serves those bytes", () => {
    const { feed, cache, encoded } = setup();
    const since = feed.sequence;
    feed.change(["a"], [written(book("a", 7n), since)]);
    expect(encoded.map((v) => v.available)).toEqual([7n]);
    expect(cache.get("a", NOW)?.body).toEqual(new Uint8Array([7]));
    expect(cache.get("a", NOW)?.body).toEqual(new Uint8Array([7]));
    expect(encoded.map((v) => v.available)).toEqual([7n]);
  });

  it("encodes a committed book's balance with that same book's sequence", () => {
    const { feed, cache, sequences } = setup();
    const b = book("a", 7n);
    b.sequence = 41n;
    feed.change(["a"], [written(b, feed.sequence)]);
    b.sequence = 42n; // changed after the commit was told: the kept balance still pairs with what was committed
    expect(cache.get("a", NOW)?.body).toEqual(new Uint8Array([7]));
    expect(sequences).toEqual([41n]);
  });

  it("does not keep a book if its account changed after the write began (another server's commit)", () => {
    const { feed, cache } = setup();
    const since = feed.sequence;
    feed.change(["a"]); // told before this process's own commit was
    feed.change(["a", "b"], [written(book("a", 7n), since), written(book("b", 9n), since)]);
    expect(cache.get("a", NOW)).toBeUndefined();
    expect(cache.get("b", NOW)?.body).toEqual(new Uint8Array([9]));
  });

  it("a book ends at its account's next due instant", () => {
    const { feed, cache } = setup();
    const expires = new Date(NOW.getTime() + 5000);
    feed.change(["a", "h"], [written(book("a", 7n, expires), feed.sequence), written(book("h", 3n), feed.sequence, new Date(NOW.getTime() + 2000))]);
    expect(cache.get("a", new Date(expires.getTime() - 1))).toBeDefined();
    expect(cache.get("a", expires)).toBeUndefined();
    expect(cache.get("h", new Date(NOW.getTime() + 1999))).toBeDefined();
    expect(cache.get("h", new Date(NOW.getTime() + 2000))).toBeUndefined();
  });

  it("keeps nothing written while the feed is not live, or from before it was lost", () => {
    const { feed, cache } = setup();
    const since = feed.sequence;
    feed.lose();
    feed.change(["a"], [written(book("a", 7n), since)]);
    feed.regain();
    feed.change(["b"], [written(book("b", 7n), since)]); // began before the loss
    expect(cache.get("a", NOW)).toBeUndefined();
    expect(cache.get("b", NOW)).toBeUndefined();
  });
});

describe("getBalanceEncoding", () => {
  it("a body stamped with its time is byte for byte the whole response", () => {
    const book = new AccountBook("acct-1", [
      { id: "b1", accountId: "acct-1", kind: "TOP_UP", granted: 10n, remaining: 7n, held: 2n, validFrom: NOW, expiresAt: new Date("2030-03-15T12:00:00Z"), sourceRef: "pay", createdAt: NOW },
      { id: "b2", accountId: "acct-1", kind: "ADJUSTMENT", granted: 2n ** 40n, remaining: 2n ** 40n, held: 0n, validFrom: NOW, expiresAt: null, sourceRef: "adj", createdAt: NOW },
    ], []);
    // Fields come on both sides of as_of once the bucket list is cut short (bucket_count, buckets_truncated).
    const many = new AccountBook(
      "acct-2",
      Array.from({ length: MAX_BALANCE_BUCKETS + 5 }, (_, i) => ({
        id: `b${i}`, accountId: "acct-2", kind: "ADJUSTMENT" as const, granted: 5n, remaining: 5n, held: 0n, validFrom: NOW, expiresAt: null, sourceRef: "adj", createdAt: NOW,
      })),
      [],
    );
    // Sequences: none yet (0, not encoded), one-byte and multi-byte varints, the int64 maximum.
    for (const b of [book, many, new AccountBook("acct-3", [], [])]) {
      for (const asOf of [NOW, new Date(NOW.getTime() + 123_456), new Date(0)]) {
        for (const sequence of [0n, 1n, 300n, 2n ** 63n - 1n]) {
          const view = b.balance(asOf);
          const whole = toBinary(GetBalanceResponseSchema, create(GetBalanceResponseSchema, { balance: balance(view), sequence }));
          const stamped = getBalanceEncoding.stamp(getBalanceEncoding.body(view, sequence), asOf);
          expect(stamped).toEqual(whole);
          expect(fromBinary(GetBalanceResponseSchema, stamped).sequence).toBe(sequence);
        }
      }
    }
    expect(many.balance(NOW)).toMatchObject({ bucketCount: MAX_BALANCE_BUCKETS + 5, available: 5n * BigInt(MAX_BALANCE_BUCKETS + 5) });
  });
});

describe("changePayloads", () => {
  it("splits account ids into NOTIFY payloads under the limit, never splitting an id", () => {
    const ids = Array.from({ length: 300 }, (_, i) => `account-${i}-${"x".repeat(i % 40)}`);
    const payloads = changePayloads(ids, 1000);
    expect(payloads.length).toBeGreaterThan(1);
    expect(payloads.every((p) => p.length <= 1000)).toBe(true);
    expect(payloads.flatMap((p) => p.split(" "))).toEqual(ids);
    expect(changePayloads([])).toEqual([]);
  });
});
