import { Migration } from "@mikro-orm/migrations";
import { rebuildUsageRollupSql } from "../usage-rollup.js";

/**
 * The usage rollup (domain/usage.ts): per account, 15-minute slot (account time) and dimensions
 * (model, kind, member, caller), the credits consumed, restored, granted and expired and the
 * generations committed, added to by the persist statement in the write transaction. GetUsage
 * and ForecastBalance read it by the primary key's range (account, slot); Reconcile checks it
 * against the entries. Filled here from the ledger as it stands, by the same rules. No foreign key
 * to accounts: rows are only ever written with the account's lock held (the account exists), and
 * a key check would cost every write that opens a row an index probe and a row lock.
 */
export class Migration20261202700000UsageRollup extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table usage_rollup (
      account_id text not null,
      slot timestamptz not null,
      model text not null,
      kind text not null,
      member_id text not null,
      caller text not null,
      consumed bigint not null default 0,
      restored bigint not null default 0,
      granted bigint not null default 0,
      expired bigint not null default 0,
      generations bigint not null default 0,
      primary key (account_id, slot, model, kind, member_id, caller)
    );`);
    for (const sql of rebuildUsageRollupSql("true")) this.addSql(sql);
  }
}
