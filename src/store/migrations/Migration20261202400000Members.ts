import { Migration } from "@mikro-orm/migrations";

/**
 * The member (the customer's team member or API key) a hold is for, on the hold and on its ledger
 * entries (issue "Spend controls for teams"): "" for holds of no member and for every earlier row,
 * so the columns are filled without a rewrite (a constant default is stored in the catalogue).
 */
export class Migration20261202400000Members extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table reservations add column member_id text not null default '';`);
    this.addSql(`alter table ledger_entries add column member_id text not null default '';`);
  }
}
