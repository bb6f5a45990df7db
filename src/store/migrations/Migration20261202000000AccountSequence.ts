import { Migration } from "@mikro-orm/migrations";

/**
 * Every committed change of an account belongs to one change record with a per-account number
 * (1, 2, 3, … no gaps; docs/decisions.md). The account row holds the latest: the batch that
 * changes the account takes the next number under the account's row lock and writes it in the
 * same statement as the change. 0: the account has had no change yet.
 */
export class Migration20261202000000AccountSequence extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table accounts add column sequence bigint not null default 0;`);
  }
}
