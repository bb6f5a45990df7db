import { type DescField, type DescMessage, type MessageShape, ScalarType, toBinary } from "@bufbuild/protobuf";

/**
 * toBinary for the messages the service answers with, without protobuf-es' reflection: each
 * message type is compiled once into a list of its fields, and a message is written into one
 * reusable buffer, so an answer costs one allocation (a Buffer, as grpc-js sends). protobuf-es' toBinary wraps every nested
 * message, list and map in a reflection object and writes through per-message byte arrays: the
 * Reserve, Commit and Release answers were the largest single source of the server's allocations
 * (heap sampling). The bytes are toBinary's own, field for field (test/unit/binary-encoder.test.ts
 * compares them on random messages); a type with anything this writer does not know (groups,
 * fixed-width and floating-point numbers, non-string map keys) is left to toBinary.
 */
export function encodeMessage<D extends DescMessage>(schema: D, message: MessageShape<D>): Buffer {
  if (REFLECTION_ONLY) return sendable(asBuffer(toBinary(schema, message)));
  const plan = planOf(schema);
  if (plan === null || hasUnknown(message)) return sendable(asBuffer(toBinary(schema, message)));
  const w = writer;
  w.pos = 0;
  writeFields(w, plan, message as unknown as Fields);
  return sendable(Buffer.from(w.buf.subarray(0, w.pos)));
}

/**
 * Bench-only switch for an A/B against protobuf-es (`npm run bench -- --encoder-ab` sets it on
 * one of its two servers): `BENCH_ANSWER_ENCODER=protobuf-es` writes every answer with toBinary.
 */
const REFLECTION_ONLY = process.env["BENCH_ANSWER_ENCODER"] === "protobuf-es";

/**
 * The largest answer grpc-js sends (`grpc.max_send_message_length` in server.ts). Answers are
 * bounded far below it (test/unit/answer-size.test.ts computes the worst cases); this backstop
 * turns a miss into an error thrown while the command's transaction is still open, so nothing
 * commits behind an answer that could not be sent.
 */
export const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

function sendable(bytes: Buffer): Buffer {
  if (bytes.length > MAX_ANSWER_BYTES) throw new RangeError(`an answer of ${bytes.length} bytes is larger than ${MAX_ANSWER_BYTES}`);
  return bytes;
}

/** The same bytes as a Buffer, without a copy. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

type Fields = Record<string, unknown>;

interface FieldPlan {
  readonly number: number;
  readonly name: string;
  /** The oneof's property when the field is a member of one. */
  readonly oneof: string | null;
  readonly explicit: boolean;
  readonly kind: DescField["fieldKind"];
  readonly scalar: ScalarType;
  readonly packed: boolean;
  /** Message, list-of-message or map-of-message value type. */
  readonly message: DescMessage | null;
  /** The enum's zero value (its first value), for implicit presence. */
  readonly enumZero: number;
}

const SUPPORTED = new Set([ScalarType.STRING, ScalarType.BYTES, ScalarType.BOOL, ScalarType.INT32, ScalarType.INT64, ScalarType.UINT32, ScalarType.UINT64]);
const IMPLICIT = 2; // FeatureSet.FieldPresence.IMPLICIT
const plans = new Map<DescMessage, FieldPlan[] | null>();

function planOf(desc: DescMessage): FieldPlan[] | null {
  if (plans.has(desc)) return plans.get(desc)!;
  plans.set(desc, null); // a recursive type is not compiled
  const fields = [...desc.fields].sort((a, b) => a.number - b.number);
  const out: FieldPlan[] = [];
  for (const f of fields) {
    const plan = fieldPlan(f);
    if (plan === null) return null;
    out.push(plan);
  }
  plans.set(desc, out);
  return out;
}

