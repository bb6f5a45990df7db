import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { UsageQuery, UsageSeries } from "../app/usage.js";
import type { Forecast } from "../domain/forecast.js";
import { isTimeZone, type CalendarUnit } from "../domain/time-zone.js";
import type { UsageDimension as DomainDimension } from "../domain/usage.js";
import {
  ExpiringCreditsSchema,
  ForecastBalanceResponseSchema,
  type GetUsageRequest,
  Granularity,
  UsageDimension,
} from "../gen/credit/v1/credit_service_pb.js";
import { encodeMessage, encodeWith, LEN, openLength, VARINT, type Writer, writeInt64 } from "./binary-encoder.js";
import * as decode from "./decode.js";
import * as encode from "./encode.js";

/** GetUsage and ForecastBalance between the app (app/usage.ts) and the proto. */

const UNITS = encode.inverse<CalendarUnit, Granularity>({ HOUR: Granularity.HOUR, DAY: Granularity.DAY, MONTH: Granularity.MONTH });
const DIMENSIONS = encode.inverse<DomainDimension, UsageDimension>({
  model: UsageDimension.MODEL,
  kind: UsageDimension.KIND,
  member: UsageDimension.MEMBER,
  caller: UsageDimension.CALLER,
});

export function usageQuery(req: GetUsageRequest): UsageQuery {
  const accountId = decode.id(req.accountId, "account_id");
  const start = decode.instant(req.startTime, "start_time");
  const end = decode.instant(req.endTime, "end_time");
  if (!start) throw decode.invalid("start_time", "is required");
  if (!end) throw decode.invalid("end_time", "is required");
  if (start.getTime() >= end.getTime()) throw decode.invalid("end_time", "must be after start_time");
  const unit = decode.enumValue(req.granularity, "granularity", UNITS);
  const groupBy = new Set<DomainDimension>();
  for (const d of req.groupBy) {
    const dim = decode.enumValue(d, "group_by", DIMENSIONS);
    if (groupBy.has(dim)) throw decode.invalid("group_by", `names ${dim} twice`);
    groupBy.add(dim);
  }
  const timeZone = req.timeZone === "" ? "UTC" : req.timeZone;
  if (!isTimeZone(timeZone)) throw decode.invalid("time_zone", `unknown time zone ${JSON.stringify(timeZone.slice(0, 64))} (an IANA name such as Europe/Paris)`);
  return { accountId, start, end, unit, groupBy, timeZone };
}

/**
 * GetUsageResponse written field by field (the bytes toBinary writes, test/unit/usage-encoding.test.ts):
 * a 90-day series is ~550 rows, and building a message, a Timestamp and a group map per row
 * before encoding them cost ~1 MB and ~1.5 ms a call, most of the server's share of it.
 */
export function usageResponse(series: UsageSeries): Buffer {
  return encodeWith((w) => {
    for (const r of series.rows) {
      w.tag(1, LEN);
      const row = openLength(w);
      timestamp(w, 1, series.bounds[r.bucket]!);
      for (const dim in r.group) {
        const value = r.group[dim as DomainDimension]!;
        w.tag(2, LEN);
        const entry = openLength(w);
        w.tag(1, LEN);
        w.string(dim);
        // toBinary writes a map entry's key and value even when empty
        w.tag(2, LEN);
        w.string(value);
        w.finishLength(entry);
      }
      writeInt64(w, 3, r.consumed);
      writeInt64(w, 4, r.restored);
      writeInt64(w, 5, r.granted);
      writeInt64(w, 6, r.expired);
      writeInt64(w, 7, r.generations);
      w.finishLength(row);
    }
    timestamp(w, 2, series.asOf);
  });
}

/** A google.protobuf.Timestamp as timestampFromDate makes it (seconds floored, nanos 0–999,999,999). */
function timestamp(w: Writer, field: number, at: Date): void {
  const ms = at.getTime();
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  w.tag(field, LEN);
  const start = openLength(w);
  if (seconds !== 0) {
    w.tag(1, VARINT);
    if (seconds > 0) w.varintSafe(seconds);
    else w.varint64(BigInt(seconds));
  }
  if (nanos !== 0) {
    w.tag(2, VARINT);
    w.varintSafe(nanos);
  }
  w.finishLength(start);
}

export function forecastResponse(f: Forecast): Uint8Array {
  return encodeMessage(
    ForecastBalanceResponseSchema,
    create(ForecastBalanceResponseSchema, {
      ...(f.runsOutAt ? { runsOutAt: timestampFromDate(f.runsOutAt) } : {}),
      ...(f.nextResetAt ? { nextResetAt: timestampFromDate(f.nextResetAt) } : {}),
      burnRatePerDay: f.burnRatePerDay,
      expiringUnused: f.expiringUnused.map((e) => create(ExpiringCreditsSchema, { bucket: encode.bucket(e.bucket), amount: e.amount, expiresAt: timestampFromDate(e.expiresAt) })),
      asOf: timestampFromDate(f.asOf),
    }),
  );
}
