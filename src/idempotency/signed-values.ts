import { createHmac, createSecretKey, type KeyObject, timingSafeEqual } from "node:crypto";

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
  // A KeyObject made once: given the secret's bytes, createHmac makes one per call, which on
  // Node 24 was ~16 of a MAC's ~20 µs (and every mutating call seals at least two values: its claim and its answer).
  private readonly secret: KeyObject;

  constructor(secret: string) {
    this.secret = createSecretKey(Buffer.from(secret, "utf8"));
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
    // Each field as its byte length (4 bytes, big-endian) and its UTF-8 bytes, in one buffer.
    const fields = [CONTEXT, redisKey, value.state, value.hash, value.payload];
    let size = 0;
    for (const field of fields) size += 4 + Buffer.byteLength(field, "utf8");
    const message = Buffer.allocUnsafe(size);
    let at = 0;
    for (const field of fields) {
      const length = message.write(field, at + 4, "utf8");
      message.writeUInt32BE(length, at);
      at += 4 + length;
    }
    return createHmac("sha256", this.secret).update(message).digest();
  }
}
