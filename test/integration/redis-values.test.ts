import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IdempotencyClaim, IdempotencyScope } from "../../src/app/ports.js";
import { RedisIdempotencyCache } from "../../src/idempotency/redis-cache.js";
import { createRedisClient, waitReady } from "../../src/idempotency/redis-client.js";
import { TEST_REDIS_URL } from "../support/env.js";
import { newAccountId, newKey } from "../support/harness.js";

/**
 * What the fast path believes of Redis: only values sealed with the server secret, for the very
 * key they were sealed for. Anything else — forged, tampered with, sealed with another secret,
 * moved from another key — is "untrusted": the call runs on Postgres and the value is replaced.
 */

const SECRET = "values-test-secret-0123456789abcdef";
const OTHER_SECRET = "another-secret-0123456789abcdefghij";
let raw: Redis;
const caches: RedisIdempotencyCache[] = [];
/** The servers' wall clock, moved by hand where a test needs a claim's deadline to pass. */
const clock = { ms: Date.now() };
const LOCK_MS = 10_000;
const untrusted: string[] = [];

beforeAll(() => {
  raw = new Redis(TEST_REDIS_URL);
});
afterAll(async () => {
  for (const cache of caches) await cache.close();
  raw?.disconnect();
});

/** A cache like a server's, on its own connection (so two of them are two servers sharing Redis). */
async function server(secret = SECRET): Promise<RedisIdempotencyCache> {
  const client = createRedisClient(TEST_REDIS_URL);
  const cache = new RedisIdempotencyCache(client, {
    ttlMs: 60_000,
    lockMs: LOCK_MS,
    secret,
    now: () => clock.ms,
    onAvailability: () => undefined,
    onUntrusted: (key) => untrusted.push(key),
  });
  caches.push(cache);
  expect(await waitReady(client, 5_000)).toBe(true);
  return cache;
}

const account = (): IdempotencyScope => ({ kind: "account", id: newAccountId("values") });
const claimOf = (method = "Reserve"): IdempotencyClaim => ({ key: newKey("k"), method, requestHash: Buffer.alloc(32, 7) });
const response = new Uint8Array([10, 20, 30, 40, 50, 60]);

/** A completed call's key and the raw value its server left in Redis. */
async function completed(cache: RedisIdempotencyCache) {
  const scope = account();
  const claim = claimOf();
  expect((await cache.begin(scope, claim)).kind).toBe("claimed");
  await cache.complete(scope, claim, response);
  const key = RedisIdempotencyCache.keyOf(scope, claim.key);
  return { scope, claim, key, value: (await raw.get(key))! };
}

describe("values sealed with the shared secret", () => {
  it("one server's completed call replays on another server with the same secret", async () => {
    const { scope, claim, value } = await completed(await server());
    expect(value).toMatch(/^D\|[0-9a-f]{64}\|[A-Za-z0-9+/=]+\|[A-Za-z0-9_-]{43}$/);
    const lookup = await (await server()).begin(scope, claim);
    expect(lookup).toEqual({ kind: "done", response });
  });

  it("another request under a sealed key is still a mismatch, and a sealed claim is still in flight", async () => {
    const a = await server();
    const { scope, claim } = await completed(a);
    expect((await a.begin(scope, { ...claim, requestHash: Buffer.alloc(32, 8) })).kind).toBe("mismatch");
    const running = claimOf();
    expect((await a.begin(scope, running)).kind).toBe("claimed");
    expect((await (await server()).begin(scope, running)).kind).toBe("in_flight");
  });
});

