import { encodeMessage } from "./binary-encoder.js";
import { create } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { TimestampSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { BalanceEncoding } from "../app/queries.js";
import { GetBalanceResponseSchema, WatchBalanceResponseSchema } from "../gen/credit/v1/credit_service_pb.js";
import { BalanceSchema } from "../gen/credit/v1/types_pb.js";
import { balance } from "./encode.js";

const AS_OF = BalanceSchema.field.asOf.number;
const BALANCE = GetBalanceResponseSchema.field.balance.number;
const SEQUENCE = GetBalanceResponseSchema.field.sequence.number;
// The canonical encoding writes fields in number order: as_of goes between the fields before it
// and these, the only ones after it (a new field must be added to the split below).
const AFTER_AS_OF = ["bucketsTruncated", "bucketCount"];
if (BalanceSchema.fields.filter((f) => f.number > AS_OF).map((f) => f.localName).join() !== AFTER_AS_OF.join()) {
  throw new Error(`Balance fields after as_of must be ${AFTER_AS_OF.join(", ")}`);
}
// The response is the balance, then the sequence: the split below knows no other field.
if (GetBalanceResponseSchema.fields.map((f) => f.localName).join() !== "balance,sequence" || BALANCE >= SEQUENCE) {
  throw new Error("GetBalanceResponse fields must be balance, sequence");
}

/**
 * GetBalanceResponse in two parts: the Balance without `as_of` plus the account's sequence
 * (encoded once per read, kept by the balance cache: a balance and its sequence are one value)
 * and, per answer, `as_of` put in its place and the whole wrapped as the response's `balance`
 * field, followed by the `sequence` field. The bytes equal toBinary of the whole response. The
 * body is the fields before as_of, then those after it, then the encoded sequence field (empty
 * for 0), then one byte giving the length of the fields after as_of (at most 13 bytes: a bool and
 * an int32) and one giving the sequence field's length (at most 11 bytes).
 */
export const getBalanceEncoding: BalanceEncoding = {
  body(view, sequence) {
    const message = balance(view);
    const { bucketsTruncated, bucketCount } = message;
    const before = encodeMessage(BalanceSchema, { ...message, asOf: undefined, bucketsTruncated: false, bucketCount: 0 });
    const after = encodeMessage(BalanceSchema, create(BalanceSchema, { bucketsTruncated, bucketCount }));
    const tail = sequence === 0n ? new Uint8Array(0) : new BinaryWriter().tag(SEQUENCE, WireType.Varint).int64(sequence).finish();
    // Its own memory, exactly its size: the balance cache keeps bodies for minutes, and a small
    // Buffer (Buffer.concat, allocUnsafe) is a slice of a shared 8 KB pool slab that it would keep
    // alive whole (measured: 30,000 kept bodies, peak RSS 214 → 282 MB).
    const out = new Uint8Array(before.length + after.length + tail.length + 2);
    out.set(before, 0);
    out.set(after, before.length);
    out.set(tail, before.length + after.length);
    out[out.length - 2] = after.length;
    out[out.length - 1] = tail.length;
    return out;
  },
  stamp(body, asOf) {
    const { balance, tail } = stamped(body, asOf);
    return new BinaryWriter().tag(BALANCE, WireType.LengthDelimited).bytes(balance).raw(tail).finish();
  },
  sequence(body) {
    const tailEnd = body.length - 2;
    const tailStart = tailEnd - body[body.length - 1]!;
    if (tailStart === tailEnd) return 0n;
    const reader = new BinaryReader(body.subarray(tailStart, tailEnd));
    reader.tag();
    return BigInt(reader.int64());
  },
};

/** A body's Balance with `as_of` in its place, and its encoded sequence field. */
function stamped(body: Uint8Array, asOf: Date): { balance: Uint8Array; tail: Uint8Array } {
  const tailEnd = body.length - 2;
  const tailStart = tailEnd - body[body.length - 1]!;
  const afterStart = tailStart - body[body.length - 2]!;
  const timestamp = encodeMessage(TimestampSchema, timestampFromDate(asOf));
  const balance = new BinaryWriter()
    .raw(body.subarray(0, afterStart))
    .tag(AS_OF, WireType.LengthDelimited)
    .bytes(timestamp)
    .raw(body.subarray(afterStart, tailStart))
    .finish();
  return { balance, tail: body.subarray(tailStart, tailEnd) };
}

const WATCH_SEQUENCE = WatchBalanceResponseSchema.field.sequence.number;
const WATCH_BALANCE = WatchBalanceResponseSchema.field.balance.number;
if (WatchBalanceResponseSchema.fields.map((f) => f.localName).join() !== "sequence,balance" || WATCH_SEQUENCE >= WATCH_BALANCE) {
  throw new Error("WatchBalanceResponse fields must be sequence, balance");
}

/**
 * A WatchBalanceResponse from a GetBalance body (the balance cache's, shared): the sequence
 * field, then the stamped balance, in field-number order; equal to toBinary of the message.
 */
export function watchBalanceResponse(body: Uint8Array, asOf: Date): Uint8Array {
  const { balance } = stamped(body, asOf);
  const sequence = getBalanceEncoding.sequence(body);
  const writer = new BinaryWriter();
  if (sequence !== 0n) writer.tag(WATCH_SEQUENCE, WireType.Varint).int64(sequence);
  return writer.tag(WATCH_BALANCE, WireType.LengthDelimited).bytes(balance).finish();
}