function fieldPlan(f: DescField): FieldPlan | null {
  const base = { number: f.number, name: f.localName, oneof: f.oneof?.localName ?? null, explicit: f.presence !== IMPLICIT, kind: f.fieldKind };
  const scalarOf = (s: ScalarType | undefined) => (s === undefined || SUPPORTED.has(s) ? (s ?? ScalarType.INT32) : null);
  switch (f.fieldKind) {
    case "scalar": {
      const scalar = scalarOf(f.scalar);
      return scalar === null ? null : { ...base, scalar, packed: false, message: null, enumZero: 0 };
    }
    case "enum":
      return { ...base, scalar: ScalarType.INT32, packed: false, message: null, enumZero: f.enum.values[0]!.number };
    case "message":
      if (f.delimitedEncoding || planOf(f.message) === null) return null;
      return { ...base, scalar: ScalarType.INT32, packed: false, message: f.message, enumZero: 0 };
    case "list": {
      if (f.listKind === "message") {
        if (f.delimitedEncoding || planOf(f.message) === null) return null;
        return { ...base, scalar: ScalarType.INT32, packed: false, message: f.message, enumZero: 0 };
      }
      const scalar = f.listKind === "enum" ? ScalarType.INT32 : scalarOf(f.scalar);
      return scalar === null ? null : { ...base, scalar, packed: f.packed, message: null, enumZero: 0 };
    }
    case "map": {
      if (f.mapKey !== ScalarType.STRING) return null;
      if (f.mapKind === "message") {
        if (planOf(f.message) === null) return null;
        return { ...base, scalar: ScalarType.INT32, packed: false, message: f.message, enumZero: 0 };
      }
      const scalar = f.mapKind === "enum" ? ScalarType.INT32 : scalarOf(f.scalar);
      return scalar === null ? null : { ...base, scalar, packed: false, message: null, enumZero: 0 };
    }
  }
}