describe("values that fail their check are untrusted", () => {
  /** Each way of changing a genuine D value, as someone with write access to Redis could. */
  const tamperings: [string, (value: string) => string][] = [
    [
      "one response byte flipped",
      (v) => {
        const [state, hash, payload, mac] = v.split("|");
        const bytes = Buffer.from(payload!, "base64");
        bytes[2] = bytes[2]! ^ 0x01;
        return [state, hash, bytes.toString("base64"), mac].join("|");
      },
    ],
    ["the MAC cut off (the format before values were sealed)", (v) => v.split("|").slice(0, 3).join("|")],
    ["a MAC of garbage", (v) => `${v.slice(0, v.lastIndexOf("|"))}|${"A".repeat(43)}`],
    ["the state turned from D into P", (v) => `P${v.slice(1)}`],
    ["the request hash replaced", (v) => v.replace(/^D\|[0-9a-f]{64}/, `D|${"ab".repeat(32)}`)],
  ];

  it.each(tamperings)("%s: begin answers untrusted, the value is dropped, and the next call claims the key", async (_, tamper) => {
    const a = await server();
    const { scope, claim, key, value } = await completed(a);
    await raw.set(key, tamper(value));
    const b = await server();
    untrusted.length = 0;
    expect((await b.begin(scope, claim)).kind).toBe("untrusted");
    expect(untrusted).toEqual([key]);
    // Dropped (compare-and-delete), so the key is free again; completing writes a sealed value.
    expect((await b.begin(scope, claim)).kind).toBe("claimed");
    await b.complete(scope, claim, response);
    expect(await a.begin(scope, claim)).toEqual({ kind: "done", response });
  });

  it("a value sealed with another secret is a miss", async () => {
    const { scope, claim } = await completed(await server(OTHER_SECRET));
    expect((await (await server(SECRET)).begin(scope, claim)).kind).toBe("untrusted");
  });

  it("a genuine value copied under another key (another account's) is a miss there", async () => {
    const { claim, value } = await completed(await server());
    const victim = account();
    await raw.set(RedisIdempotencyCache.keyOf(victim, claim.key), value);
    expect((await (await server()).begin(victim, claim)).kind).toBe("untrusted");
  });

  it("a planted in-flight claim without an expiry does not keep the key in flight: the call runs and overwrites it", async () => {
    const a = await server();
    const scope = account();
    const claim = claimOf();
    const key = RedisIdempotencyCache.keyOf(scope, claim.key);
    await raw.set(key, `P|${claim.requestHash.toString("hex")}|forever`); // no PX: it would never expire
    const lookup = await a.begin(scope, claim);
    expect(lookup.kind).toBe("untrusted");
    await a.complete(scope, claim, response);
    expect(await a.begin(scope, claim)).toEqual({ kind: "done", response });
    expect(await raw.pttl(key)).toBeGreaterThan(0);
  });
});

describe("claims carry their deadline", () => {
  it("a genuine claim put back without its expiry is in flight until its deadline, then a miss", async () => {
    const a = await server();
    const scope = account();
    const claim = claimOf();
    const key = RedisIdempotencyCache.keyOf(scope, claim.key);
    expect((await a.begin(scope, claim)).kind).toBe("claimed");
    const genuine = (await raw.get(key))!;
    expect(genuine).toMatch(/^P\|/);
    await raw.set(key, genuine); // what someone able to write to Redis could do: no PX any more
    const b = await server();
    expect((await b.begin(scope, claim)).kind).toBe("in_flight");
    clock.ms += LOCK_MS;
    expect((await b.begin(scope, claim)).kind).toBe("untrusted");
    expect((await b.begin(scope, claim)).kind).toBe("claimed");
  });
});

describe("key namespaces", () => {
  it("every key is an account's, and ids cannot forge the layout", () => {
    const id = "6f1c1f2e-8d1a-4c1e-9e55-3c1c2f7b9a10";
    expect(RedisIdempotencyCache.keyOf({ kind: "account", id }, "k")).toBe(`credit:idem:{${id}}:k`);
    // Account "x}:y" with key "z" and account "x" with key "y}:z" would share a key if "}" were kept.
    const a = RedisIdempotencyCache.keyOf({ kind: "account", id: "x}:y" }, "z");
    const b = RedisIdempotencyCache.keyOf({ kind: "account", id: "x" }, "y}:z");
    expect(a).not.toBe(b);
    expect(a).toBe("credit:idem:{x%7D:y}:z");
    expect(RedisIdempotencyCache.keyOf({ kind: "account", id: "x%7D:y" }, "z")).toBe("credit:idem:{x%257D:y}:z");
    // An account literally named "r:{…" (the old reservation namespace) is an account like any other.
    expect(RedisIdempotencyCache.keyOf({ kind: "account", id: `r:{${id}` }, "k")).toBe(`credit:idem:{r:{${id}}:k`);
  });
});
