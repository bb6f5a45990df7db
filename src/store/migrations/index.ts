import { Migration20261125000000Initial } from "./Migration20261125000000Initial.js";
import { Migration20261125100000Plans } from "./Migration20261125100000Plans.js";
import { Migration20261125200000Pricing } from "./Migration20261125200000Pricing.js";
import { Migration20261125300000HotPathIndexes } from "./Migration20261125300000HotPathIndexes.js";
import { Migration20261201000000KeyOrder } from "./Migration20261201000000KeyOrder.js";
import { Migration20261202000000AccountSequence } from "./Migration20261202000000AccountSequence.js";
import { Migration20261202100000EventOutbox } from "./Migration20261202100000EventOutbox.js";
import { Migration20261202200000BalanceAlerts } from "./Migration20261202200000BalanceAlerts.js";
import { Migration20261202300000EventRelay } from "./Migration20261202300000EventRelay.js";
import { Migration20261202400000Members } from "./Migration20261202400000Members.js";
import { Migration20261202500000ConcurrencyLimits } from "./Migration20261202500000ConcurrencyLimits.js";
import { Migration20261202600000SpendLimits } from "./Migration20261202600000SpendLimits.js";
import { Migration20261202700000UsageRollup } from "./Migration20261202700000UsageRollup.js";
import { Migration20261202800000UsageHourly } from "./Migration20261202800000UsageHourly.js";
import { Migration20261203000000AutoTopUp } from "./Migration20261203000000AutoTopUp.js";
import { Migration20261204000000UsageLevelMarks } from "./Migration20261204000000UsageLevelMarks.js";
import { Migration20261205000000UsageFillfactor } from "./Migration20261205000000UsageFillfactor.js";
import { Migration20261206000000BucketFlags } from "./Migration20261206000000BucketFlags.js";
import { Migration20261207000000UsageDaysClosed } from "./Migration20261207000000UsageDaysClosed.js";
import { Migration20261208000000UsageDayHalfHours } from "./Migration20261208000000UsageDayHalfHours.js";
import { Migration20261202900000UsageDaily } from "./Migration20261202900000UsageDaily.js";

/** Checked-in migrations, in order. Listed explicitly so they run the same from src/ (tsx) and dist/. */
export const migrations = [
  { name: "Migration20261125000000Initial", class: Migration20261125000000Initial },
  { name: "Migration20261125100000Plans", class: Migration20261125100000Plans },
  { name: "Migration20261125200000Pricing", class: Migration20261125200000Pricing },
  { name: "Migration20261125300000HotPathIndexes", class: Migration20261125300000HotPathIndexes },
  { name: "Migration20261201000000KeyOrder", class: Migration20261201000000KeyOrder },
  { name: "Migration20261202000000AccountSequence", class: Migration20261202000000AccountSequence },
  { name: "Migration20261202100000EventOutbox", class: Migration20261202100000EventOutbox },
  { name: "Migration20261202200000BalanceAlerts", class: Migration20261202200000BalanceAlerts },
  { name: "Migration20261202300000EventRelay", class: Migration20261202300000EventRelay },
  { name: "Migration20261202400000Members", class: Migration20261202400000Members },
  { name: "Migration20261202500000ConcurrencyLimits", class: Migration20261202500000ConcurrencyLimits },
  { name: "Migration20261202600000SpendLimits", class: Migration20261202600000SpendLimits },
  { name: "Migration20261202700000UsageRollup", class: Migration20261202700000UsageRollup },
  { name: "Migration20261202800000UsageHourly", class: Migration20261202800000UsageHourly },
  { name: "Migration20261202900000UsageDaily", class: Migration20261202900000UsageDaily },
  { name: "Migration20261203000000AutoTopUp", class: Migration20261203000000AutoTopUp },
  { name: "Migration20261204000000UsageLevelMarks", class: Migration20261204000000UsageLevelMarks },
  { name: "Migration20261205000000UsageFillfactor", class: Migration20261205000000UsageFillfactor },
  { name: "Migration20261206000000BucketFlags", class: Migration20261206000000BucketFlags },
  { name: "Migration20261207000000UsageDaysClosed", class: Migration20261207000000UsageDaysClosed },
  { name: "Migration20261208000000UsageDayHalfHours", class: Migration20261208000000UsageDayHalfHours },
];