function hasUnknown(message: object): boolean {
  const unknown = (message as { $unknown?: unknown[] }).$unknown;
  return unknown !== undefined && unknown.length > 0;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A growable buffer, reused by every call (encoding is synchronous). */
export class Writer {
  buf = Buffer.allocUnsafe(16 * 1024);
  pos = 0;

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  varint32(value: number): void {
    this.ensure(10);
    if (value < 0) {
      this.varint64(BigInt(value));
      return;
    }
    let v = value >>> 0;
    while (v > 0x7f) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.pos++] = v;
  }

  /** A non-negative safe integer (below 2^53) as a varint, without BigInt arithmetic. */
  varintSafe(value: number): void {
    this.ensure(8);
    let v = value;
    while (v > 0x7f) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }

  /** Two's complement in 64 bits, as protobuf writes int64 (and negative int32). */
  varint64(value: bigint): void {
    // Most figures are small and positive: each 7-bit step in BigInt allocates, a number's does not.
    if (value >= 0n && value <= MAX_SAFE) {
      this.varintSafe(Number(value));
      return;
    }
    this.ensure(10);
    let v = BigInt.asUintN(64, value);
    while (v > 0x7fn) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
  }

  tag(number: number, wireType: number): void {
    this.varint32(((number << 3) | wireType) >>> 0);
  }

  bytes(data: Uint8Array): void {
    this.varint32(data.length);
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }

  string(text: string): void {
    // Room for the worst case (3 bytes per UTF-16 unit), written after a one-byte length that is widened if needed.
    this.ensure(1 + text.length * 3);
    const start = this.pos + 1;
    const written = this.buf.write(text, start, "utf8");
    this.pos = start + written;
    this.finishLength(start);
  }

  /**
   * The content since `start` (up to pos) follows a one-byte length reserved just before it:
   * write its length there, moving the content up when the length needs more than one byte.
   */
  finishLength(start: number): void {
    const length = this.pos - start;
    const size = varintSize(length);
    if (size > 1) {
      this.ensure(size - 1);
      this.buf.copyWithin(start + size - 1, start, start + length);
    }
    let p = start - 1;
    let v = length;
    while (v > 0x7f) {
      this.buf[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[p] = v;
    this.pos = start + size - 1 + length;
  }
}

/**
 * An answer written by hand into the shared writer (for answers of hundreds of rows, where even
 * building the messages to encode costs more than writing their bytes): `write` gets the writer
 * at position 0 and returns when the message is complete; the bytes are copied out, as encodeMessage does.
 */
export function encodeWith(write: (w: Writer) => void): Buffer {
  const w = writer;
  w.pos = 0;
  write(w);
  return sendable(Buffer.from(w.buf.subarray(0, w.pos)));
}

function varintSize(n: number): number {
  let size = 1;
  while (n > 0x7f) {
    n >>>= 7;
    size++;
  }
  return size;
}

const writer = new Writer();
export const VARINT = 0;
export const LEN = 2;

function isSet(plan: FieldPlan, message: Fields): boolean {
  if (plan.oneof !== null) return (message[plan.oneof] as { case?: string }).case === plan.name;
  const value = message[plan.name];
  if (plan.explicit) return value !== undefined && Object.prototype.hasOwnProperty.call(message, plan.name);
  switch (plan.kind) {
    case "list":
      return (value as unknown[]).length > 0;
    case "map":
      return Object.keys(value as object).length > 0;
    case "enum":
      return value !== plan.enumZero;
    default:
      return !isZero(plan.scalar, value);
  }
}

function isZero(scalar: ScalarType, value: unknown): boolean {
  switch (scalar) {
    case ScalarType.STRING:
      return value === "";
    case ScalarType.BYTES:
      return (value as Uint8Array).length === 0;
    case ScalarType.BOOL:
      return value === false;
    default:
      // 0, 0n and "0" alike, as protobuf-es compares
      return value == 0;
  }
}

function writeFields(w: Writer, plan: readonly FieldPlan[], message: Fields): void {
  for (const f of plan) {
    if (!isSet(f, message)) continue;
    const value = f.oneof !== null ? (message[f.oneof] as { value: unknown }).value : message[f.name];
    switch (f.kind) {
      case "scalar":
      case "enum":
        writeScalar(w, f.number, f.scalar, value);
        break;
      case "message":
        writeMessage(w, f.number, f.message!, value as Fields);
        break;
      case "list":
        writeList(w, f, value as unknown[]);
        break;
      case "map":
        for (const key of Object.keys(value as object)) {
          w.tag(f.number, LEN);
          const start = openLength(w);
          writeScalar(w, 1, ScalarType.STRING, key);
          const entry = (value as Fields)[key];
          if (f.message) writeMessage(w, 2, f.message, entry as Fields);
          else writeScalar(w, 2, f.scalar, entry);
          w.finishLength(start);
        }
        break;
    }
  }
}

/** An int64 field with implicit presence, for answers written by hand: nothing when 0, refused past int64 as toBinary refuses it. */
export function writeInt64(w: Writer, number: number, value: bigint): void {
  if (value === 0n) return;
  w.tag(number, VARINT);
  w.varint64(inRange(value, INT64_MIN, INT64_MAX, "int64"));
}

/** Reserves one byte for a length and returns where the content starts (close it with w.finishLength). */
export function openLength(w: Writer): number {
  w.ensure(1);
  w.pos += 1;
  return w.pos;
}

function writeMessage(w: Writer, number: number, desc: DescMessage, value: Fields): void {
  w.tag(number, LEN);
  const start = openLength(w);
  writeFields(w, planOf(desc)!, value);
  w.finishLength(start);
}

function writeList(w: Writer, f: FieldPlan, list: unknown[]): void {
  if (f.message) {
    for (const item of list) writeMessage(w, f.number, f.message, item as Fields);
    return;
  }
  if (f.packed) {
    w.tag(f.number, LEN);
    const start = openLength(w);
    for (const item of list) writeScalarValue(w, f.scalar, item);
    w.finishLength(start);
    return;
  }
  for (const item of list) writeScalar(w, f.number, f.scalar, item);
}

function writeScalar(w: Writer, number: number, scalar: ScalarType, value: unknown): void {
  w.tag(number, scalar === ScalarType.STRING || scalar === ScalarType.BYTES ? LEN : VARINT);
  writeScalarValue(w, scalar, value);
}

function writeScalarValue(w: Writer, scalar: ScalarType, value: unknown): void {
  switch (scalar) {
    case ScalarType.STRING:
      w.string(value as string);
      break;
    case ScalarType.BYTES:
      w.bytes(value as Uint8Array);
      break;
    case ScalarType.BOOL:
      w.varint32(value ? 1 : 0);
      break;
    case ScalarType.INT64:
      w.varint64(inRange(BigInt(value as bigint | string | number), INT64_MIN, INT64_MAX, "int64"));
      break;
    case ScalarType.UINT64:
      w.varint64(inRange(BigInt(value as bigint | string | number), 0n, UINT64_MAX, "uint64"));
      break;
    case ScalarType.UINT32:
      w.varint32(integerInRange(value as number, 0, UINT32_MAX, "uint32"));
      break;
    default:
      w.varint32(integerInRange(value as number, INT32_MIN, INT32_MAX, "int32"));
      break;
  }
}

// A value outside its field's type is a bug upstream: refused, never wrapped (toBinary refuses them too).
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const UINT32_MAX = 2 ** 32 - 1;

function inRange(value: bigint, min: bigint, max: bigint, type: string): bigint {
  if (value < min || value > max) throw new RangeError(`${value} does not fit in an ${type} field`);
  return value;
}

function integerInRange(value: number, min: number, max: number, type: string): number {
  if (!Number.isInteger(value) || value < min || value > max) throw new RangeError(`${value} does not fit in an ${type} field`);
  return value;
}
