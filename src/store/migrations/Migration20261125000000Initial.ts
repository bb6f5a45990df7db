import { Migration } from "@mikro-orm/migrations";

/** The ledger: accounts, buckets, reservations (holds), append-only entries, idempotent operations. */
export class Migration20261125000000Initial extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table accounts (
        account_id text primary key,
        created_at timestamptz not null
      );

      create table buckets (
        account_id text not null references accounts (account_id),
        bucket_id uuid not null,
        kind text not null check (kind in ('SUBSCRIPTION', 'TOP_UP', 'ADJUSTMENT')),
        granted bigint not null check (granted > 0),
        remaining bigint not null check (remaining >= 0 and remaining <= granted),
        held bigint not null default 0 check (held >= 0 and held <= remaining),
        valid_from timestamptz not null,
        expires_at timestamptz,
        source_ref text not null,
        created_at timestamptz not null,
        primary key (account_id, bucket_id)
      );
      -- the live buckets of an account (loaded by every command)
      create index buckets_live on buckets (account_id) where remaining > 0;
      -- buckets whose free credits can still expire (the sweeper's scan)
      create index buckets_expiring on buckets (expires_at) where remaining > held;

      create table reservations (
        account_id text not null references accounts (account_id),
        reservation_id uuid not null,
        state text not null check (state in ('HELD', 'COMMITTED', 'RELEASED', 'EXPIRED')),
        held_amount bigint not null check (held_amount > 0),
        captured_amount bigint not null default 0 check (captured_amount >= 0),
        released_amount bigint not null default 0 check (released_amount >= 0),
        allocations jsonb not null,
        expires_at timestamptz not null,
        created_at timestamptz not null,
        settled_at timestamptz,
        metadata jsonb not null default '{}',
        release_reason text,
        release_detail text not null default '',
        primary key (account_id, reservation_id)
      );
      create index reservations_by_id on reservations (reservation_id);
      -- open holds by expiry (lazy expiry and the sweeper)
      create index reservations_due on reservations (expires_at) where state = 'HELD';

      create table ledger_entries (
        account_id text not null references accounts (account_id),
        entry_id bigint generated always as identity,
        kind text not null check (kind in ('GRANT', 'HOLD', 'CAPTURE', 'RELEASE', 'EXPIRE', 'ADJUST')),
        bucket_id uuid not null,
        reservation_id uuid,
        amount bigint not null check (amount > 0),
        idempotency_key text,
        caller text not null,
        metadata jsonb not null default '{}',
        created_at timestamptz not null,
        primary key (account_id, entry_id)
      );

      -- Entries are never updated or deleted.
      create function ledger_entries_append_only() returns trigger language plpgsql as $$
      begin
        raise exception 'ledger_entries is append-only';
      end
      $$;
      create trigger ledger_entries_append_only
        before update or delete on ledger_entries
        for each row execute function ledger_entries_append_only();

      -- The durable record of every applied mutating call: the idempotency backstop.
      create table operations (
        account_id text not null references accounts (account_id),
        idempotency_key text not null,
        method text not null,
        request_hash bytea not null,
        response bytea not null,
        created_at timestamptz not null,
        primary key (account_id, idempotency_key)
      );
      create index operations_created on operations (created_at);
    `);
  }
}
