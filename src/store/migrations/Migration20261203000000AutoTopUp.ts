import { Migration } from "@mikro-orm/migrations";

/**
 * Auto top-up (domain/auto-top-up.ts). The rule lives on the account's row (`auto_top_up`, jsonb:
 * settings, state, epoch, the outstanding request, this month's count, the last failure), written
 * with the account's head in the persist statement, so loading a book costs no extra lookup.
 * `auto_top_up_due_at` is when the rule next acts with no call (a request's expiry, the month a
 * capped rule may ask again): the sweeper reads it through a partial index that holds only the
 * accounts with something due. Every request is a row of its own, what billing's answers are
 * checked against; no foreign key from the rule to it (the rule carries its outstanding request).
 */
export class Migration20261203000000AutoTopUp extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table accounts add column auto_top_up jsonb, add column auto_top_up_due_at timestamptz;`);
    this.addSql(`create index accounts_auto_top_up_due on accounts (auto_top_up_due_at) where auto_top_up_due_at is not null;`);
    this.addSql(`create table auto_top_up_requests (
      account_id text not null references accounts (account_id),
      epoch int not null check (epoch > 0),
      request_id text not null,
      credits bigint not null check (credits > 0),
      pack jsonb,
      requested_at timestamptz not null,
      expires_at timestamptz not null,
      outcome text not null check (outcome in ('REQUESTED', 'COMPLETED', 'FAILED', 'EXPIRED')),
      payment_reference text,
      bucket_id uuid,
      failure_reason text,
      answered_at timestamptz,
      primary key (account_id, epoch)
    );`);
  }
}
