import { randomUUID } from "node:crypto";
import type { CacheLookup, IdempotencyCache, IdempotencyClaim, IdempotencyScope } from "../app/ports.js";
import { decideKey, type KnownKey } from "../domain/idempotency.js";
import { CircuitBreaker } from "./circuit-breaker.js";
import { probeRedis, type RedisConnection } from "./redis-client.js";
import { type StoredValue, ValueSigner } from "./signed-values.js";

/** When the fast path gives up on Redis and how it finds it again (see CircuitBreaker). */
export interface RedisBreakerSettings {
  /** Consecutive failed commands (timeouts or errors) that make every call skip Redis. */
  readonly failureThreshold: number;
  /** While Redis is skipped, a PING (to every master of a cluster) this often… */
  readonly probeIntervalMs: number;
  /** …that must answer within this long to bring the fast path back. */
  readonly probeTimeoutMs: number;
}

/**
 * Three failures in a row: one slow answer is not an outage, three are — each costs a caller up
 * to the 500 ms command timeout, so a hung Redis costs at most three such waits per server (and
 * whatever calls were already waiting) before every call runs on Postgres alone. A probe every
 * second with 250 ms to answer brings the fast path back within about a second of Redis answering.
 */
export const REDIS_BREAKER: RedisBreakerSettings = { failureThreshold: 3, probeIntervalMs: 1000, probeTimeoutMs: 250 };

export interface RedisCacheOptions {
  /** How long a completed call's response is kept (the idempotency window). */
  readonly ttlMs: number;
  /** How long an in-flight claim lives if its owner dies before completing. */
  readonly lockMs: number;
  /** Authenticates every value stored (IDEMPOTENCY_SECRET); servers sharing Redis must share it. */
  readonly secret: string;
  /** Wall time in ms: a claim carries its deadline (now + lockMs), sealed, and is void after it. */
  readonly now: () => number;
  readonly breaker?: RedisBreakerSettings;
  /** Told when the fast path is given up (Redis down or hung) and when it is back. */
  readonly onAvailability: (available: boolean, err?: unknown) => void;
  /** Told each time a lookup falls back to Postgres alone. */
  readonly onFallback?: () => void;
  /** Told of a value that fails its check (forged, tampered, sealed with another secret, a claim past its deadline). */
  readonly onUntrusted?: (redisKey: string) => void;
}

/** Deletes the key only if it still holds the given value (our own claim, or a value found untrusted). */
const DELETE_IF_UNCHANGED = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

/** `}` ends a Redis Cluster hash tag and `%` escapes: an id never carries either into the key. */
const escapeId = (id: string) => id.replace(/[%}]/g, (c) => (c === "%" ? "%25" : "%7D"));

/**
 * The idempotency fast path in Redis. Values are sealed by ValueSigner: `P|<hash>|<token>@<deadline
 * ms>|<mac>` while a call runs, then `D|<hash>|<base64 response>|<mac>`; one that does not verify,
 * or a claim past its deadline (a copy put back without its expiry), is ignored (Postgres
 * decides) and overwritten. Keys are hash-tagged by account so an account's keys
 * live on one Redis Cluster slot. Every Redis error is absorbed: the answer becomes
 * "unavailable" and the Postgres operation record decides; after a few in a row, or at once when
 * the connection is down, a circuit breaker skips Redis until a background probe finds it again.
 */
export class RedisIdempotencyCache implements IdempotencyCache {
  private readonly signer: ValueSigner;
  private readonly breaker: CircuitBreaker;

  constructor(
    private readonly redis: RedisConnection,
    private readonly options: RedisCacheOptions,
  ) {
    this.signer = new ValueSigner(options.secret);
    const settings = options.breaker ?? REDIS_BREAKER;
    this.breaker = new CircuitBreaker({
      failureThreshold: settings.failureThreshold,
      probeIntervalMs: settings.probeIntervalMs,
      probe: () => probeRedis(redis, settings.probeTimeoutMs),
      onChange: (open, err) => options.onAvailability(!open, err),
    });
  }

  /**
   * The Redis key of an idempotency key: `credit:idem:{<account>}:<key>`, hash-tagged by the
   * account (every key is an account's, also a Commit's or Release's: one scope, as in Postgres).
   */
  static keyOf(scope: IdempotencyScope, key: string): string {
    return `credit:idem:{${escapeId(scope.id)}}:${key}`;
  }

