import { encodeMessage } from "./binary-encoder.js";
import { create } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { TimestampSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { BalanceEncoding } from "../app/queries.js";
import { GetBalanceResponseSchema } from "../gen/credit/v1/credit_service_pb.js";
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
    return Buffer.concat([before, after, tail, Uint8Array.of(after.length, tail.length)]);
  },
  stamp(body, asOf) {
    const tailEnd = body.length - 2;
    const tailStart = tailEnd - body[body.length - 1]!;
    const afterStart = tailStart - body[body.length - 2]!;
    const timestamp = encodeMessage(TimestampSchema, timestampFromDate(asOf));
    const inner = new BinaryWriter()
      .raw(body.subarray(0, afterStart))
      .tag(AS_OF, WireType.LengthDelimited)
      .bytes(timestamp)
      .raw(body.subarray(afterStart, tailStart))
      .finish();
    return new BinaryWriter().tag(BALANCE, WireType.LengthDelimited).bytes(inner).raw(body.subarray(tailStart, tailEnd)).finish();
  },
};
