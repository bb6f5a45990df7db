import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { UsageSeries } from "../../src/app/usage.js";
import { USAGE_DIMENSIONS, type UsageDimension } from "../../src/domain/usage.js";
import { GetUsageResponseSchema, UsageRowSchema } from "../../src/gen/credit/v1/credit_service_pb.js";
import { usageResponse } from "../../src/rpc/usage-encoding.js";

/**
 * GetUsage's answer is written by hand (src/rpc/usage-encoding.ts): it must be toBinary's bytes
 * for the message built the plain way, on random series (instants before 1970 and with
 * milliseconds, empty and non-ASCII group values, zero, negative and 64-bit figures).
 */
const figure = fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 10n ** 6n }), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }));
const instant = fc.oneof(fc.integer({ min: -62_000_000_000_000, max: 250_000_000_000_000 }), fc.constant(0)).map((ms) => new Date(ms));

const series: fc.Arbitrary<UsageSeries> = fc
  .record({ bounds: fc.array(instant, { minLength: 2, maxLength: 12 }), asOf: instant })
  .chain(({ bounds, asOf }) =>
    fc
      .array(
        fc.record({
          bucket: fc.integer({ min: 0, max: bounds.length - 2 }),
          group: fc
            .subarray([...USAGE_DIMENSIONS])
            .chain((dims) => fc.tuple(...dims.map((d) => fc.tuple(fc.constant(d), fc.oneof(fc.constant(""), fc.string({ unit: "grapheme", maxLength: 20 }), fc.string({ minLength: 130, maxLength: 200 }))))))
            .map((pairs) => Object.fromEntries(pairs) as Partial<Record<UsageDimension, string>>),
          consumed: figure,
          restored: figure,
          granted: figure,
          expired: figure,
          generations: figure,
        }),
        { maxLength: 30 },
      )
      .map((rows) => ({ rows, bounds, asOf })),
  );

function plainWay(s: UsageSeries): Uint8Array {
  return toBinary(
    GetUsageResponseSchema,
    create(GetUsageResponseSchema, {
      rows: s.rows.map((r) =>
        create(UsageRowSchema, {
          start: timestampFromDate(s.bounds[r.bucket]!),
          group: { ...r.group },
          consumed: r.consumed,
          restored: r.restored,
          granted: r.granted,
          expired: r.expired,
          generations: r.generations,
        }),
      ),
      asOf: timestampFromDate(s.asOf),
    }),
  );
}

describe("usageResponse", () => {
  it("writes toBinary's bytes for the series", () => {
    fc.assert(
      fc.property(series, (s) => {
        expect(usageResponse(s).toString("hex")).toBe(Buffer.from(plainWay(s)).toString("hex"));
      }),
      { numRuns: 500 },
    );
  });

  it("refuses a figure past int64 instead of wrapping it", () => {
    const row = { bucket: 0, group: {}, consumed: 2n ** 63n, restored: 0n, granted: 0n, expired: 0n, generations: 0n };
    expect(() => usageResponse({ rows: [row], bounds: [new Date(0), new Date(1)], asOf: new Date(0) })).toThrow(RangeError);
  });
});
