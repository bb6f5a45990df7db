import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { BalanceCache, type CachedBalance } from "../../src/app/balance-cache.js";
import type { ChangeFeed } from "../../src/app/ports.js";
import { AccountBook } from "../../src/domain/account-book.js";
import { GetBalanceResponseSchema } from "../../src/gen/credit/v1/credit_service_pb.js";
import { getBalanceEncoding } from "../../src/rpc/balance-encoding.js";
import { changePayloads } from "../../src/store/change-feed.js";
import { balance } from "../../src/rpc/encode.js";

/** A change feed the test drives: `change(ids)` as a write would, `lose()` / `regain()` as the connection would. */
class TestFeed implements ChangeFeed {
  live = true;
  private listeners: ((ids: readonly string[] | null) => void)[] = [];
  subscribe(listener: (ids: readonly string[] | null) => void): void {
    this.listeners.push(listener);
  }
  change(ids: readonly string[] | null): void {
    for (const l of this.listeners) l(ids);
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
  const cache = new BalanceCache(feed, { maxEntries, maxAgeMs, monotonicMs: () => mono, onLookup: (hit) => lookups.push(hit) });
  /** A read that stores what it found, as GetBalance does. */
  const store = (id: string, value: CachedBalance) => {
    const ticket = cache.begin();
    cache.set(ticket, id, value);
    cache.end(ticket);
  };
  return { feed, cache, store, lookups, step: (ms: number) => (mono += ms) };
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
    const ticket = cache.begin();
    feed.change(["a"]); // a write committed after the read began: the read may have seen the old state
    cache.set(ticket, "a", entry(1));
    cache.set(ticket, "b", entry(2)); // another account: unaffected
    cache.end(ticket);
    expect(cache.get("a", NOW)).toBeUndefined();
    expect(cache.get("b", NOW)).toBeDefined();
  });

  it("keeps what a read found when the change came before the read began", () => {
    const { feed, cache } = setup();
    const older = cache.begin(); // still running: the change is remembered for it
    feed.change(["a"]);
    const ticket = cache.begin();
    cache.set(ticket, "a", entry(1));
    cache.end(ticket);
    cache.end(older);
    expect(cache.get("a", NOW)).toBeDefined();
  });

  it("serves and keeps nothing while the feed is not live, and starts afresh when it is back", () => {
    const { feed, cache, store } = setup();
    store("a", entry(1));
    const ticket = cache.begin();
    feed.lose();
    expect(cache.get("a", NOW)).toBeUndefined();
    store("a", entry(2));
    expect(cache.get("a", NOW)).toBeUndefined();
    feed.regain();
    cache.set(ticket, "a", entry(3)); // began before the loss: it may have missed a change
    cache.end(ticket);
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

describe("getBalanceEncoding", () => {
  it("a body stamped with its time is byte for byte the whole response", () => {
    const book = new AccountBook("acct-1", [
      { id: "b1", accountId: "acct-1", kind: "TOP_UP", granted: 10n, remaining: 7n, held: 2n, validFrom: NOW, expiresAt: new Date("2030-03-15T12:00:00Z"), sourceRef: "pay", createdAt: NOW },
      { id: "b2", accountId: "acct-1", kind: "ADJUSTMENT", granted: 2n ** 40n, remaining: 2n ** 40n, held: 0n, validFrom: NOW, expiresAt: null, sourceRef: "adj", createdAt: NOW },
    ], []);
    for (const asOf of [NOW, new Date(NOW.getTime() + 123_456), new Date(0)]) {
      const view = book.balance(asOf);
      const whole = toBinary(GetBalanceResponseSchema, create(GetBalanceResponseSchema, { balance: balance(view) }));
      expect(getBalanceEncoding.stamp(getBalanceEncoding.body(view), asOf)).toEqual(whole);
    }
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
