import { createHmac, timingSafeEqual } from "node:crypto";

/** What a value in the fast path says about its key: a call in flight (`P`), or done (`D`). */
export type ValueState = "P" | "D";

export interface StoredValue {
  readonly state: ValueState;
  /** The request hash, hex. */
  readonly hash: string;
  /** `P`: the claim's token; `D`: the response, base64. */
  readonly payload: string;
}

/** Names the format in every MAC, so a value can never verify under a later format. */
const CONTEXT = "credit.idempotency.v1";
const MAC_BYTES = 32;

/**
 * Values in Redis are `<state>|<hash hex>|<payload>|<mac>`, the MAC an HMAC-SHA256 under the
 * server secret over the Redis key, the state, the hash and the payload. Whoever can write to
 * Redis but does not hold the secret cannot make a value the service believes: not a response
 * that never happened, not a claim that keeps a key "in flight", not one key's value under
 * another key. Every field is length-prefixed in the MAC, so no two field lists share one.
 */
export class ValueSigner {
  private readonly secret: Buffer;

  constructor(secret: string) {
    this.secret = Buffer.from(secret, "utf8");
  }

  /** The value to store under `redisKey`. */
  seal(redisKey: string, value: StoredValue): string {
    return `${value.state}|${value.hash}|${value.payload}|${this.mac(redisKey, value).toString("base64url")}`;
  }

  /** The value read from `redisKey` if its MAC verifies; null for anything else (forged, tampered, another secret, another key). */
  open(redisKey: string, raw: string): StoredValue | null {
    const parts = raw.split("|");
    if (parts.length !== 4) return null;
    const [state, hash, payload, mac] = parts as [string, string, string, string];
    if (state !== "P" && state !== "D") return null;
    const value: StoredValue = { state, hash, payload };
    const given = Buffer.from(mac, "base64url");
    if (given.length !== MAC_BYTES) return null;
    return timingSafeEqual(given, this.mac(redisKey, value)) ? value : null;
  }

  private mac(redisKey: string, value: StoredValue): Buffer {
    const hmac = createHmac("sha256", this.secret);
    for (const field of [CONTEXT, redisKey, value.state, value.hash, value.payload]) {
      const bytes = Buffer.from(field, "utf8");
      const length = Buffer.alloc(4);
      length.writeUInt32BE(bytes.length);
      hmac.update(length).update(bytes);
    }
    return hmac.digest();
  }
}
