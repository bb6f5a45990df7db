import { Migration } from "@mikro-orm/migrations";

/**
 * Balance alerts and expiry notices (docs/events.md). The account's own alert threshold (credits or
 * a percent of its plan's allowance; both null: the configured default applies) and where its alert
 * stands (ARMED, LOW, EXHAUSTED) live on the account row, written with its change sequence. A bucket
 * remembers that its CREDITS_EXPIRING was told (once per bucket); the sweeper finds the buckets still
 * waiting for one through a partial index that holds only those.
 */
export class Migration20261202200000BalanceAlerts extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table accounts add column alert_threshold_credits bigint null,
      add column alert_threshold_percent int null,
      add column alert_state text not null default 'ARMED',
      add constraint accounts_alert_threshold_one check (alert_threshold_credits is null or alert_threshold_percent is null),
      add constraint accounts_alert_state check (alert_state in ('ARMED', 'LOW', 'EXHAUSTED'));`);
    this.addSql(`alter table buckets add column expiry_noticed boolean not null default false;`);
    this.addSql(`create index buckets_expiry_notice on buckets (expires_at)
      where remaining > held and not expiry_noticed and kind <> 'SUBSCRIPTION';`);
  }
}
