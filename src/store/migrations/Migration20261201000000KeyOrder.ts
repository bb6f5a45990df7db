import { Migration } from "@mikro-orm/migrations";

/**
 * Reservations and operation records are keyed id first: (reservation_id, account_id) and
 * (idempotency_key, account_id). Every lookup names both, and with the account first a plan could
 * match on the account alone and filter the rest, reading a busy account's whole history on
 * every batch; with the id first no index offers that path. account_id stays in both keys
 * (a distributed table's keys must hold its distribution column). The id-first key makes
 * reservations_by_id redundant.
 */
export class Migration20261201000000KeyOrder extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table reservations drop constraint reservations_pkey, add constraint reservations_pkey primary key (reservation_id, account_id);`);
    this.addSql(`drop index reservations_by_id;`);
    this.addSql(`alter table operations drop constraint operations_pkey, add constraint operations_pkey primary key (idempotency_key, account_id);`);
  }
}
