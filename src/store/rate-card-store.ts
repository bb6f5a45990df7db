import type { MikroORM } from "@mikro-orm/postgresql";
import type { AccountPricing, RateCards } from "../app/ports.js";
import { parseRateCard } from "../catalog/rate-card.js";
import type { RateCard } from "../domain/pricing.js";
import { ormQuery } from "./sql.js";
import { guardUnavailable } from "./unavailable.js";

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * Rate card versions in Postgres. A version's prices never change once stored: starting with a
 * changed card under an existing version is refused, so a running generation is never repriced.
 */
export class PostgresRateCards implements RateCards {
  private readonly known = new Map<string, RateCard>();

  private constructor(
    private readonly orm: MikroORM,
    readonly current: RateCard,
  ) {
    this.known.set(current.version, current);
  }

  /** Stores the current card's version (if new) and checks that a stored one has the same prices. */
  static async register(orm: MikroORM, card: RateCard, json: unknown, now: Date): Promise<PostgresRateCards> {
    const q = ormQuery(orm.em.fork());
    await q(`insert into rate_cards (version, body, created_at) values (?, ?::jsonb, ?) on conflict (version) do nothing`, [
      card.version,
      JSON.stringify(json),
      now,
    ]);
    const stored = await q(`select body from rate_cards where version = ?`, [card.version]);
    if (canonical(stored[0]?.["body"]) !== canonical(json)) {
      throw new Error(`rate card version ${card.version} is already stored with other prices: give the changed card a new version`);
    }
    return new PostgresRateCards(orm, card);
  }

  async version(version: string): Promise<RateCard | null> {
    const cached = this.known.get(version);
    if (cached) return cached;
    return guardUnavailable(async () => {
      const rows = await ormQuery(this.orm.em.fork())(`select body from rate_cards where version = ?`, [version]);
      if (!rows[0]) return null;
      const card = parseRateCard(rows[0]["body"], `rate_cards/${version}`);
      this.known.set(version, card);
      return card;
    });
  }
}

/** Account pricing multipliers (accounts.pricing_permille). */
export class PostgresAccountPricing implements AccountPricing {
  constructor(private readonly orm: MikroORM) {}

  async get(accountId: string): Promise<number | null> {
    return guardUnavailable(async () => {
      const rows = await ormQuery(this.orm.em.fork())(`select pricing_permille from accounts where account_id = ?`, [accountId]);
      return rows[0] ? Number(rows[0]["pricing_permille"]) : null;
    });
  }

  async set(accountId: string, permille: number): Promise<boolean> {
    return guardUnavailable(async () => {
      const rows = await ormQuery(this.orm.em.fork())(`update accounts set pricing_permille = ? where account_id = ? returning 1`, [permille, accountId]);
      return rows.length > 0;
    });
  }
}
