import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
/** node-postgres' own conversion of one value to its text form (dates, JSON, buffers). */
const { prepareValue } = require("pg/lib/utils.js") as { prepareValue(value: unknown): unknown };

/** node-postgres does not serialize bigint; send it as text, Postgres casts it to bigint. */
export function toParam(value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.map(toParam);
  return value;
}

/**
 * A statement parameter in the text form Postgres receives. Arrays become array literals here
 * rather than in node-postgres: its literal builder runs two regular-expression replacements
 * and a date formatter per element, and a batch's write sends some seventy arrays, a sixth of
 * everything the server allocated per call (heap sampling). The literal is the same value:
 * test/integration/pg-params.test.ts reads both back through Postgres.
 */
export function wireValue(value: unknown): unknown {
  return Array.isArray(value) ? arrayLiteral(value) : prepareValue(toParam(value));
}

function arrayLiteral(values: readonly unknown[]): string {
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) parts[i] = arrayElement(values[i]);
  return `{${parts.join(",")}}`;
}

const SPECIAL = /[\\"]/;
const SPECIAL_ALL = /[\\"]/g;

function quoted(text: string): string {
  return `"${SPECIAL.test(text) ? text.replace(SPECIAL_ALL, "\\$&") : text}"`;
}

function arrayElement(value: unknown): string {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "string") return quoted(value);
  if (Array.isArray(value)) return arrayLiteral(value);
  if (value instanceof Date) {
    const year = value.getUTCFullYear();
    // ISO 8601 in UTC needs no quoting; out-of-range or invalid dates take node-postgres' path.
    if (year >= 1 && year <= 9999) return value.toISOString();
  } else if (ArrayBuffer.isView(value)) {
    return `\\\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("hex")}`;
  }
  return quoted(String(prepareValue(value)));
}
