import { Migration } from "@mikro-orm/migrations";

/** Rate card versions, tailored account pricing, and the pricing a hold by spec was made with. */
export class Migration20261125200000Pricing extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      -- Every rate card version ever served; a hold by spec is committed with its own version.
      create table rate_cards (
        version text primary key,
        body jsonb not null,
        created_at timestamptz not null
      );

      -- Business pricing: a multiplier on rate card prices, in permille (1000 = list price).
      alter table accounts add column pricing_permille integer not null default 1000
        check (pricing_permille between 1 and 100000);

      alter table reservations add column pricing jsonb;
    `);
  }
}
