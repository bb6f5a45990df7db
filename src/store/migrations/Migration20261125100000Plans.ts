import { Migration } from "@mikro-orm/migrations";

/** Plans (versioned catalog and business plans), subscriptions, per-account packs, test clocks. */
export class Migration20261125100000Plans extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      -- How far an account's test clock runs ahead of server time; always 0 in production.
      alter table accounts add column clock_offset_ms bigint not null default 0;
      create index accounts_test_clock on accounts (account_id) where clock_offset_ms <> 0;

      -- Every version of every plan; a subscriber keeps the version it bought.
      create table plans (
        plan_id text not null,
        version integer not null check (version > 0),
        account_id text references accounts (account_id), -- null: the public catalog
        name text not null,
        monthly_allowance bigint not null check (monthly_allowance >= 0),
        price_minor bigint not null check (price_minor >= 0),
        currency text not null,
        billing_interval text not null check (billing_interval in ('MONTH', 'YEAR')),
        created_at timestamptz not null,
        primary key (plan_id, version)
      );

      create table subscriptions (
        account_id text primary key references accounts (account_id),
        plan_id text not null,
        plan_version integer not null,
        plan jsonb not null, -- the terms of the version in force
        anchor timestamptz not null,
        granted_period integer not null,
        granted_period_end timestamptz not null, -- when the next allowance falls due
        current_bucket_id uuid,
        scheduled_plan jsonb,
        scheduled_effective_at timestamptz,
        updated_at timestamptz not null,
        foreign key (plan_id, plan_version) references plans (plan_id, version)
      );
      create index subscriptions_due on subscriptions (granted_period_end);

      -- Custom top-up packs of business accounts.
      create table account_top_up_packs (
        account_id text not null references accounts (account_id),
        pack_id text not null,
        credits bigint not null check (credits > 0),
        price_minor bigint not null check (price_minor >= 0),
        currency text not null,
        validity_months integer not null check (validity_months between 1 and 36),
        primary key (account_id, pack_id)
      );
    `);
  }
}
