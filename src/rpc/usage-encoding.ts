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
  GetUsageResponseSchema,
  Granularity,
  UsageDimension,
  UsageRowSchema,
} from "../gen/credit/v1/credit_service_pb.js";
import { encodeMessage } from "./binary-encoder.js";
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

export function usageResponse(series: UsageSeries): Uint8Array {
  return encodeMessage(
    GetUsageResponseSchema,
    create(GetUsageResponseSchema, {
      rows: series.rows.map((r) =>
        create(UsageRowSchema, {
          start: timestampFromDate(r.start),
          group: { ...r.group },
          consumed: r.consumed,
          restored: r.restored,
          granted: r.granted,
          expired: r.expired,
          generations: r.generations,
        }),
      ),
      asOf: timestampFromDate(series.asOf),
    }),
  );
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
