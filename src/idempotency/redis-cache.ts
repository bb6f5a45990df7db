import { randomUUID } from "node:crypto";
import type { Cluster, Redis } from "ioredis";
import type { CacheLookup, IdempotencyCache, IdempotencyClaim } from "../app/ports.js";

export interface RedisCacheOptions {
  /** How long a completed call's response is kept (the idempotency window). */
  readonly ttlMs: number;
  /** How long an in-flight claim lives if its owner dies before completing. */
  readonly lockMs: number;
  /** Told when Redis stops or starts answering, so the service can log and count it. */
  readonly onAvailability: (available: boolean, err?: unknown) => void;
  /** Told each time a lookup falls back to Postgres alone. */
  readonly onFallback?: () => void;
}

const IN_FLIGHT = "P";
const DONE = "D";

/** Deletes the key only if it still holds our own in-flight claim. */
const ABANDON_SCRIPT = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

/**
 * The idempotency fast path in Redis. Values: `P|<hash>|<token>` while a call runs, then
 * `D|<hash>|<base64 response>`. Keys are hash-tagged by scope (account or reservation) so one
 * call's key lives on one Redis Cluster slot. Every Redis error is absorbed: the answer becomes
 * "unavailable" and the Postgres operation record decides.
 */
export class RedisIdempotencyCache implements IdempotencyCache {
  private available = true;

  constructor(
    private readonly redis: Redis | Cluster,
    private readonly options: RedisCacheOptions,
  ) {}

  static key(scope: string, key: string): string {
    return `credit:idem:{${scope}}:${key}`;
  }

  async begin(scope: string, claim: IdempotencyClaim): Promise<CacheLookup> {
    const key = RedisIdempotencyCache.key(scope, claim.key);
    const hash = claim.requestHash.toString("hex");
    const token = randomUUID();
    try {
      const set = await this.redis.set(key, `${IN_FLIGHT}|${hash}|${token}`, "PX", this.options.lockMs, "NX");
      this.markAvailable();
      if (set === "OK") return { kind: "claimed", token };
      const existing = await this.redis.get(key);
      if (existing === null) return { kind: "in_flight" }; // claimed and dropped in between: retry
      const [state, storedHash, payload] = existing.split("|");
      // While the first call runs, any request with its key waits its outcome (ABORTED, retry):
      // if it fails it leaves no record and a different request may then run under the key.
      if (state !== DONE || payload === undefined) return { kind: "in_flight" };
      if (storedHash !== hash) return { kind: "mismatch" };
      return { kind: "done", response: new Uint8Array(Buffer.from(payload, "base64")) };
    } catch (err) {
      this.markUnavailable(err);
      this.options.onFallback?.();
      return { kind: "unavailable" };
    }
  }

  async complete(scope: string, claim: IdempotencyClaim, response: Uint8Array): Promise<void> {
    const key = RedisIdempotencyCache.key(scope, claim.key);
    const value = `${DONE}|${claim.requestHash.toString("hex")}|${Buffer.from(response).toString("base64")}`;
    try {
      await this.redis.set(key, value, "PX", this.options.ttlMs);
      this.markAvailable();
    } catch (err) {
      this.markUnavailable(err);
    }
  }

  async abandon(scope: string, claim: IdempotencyClaim, token: string): Promise<void> {
    const key = RedisIdempotencyCache.key(scope, claim.key);
    try {
      await this.redis.eval(ABANDON_SCRIPT, 1, key, `${IN_FLIGHT}|${claim.requestHash.toString("hex")}|${token}`);
    } catch (err) {
      this.markUnavailable(err); // the claim expires by itself after lockMs
    }
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }

  private markAvailable(): void {
    if (!this.available) {
      this.available = true;
      this.options.onAvailability(true);
    }
  }

  private markUnavailable(err: unknown): void {
    if (this.available) {
      this.available = false;
      this.options.onAvailability(false, err);
    }
  }
}
