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
// The canonical encoding writes fields in number order: as_of goes between the fields before it
// and these, the only ones after it (a new field must be added to the split below).
const AFTER_AS_OF = ["bucketsTruncated", "bucketCount"];
if (BalanceSchema.fields.filter((f) => f.number > AS_OF).map((f) => f.localName).join() !== AFTER_AS_OF.join()) {
  throw new Error(`Balance fields after as_of must be ${AFTER_AS_OF.join(", ")}`);
}

/**
 * GetBalanceResponse in two parts: the Balance without `as_of` (encoded once per read, kept by
 * the balance cache) and, per answer, `as_of` put in its place and the whole wrapped as the
 * response's `balance` field. The bytes equal toBinary of the whole response. The body is the
 * fields before as_of, then those after it, then one byte giving the length of the latter
 * (at most 13 bytes: a bool and an int32).
 */
export const getBalanceEncoding: BalanceEncoding = {
  body(view) {
    const message = balance(view);
    const { bucketsTruncated, bucketCount } = message;
    const before = encodeMessage(BalanceSchema, { ...message, asOf: undefined, bucketsTruncated: false, bucketCount: 0 });
    const after = encodeMessage(BalanceSchema, create(BalanceSchema, { bucketsTruncated, bucketCount }));
    return Buffer.concat([before, after, Uint8Array.of(after.length)]);
  },
  stamp(body, asOf) {
    const afterEnd = body.length - 1;
    const afterStart = afterEnd - body[afterEnd]!;
    const timestamp = encodeMessage(TimestampSchema, timestampFromDate(asOf));
    const inner = new BinaryWriter()
      .raw(body.subarray(0, afterStart))
      .tag(AS_OF, WireType.LengthDelimited)
      .bytes(timestamp)
      .raw(body.subarray(afterStart, afterEnd))
      .finish();
    return new BinaryWriter().tag(BALANCE, WireType.LengthDelimited).bytes(inner).finish();
  },
};
