import { encodeMessage } from "./binary-encoder.js";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { TimestampSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { BalanceEncoding } from "../app/queries.js";
import { GetBalanceResponseSchema } from "../gen/credit/v1/credit_service_pb.js";
import { BalanceSchema } from "../gen/credit/v1/types_pb.js";
import { balance } from "./encode.js";

const AS_OF = BalanceSchema.field.asOf.number;
const BALANCE = GetBalanceResponseSchema.field.balance.number;
// as_of is Balance's last field, so appending it after the body is the canonical encoding.
if (Math.max(...BalanceSchema.fields.map((f) => f.number)) !== AS_OF) throw new Error("Balance.as_of must be its last field");

/**
 * GetBalanceResponse in two parts: the Balance without `as_of` (encoded once per read, kept by
 * the balance cache) and, per answer, `as_of` appended and the whole wrapped as the response's
 * `balance` field. The bytes equal toBinary of the whole response.
 */
export const getBalanceEncoding: BalanceEncoding = {
  body(view) {
    const message = balance(view);
    message.asOf = undefined;
    return encodeMessage(BalanceSchema, message);
  },
  stamp(body, asOf) {
    const timestamp = encodeMessage(TimestampSchema, timestampFromDate(asOf));
    const inner = new BinaryWriter().raw(body).tag(AS_OF, WireType.LengthDelimited).bytes(timestamp).finish();
    return new BinaryWriter().tag(BALANCE, WireType.LengthDelimited).bytes(inner).finish();
  },
};

