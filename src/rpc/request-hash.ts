import { createHash } from "node:crypto";
import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import type { IdempotencyClaim } from "../app/ports.js";

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/**
 * The fingerprint of a request for idempotency: SHA-256 over the method and the request's
 * canonical JSON (keys sorted, defaults omitted), so that two encodings of the same request
 * (map order, default fields) hash alike and any real difference does not.
 */
export function requestHash<D extends DescMessage>(method: string, schema: D, request: MessageShape<D>): Buffer {
  const json = JSON.stringify(canonical(toJson(schema, request)));
  return createHash("sha256").update(method).update("\n").update(json).digest();
}

/**
 * The idempotency claim of a call: its key and its request's fingerprint. The one place a claim
 * is built; `request` as decoded (a reservation id in lower case), so two spellings of one
 * request claim alike.
 */
export function idempotencyClaim<D extends DescMessage>(method: string, schema: D, request: MessageShape<D>, key: string): IdempotencyClaim {
  return { key, method, requestHash: requestHash(method, schema, request) };
}