  /** The Redis key of an account's idempotency key. */
  static key(accountId: string, key: string): string {
    return RedisIdempotencyCache.keyOf({ kind: "account", id: accountId }, key);
  }

  /** false while the breaker skips Redis. */
  get available(): boolean {
    return !this.breaker.open;
  }

  /** Skips Redis from now until the probe finds it (e.g. it was not reachable at start). */
  assumeDown(err: unknown): void {
    this.breaker.trip(err);
  }

  async begin(scope: IdempotencyScope, claim: IdempotencyClaim): Promise<CacheLookup> {
    if (this.breaker.open) return this.fallback();
    const key = RedisIdempotencyCache.keyOf(scope, claim.key);
    const hash = claim.requestHash.toString("hex");
    const token = `${randomUUID()}@${this.options.now() + this.options.lockMs}`;
    try {
      const set = await this.redis.set(key, this.signer.seal(key, { state: "P", hash, payload: token }), "PX", this.options.lockMs, "NX");
      if (set === "OK") {
        this.breaker.success();
        return { kind: "claimed", token };
      }
      const existing = await this.redis.get(key);
      this.breaker.success();
      if (existing === null) return { kind: "in_flight" }; // claimed and dropped in between: retry
      return this.judge(key, existing, claim);
    } catch (err) {
      this.failed(err);
      return this.fallback();
    }
  }

  async complete(scope: IdempotencyScope, claim: IdempotencyClaim, response: Uint8Array): Promise<void> {
    if (this.breaker.open) return; // Postgres holds the response; Redis learns it on a later call
    const key = RedisIdempotencyCache.keyOf(scope, claim.key);
    const value = this.signer.seal(key, { state: "D", hash: claim.requestHash.toString("hex"), payload: Buffer.from(response).toString("base64") });
    try {
      await this.redis.set(key, value, "PX", this.options.ttlMs);
      this.breaker.success();
    } catch (err) {
      this.failed(err);
    }
  }

  async abandon(scope: IdempotencyScope, claim: IdempotencyClaim, token: string): Promise<void> {
    if (this.breaker.open) return; // the claim expires by itself after lockMs
    const key = RedisIdempotencyCache.keyOf(scope, claim.key);
    const ours = this.signer.seal(key, { state: "P", hash: claim.requestHash.toString("hex"), payload: token });
    try {
      await this.redis.eval(DELETE_IF_UNCHANGED, 1, key, ours);
      this.breaker.success();
    } catch (err) {
      this.failed(err); // the claim expires by itself after lockMs
    }
  }

  async close(): Promise<void> {
    this.breaker.stop();
    this.redis.disconnect();
  }

  /** What a value found under the key says for this claim, if it verifies (decided by domain/idempotency.ts). */
  private judge(key: string, raw: string, claim: IdempotencyClaim): CacheLookup {
    const value = this.trusted(key, raw);
    if (value === null) {
      this.options.onUntrusted?.(key);
      // Not replayed, not "in flight": the call runs on Postgres. Dropped now (unless replaced
      // meanwhile) so a failed call leaves it behind neither; a completed one overwrites it.
      this.redis.eval(DELETE_IF_UNCHANGED, 1, key, raw).catch((err: unknown) => this.failed(err));
      return { kind: "untrusted" };
    }
    const known: KnownKey =
      value.state === "D"
        ? { state: "done", requestHash: Buffer.from(value.hash, "hex"), response: Buffer.from(value.payload, "base64") }
        : { state: "running" };
    return decideKey(claim, known)!;
  }

  /** The value read under `key`, if it verifies and (a claim) its deadline has not passed. */
  private trusted(key: string, raw: string): StoredValue | null {
    const value = this.signer.open(key, raw);
    if (value?.state === "P" && !(Number(value.payload.split("@")[1]) > this.options.now())) return null;
    return value;
  }

  private fallback(): CacheLookup {
    this.options.onFallback?.();
    return { kind: "unavailable" };
  }

  /** A connection that is down fails every command at once: no need to wait for more proof. */
  private failed(err: unknown): void {
    if (this.redis.status !== "ready") this.breaker.trip(err);
    else this.breaker.failure(err);
  }
}
