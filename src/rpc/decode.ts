import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { FailureError } from "../domain/errors.js";
import type { Money as DomainMoney } from "../domain/grants.js";
import type { GenerationSpec as DomainSpec, GenerationKind as DomainKind, Quality as DomainQuality } from "../domain/pricing.js";
import { GenerationKind, type GenerationSpec, type Money, Quality } from "../gen/credit/v1/types_pb.js";
import {
  ID_PATTERN,
  MAX_CREDITS,
  MAX_MONEY_MINOR,
  MAX_ID_LENGTH,
  MAX_METADATA_ENTRIES,
  MAX_METADATA_KEY_LENGTH,
  MAX_METADATA_VALUE_LENGTH,
  MAX_TEXT_LENGTH,
} from "../domain/limits.js";

/**
 * Input validation at the edge: each function returns the clean value or throws an INVALID_FIELD
 * failure naming the field, before any store is touched — bad input never changes anything.
 */
export function invalid(field: string, message: string): FailureError {
  return new FailureError({ reason: "INVALID_FIELD", message: `${field}: ${message}`, metadata: { field } });
}

export function id(value: string, field: string): string {
  if (value.length === 0) throw invalid(field, "is required");
  if (value.length > MAX_ID_LENGTH) throw invalid(field, `is longer than ${MAX_ID_LENGTH} characters`);
  if (!ID_PATTERN.test(value)) throw invalid(field, "must be printable ASCII without spaces");
  return value;
}

/** An optional id (a member): empty is "none"; otherwise the rules of `id`. */
export function optionalId(value: string, field: string): string {
  return value.length === 0 ? "" : id(value, field);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function uuid(value: string, field: string): string {
  if (value.length === 0) throw invalid(field, "is required");
  if (!UUID.test(value)) throw invalid(field, "must be a UUID");
  return value.toLowerCase();
}

export function credits(value: bigint, field: string, { allowZero = false } = {}): bigint {
  if (value < 0n || (value === 0n && !allowZero)) throw invalid(field, allowZero ? "must not be negative" : "must be positive");
  if (value > MAX_CREDITS) throw invalid(field, `must be at most ${MAX_CREDITS}`);
  return value;
}

/** Postgres text and jsonb cannot hold NUL; refuse it at the edge instead of failing in the store. */
function noNul(value: string, field: string): string {
  if (value.includes("\u0000")) throw invalid(field, "must not contain NUL characters");
  return value;
}

export function text(value: string, field: string, { required = false, max = MAX_TEXT_LENGTH } = {}): string {
  if (required && value.trim().length === 0) throw invalid(field, "is required");
  if (value.length > max) throw invalid(field, `is longer than ${max} characters`);
  return noNul(value, field);
}

export function metadata(value: Record<string, string>, field = "metadata"): Record<string, string> {
  const entries = Object.entries(value);
  if (entries.length > MAX_METADATA_ENTRIES) throw invalid(field, `has more than ${MAX_METADATA_ENTRIES} entries`);
  for (const [k, v] of entries) {
    if (k.length === 0 || k.length > MAX_METADATA_KEY_LENGTH) throw invalid(field, `keys must be 1 to ${MAX_METADATA_KEY_LENGTH} characters`);
    if (v.length > MAX_METADATA_VALUE_LENGTH) throw invalid(field, `value of ${k} is longer than ${MAX_METADATA_VALUE_LENGTH} characters`);
    noNul(k, field);
    noNul(v, field);
  }
  return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * A TTL in whole milliseconds within (0, maxMs]; unset gives `defaultMs`. A sub-millisecond
 * remainder counts as a started millisecond (rounded up, in exact integer arithmetic), so no
 * duration above the maximum is ever taken for the maximum: 24 h + 1 ns is 86,400,001 ms.
 */
export function ttl(value: Duration | undefined, field: string, defaultMs: number, maxMs: number): number {
  if (value === undefined) return defaultMs;
  if (value.seconds < 0n || value.nanos < 0 || value.nanos > 999_999_999) throw invalid(field, "must be a positive duration");
  const ms = value.seconds * 1000n + (BigInt(value.nanos) + 999_999n) / 1_000_000n;
  if (ms < 1n) throw invalid(field, "must be a positive duration");
  if (ms > BigInt(maxMs)) throw invalid(field, `must be at most ${maxMs / 1000}s`);
  return Number(ms);
}

/** An optional point in time between year 1970 and 9999. */
export function instant(value: Timestamp | undefined, field: string): Date | null {
  if (value === undefined) return null;
  if (value.seconds < 0n || value.seconds > 253_402_300_799n || value.nanos < 0 || value.nanos > 999_999_999) {
    throw invalid(field, "is out of range");
  }
  return timestampDate(value);
}

/** A value of a closed enum; 0 (UNSPECIFIED) and unknown numbers are rejected. */
export function enumValue<T>(value: number, field: string, known: ReadonlyMap<number, T>): T {
  const mapped = known.get(value);
  if (mapped === undefined) throw invalid(field, value === 0 ? "is required" : `has unknown value ${value}`);
  return mapped;
}

/** A price: an ISO 4217 code and 0 … 10^15 minor units. */
export function money(value: Money | undefined, field: string): DomainMoney {
  if (!value) throw invalid(field, "is required");
  if (!/^[A-Z]{3}$/.test(value.currencyCode)) throw invalid(`${field}.currency_code`, "must be an ISO 4217 code");
  if (value.amountMinor < 0n || value.amountMinor > MAX_MONEY_MINOR) throw invalid(`${field}.amount_minor`, `must be 0 to ${MAX_MONEY_MINOR}`);
  return { currencyCode: value.currencyCode, amountMinor: value.amountMinor };
}

/** Calendar months a pack stays valid: 1 to 36. */
export function validityMonths(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 1 || value > 36) throw invalid(field, "must be 1 to 36");
  return value;
}

const KINDS: ReadonlyMap<number, DomainKind> = new Map([
  [GenerationKind.IMAGE, "IMAGE"],
  [GenerationKind.VIDEO, "VIDEO"],
  [GenerationKind.ANIMATION, "ANIMATION"],
  [GenerationKind.AUDIO, "AUDIO"],
  [GenerationKind.UPSCALE, "UPSCALE"],
]);

const QUALITIES: ReadonlyMap<number, DomainQuality> = new Map([
  [Quality.UNSPECIFIED, "STANDARD"],
  [Quality.DRAFT, "DRAFT"],
  [Quality.STANDARD, "STANDARD"],
  [Quality.HIGH, "HIGH"],
  [Quality.ULTRA, "ULTRA"],
]);

const MAX_SPEC_DURATION_MS = 86_400_000;

/** A generation spec's shape; whether the model accepts it is the rate card's call (domain/pricing.ts). */
export function spec(value: GenerationSpec, field = "spec"): DomainSpec {
  if (value.width < 0 || value.height < 0) throw invalid(`${field}.width`, "must not be negative");
  const durationMs = value.duration === undefined ? 0 : ttl(value.duration, `${field}.duration`, 0, MAX_SPEC_DURATION_MS);
  if (value.count < 0) throw invalid(`${field}.count`, "must not be negative");
  return {
    model: id(value.model, `${field}.model`),
    kind: enumValue(value.kind, `${field}.kind`, KINDS),
    width: value.width,
    height: value.height,
    durationMs,
    count: value.count === 0 ? 1 : value.count,
    quality: enumValue(value.quality, `${field}.quality`, QUALITIES),
  };
}
