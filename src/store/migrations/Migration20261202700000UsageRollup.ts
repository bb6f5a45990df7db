import { Migration } from "@mikro-orm/migrations";

/**
 * The usage rollup (domain/usage.ts): per account, 15-minute slot (account time) and dimensions
 * (model, kind, member, caller), the credits consumed, restored, granted and expired and the
 * generations committed, added to by the persist statement in the write transaction. GetUsage
 * and ForecastBalance read it by the primary key's range (account, slot); Reconcile checks it
 * against the entries. Filled here from the ledger as it stands, by the rules of the time
 * (store/usage-rollup.ts `rebuildUsageRollupSql` then, written out: a migration does what it did
 * when it ran, whatever the live code says now; test/unit/migrations.test.ts). No foreign key to
 * accounts: rows are only ever written with the account's lock held (the account exists), and a
 * key check would cost every write that opens a row an index probe and a row lock.
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
    this.addSql(`delete from usage_rollup e where true`);
    this.addSql(`
    with movements as (
      select e.account_id, to_timestamp(floor(extract(epoch from e.created_at) / 900) * 900) as slot,
        case when e.kind in ('CAPTURE', 'RELEASE') then coalesce(r.pricing -> 'spec' ->> 'model', r.metadata ->> 'model', 'unknown') else '' end as model,
        case when e.kind in ('CAPTURE', 'RELEASE') then coalesce(r.pricing -> 'spec' ->> 'kind', 'unknown') else coalesce(b.kind, 'unknown') end as kind,
        case when e.kind in ('CAPTURE', 'RELEASE') then coalesce(nullif(r.member_id, ''), r.metadata ->> 'member_id', 'unknown') else '' end as member_id,
        e.caller, e.kind as entry_kind, e.amount, e.reservation_id, e.entry_id, r.state
      from ledger_entries e
      left join reservations r on r.account_id = e.account_id and r.reservation_id = e.reservation_id
      left join buckets b on b.account_id = e.account_id and b.bucket_id = e.bucket_id
      where e.kind <> 'HOLD' and true),
    -- A committed hold's generation goes where its last capture or release went.
    last_of_commit as (
      select distinct on (account_id, reservation_id) account_id, reservation_id, entry_id
        from movements where state = 'COMMITTED' and entry_kind in ('CAPTURE', 'RELEASE')
       order by account_id, reservation_id, entry_id desc)
    insert into usage_rollup (account_id, slot, model, kind, member_id, caller, consumed, restored, granted, expired, generations)
    select m.account_id, m.slot, m.model, m.kind, m.member_id, m.caller,
      coalesce(sum(m.amount) filter (where m.entry_kind = 'CAPTURE'), 0),
      coalesce(sum(m.amount) filter (where m.entry_kind = 'RELEASE'), 0),
      coalesce(sum(m.amount) filter (where m.entry_kind in ('GRANT', 'ADJUST')), 0),
      coalesce(sum(m.amount) filter (where m.entry_kind = 'EXPIRE'), 0),
      count(l.entry_id)
    from movements m
    left join last_of_commit l on l.account_id = m.account_id and l.entry_id = m.entry_id
    group by m.account_id, m.slot, m.model, m.kind, m.member_id, m.caller`);
  }
}
