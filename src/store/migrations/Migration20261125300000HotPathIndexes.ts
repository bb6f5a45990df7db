import { Migration } from "@mikro-orm/migrations";

/** An account's overdue holds by index, so loading a busy account never scans all its reservations. */
export class Migration20261125300000HotPathIndexes extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create index reservations_account_due on reservations (account_id, expires_at) where state = 'HELD';`);
  }
}
