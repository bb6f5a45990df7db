import { create, type DescEnum, type DescField, type DescMessage, fromBinary, ScalarType, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CreditAdminService } from "../../src/gen/credit/v1/admin_service_pb.js";
import { CreditService } from "../../src/gen/credit/v1/credit_service_pb.js";
import { UInt32ValueSchema, UInt64ValueSchema } from "@bufbuild/protobuf/wkt";
import { BalanceSchema, PlanSchema, QuoteLineSchema } from "../../src/gen/credit/v1/types_pb.js";
import { encodeMessage } from "../../src/rpc/binary-encoder.js";

/**
 * encodeMessage must write exactly toBinary's bytes: every answer of both services, on random
 * messages built from their descriptors (every field kind, unset and default values, negative
 * numbers, maps, oneofs, nested messages, non-ASCII text).
 */
const INT64 = { min: -(2n ** 63n), max: 2n ** 63n - 1n };

function scalarArbitrary(type: ScalarType): fc.Arbitrary<unknown> {
  switch (type) {
    case ScalarType.STRING:
      return fc.oneof(fc.constant(""), fc.string({ unit: "grapheme", maxLength: 40 }), fc.string({ minLength: 130, maxLength: 300 }));
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 200 });
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return fc.oneof(fc.constant(0n), fc.bigInt(INT64));
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2 ** 32 - 1 }));
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return fc.oneof(fc.constant(0), fc.integer({ min: -1000, max: 1000 }));
    default:
      return fc.oneof(fc.constant(0), fc.integer());
  }
}

function valueArbitrary(field: DescField, depth: number): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case "scalar":
      return scalarArbitrary(field.scalar);
    case "enum":
      return fc.constantFrom(...field.enum.values.map((v) => v.number));
    case "message":
      return messageArbitrary(field.message, depth + 1);
    case "list":
      return fc.array(elementArbitrary(field.listKind, field, depth), { maxLength: depth > 2 ? 0 : 3 });
    case "map":
      return fc.dictionary(fc.string({ maxLength: 12 }), elementArbitrary(field.mapKind, field, depth), { maxKeys: depth > 2 ? 0 : 3 });
  }
}

/** A list's item or a map's value. */
function elementArbitrary(kind: "message" | "enum" | "scalar", field: DescField, depth: number): fc.Arbitrary<unknown> {
  const f = field as { message?: DescMessage; enum?: DescEnum; scalar?: ScalarType };
  if (kind === "message") return messageArbitrary(f.message!, depth + 1);
  if (kind === "enum") return fc.constantFrom(...f.enum!.values.map((v) => v.number));
  return scalarArbitrary(f.scalar!);
}

function messageArbitrary(desc: DescMessage, depth: number): fc.Arbitrary<Record<string, unknown>> {
  if (depth > 4) return fc.constant({});
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of desc.fields) {
    if (field.oneof) continue;
    const value = valueArbitrary(field, depth);
    // Message fields and optional scalars may be unset.
    parts[field.localName] = field.fieldKind === "message" || field.presence !== 2 ? fc.option(value, { nil: undefined }) : value;
  }
  for (const oneof of desc.oneofs) {
    parts[oneof.localName] = fc.oneof(
      fc.constant({ case: undefined }),
      ...oneof.fields.map((f) => valueArbitrary(f, depth).map((value) => ({ case: f.localName, value }))),
    );
  }
  return fc.record(parts).map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)));
}

const answers = [...CreditService.methods, ...CreditAdminService.methods].map((m) => m.output);
const unique = [...new Map(answers.map((d) => [d.typeName, d])).values()];

describe("encodeMessage", () => {
  it.each(unique.map((d) => [d.typeName, d] as const))("writes toBinary's bytes for %s", (_name, desc) => {
    fc.assert(
      fc.property(messageArbitrary(desc, 0), (init) => {
        const message = create(desc, init);
        const ours = encodeMessage(desc, message);
        expect(Buffer.from(ours).toString("hex")).toBe(Buffer.from(toBinary(desc, message)).toString("hex"));
      }),
      { numRuns: 200 },
    );
  });

  it("leaves a message with unknown fields to toBinary, which keeps them", () => {
    const desc = unique[0]!;
    const withUnknown = fromBinary(desc, new Uint8Array([0xf8, 0x3f, 0x07])); // field 1023, varint 7
    expect(Buffer.from(encodeMessage(desc, withUnknown))).toEqual(Buffer.from(toBinary(desc, withUnknown)));
    expect(encodeMessage(desc, withUnknown).length).toBe(3);
  });
});

/**
 * A number a field cannot hold is refused, never wrapped: an int64 past 2^63−1 used to go out as
 * a negative number (a balance of 9,224 × 10^15 credits answered as −9.2 × 10^18). protobuf-es'
 * toBinary refuses the same values, so whichever writes an answer, a bug surfaces as an error.
 */
describe("encodeMessage out of range", () => {
  const cases: [string, DescMessage, Record<string, unknown>][] = [
    ["int64 above 2^63−1", BalanceSchema, { available: 2n ** 63n }],
    ["int64 below −2^63", QuoteLineSchema, { credits: -(2n ** 63n) - 1n }],
    ["int64 far past 64 bits", BalanceSchema, { held: 2n ** 70n }],
    ["int64 in a nested message", BalanceSchema, { buckets: [{ remaining: 2n ** 64n + 5n }] }],
    ["uint64 below 0", UInt64ValueSchema, { value: -1n }],
    ["uint64 above 2^64−1", UInt64ValueSchema, { value: 2n ** 64n }],
    ["int32 above 2^31−1", PlanSchema, { version: 2 ** 31 }],
    ["int32 below −2^31", PlanSchema, { version: -(2 ** 31) - 1 }],
    ["int32 not an integer", PlanSchema, { version: 1.5 }],
    ["int32 as an enum above 2^31−1", PlanSchema, { interval: 2 ** 31 }],
    ["uint32 above 2^32−1", UInt32ValueSchema, { value: 2 ** 32 }],
    ["uint32 below 0", UInt32ValueSchema, { value: -1 }],
  ];

  it.each(cases)("refuses an %s, as toBinary does", (_name, desc, init) => {
    const message = create(desc, init);
    expect(() => toBinary(desc, message)).toThrow();
    expect(() => encodeMessage(desc, message)).toThrow(RangeError);
  });

  it("writes the extremes that fit", () => {
    for (const [desc, init] of [
      [BalanceSchema, { available: 2n ** 63n - 1n, held: 0n }],
      [QuoteLineSchema, { credits: -(2n ** 63n) }],
      [UInt64ValueSchema, { value: 2n ** 64n - 1n }],
      [PlanSchema, { version: -(2 ** 31) }],
      [UInt32ValueSchema, { value: 2 ** 32 - 1 }],
    ] as [DescMessage, Record<string, unknown>][]) {
      const message = create(desc, init);
      expect(Buffer.from(encodeMessage(desc, message))).toEqual(Buffer.from(toBinary(desc, message)));
    }
  });
});
