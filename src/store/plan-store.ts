import type { MikroORM } from "@mikro-orm/postgresql";
import type { CustomPlanInput, PlanCatalog } from "../app/ports.js";
import { fail, ok, type Result } from "../domain/errors.js";
import type { TopUpPack } from "../domain/grants.js";
import { type Plan, sameTerms } from "../domain/plan.js";
import { planFromRow, type Row } from "./rows.js";
import { type Query, ormQuery } from "./sql.js";
import { guardUnavailable } from "./unavailable.js";

const LATEST = `select distinct on (plan_id) * from plans`;

function packFromRow(row: Row): TopUpPack {
  return {
    packId: row["pack_id"] as string,
    credits: BigInt(row["credits"] as string),
    price: { currencyCode: row["currency"] as string, amountMinor: BigInt(row["price_minor"] as string) },
    validityMonths: Number(row["validity_months"]),
  };
}

async function insertVersion(q: Query, plan: Omit<Plan, "version">, version: number, now: Date): Promise<Plan> {
  await q(
    `insert into plans (plan_id, version, account_id, name, monthly_allowance, price_minor, currency, billing_interval, created_at)
     values (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    [plan.planId, version, plan.accountId, plan.name, plan.monthlyAllowance, plan.price.amountMinor, plan.price.currencyCode, plan.interval, now],
  );
  return { ...plan, version };
}

/** Plans and business packs in Postgres. Plans are append-only versions; a subscription points at one. */
export class PostgresPlanStore implements PlanCatalog {
  constructor(private readonly orm: MikroORM) {}

  async listPlans(): Promise<Plan[]> {
    return guardUnavailable(async () => {
      const rows = await ormQuery(this.orm.em.fork())(`${LATEST} where account_id is null order by plan_id, version desc`);
      return rows.map(planFromRow).sort((a, b) => (a.monthlyAllowance === b.monthlyAllowance ? a.planId.localeCompare(b.planId) : a.monthlyAllowance < b.monthlyAllowance ? -1 : 1));
    });
  }

  async findPlan(planId: string, accountId: string): Promise<Plan | null> {
    return guardUnavailable(async () => {
      const rows = await ormQuery(this.orm.em.fork())(
        `select * from plans where plan_id = ? and (account_id is null or account_id = ?) order by version desc limit 1`,
        [planId, accountId],
      );
      return rows[0] ? planFromRow(rows[0]) : null;
    });
  }

  async findTopUpPack(accountId: string, packId: string): Promise<TopUpPack | null> {
    return guardUnavailable(async () => {
      const rows = await ormQuery(this.orm.em.fork())(`select * from account_top_up_packs where account_id = ? and pack_id = ?`, [accountId, packId]);
      return rows[0] ? packFromRow(rows[0]) : null;
    });
  }

  async saveCustomPlan(input: CustomPlanInput, now: Date): Promise<Result<{ plan: Plan; packs: TopUpPack[] }>> {
    const accountId = input.plan.accountId!;
    return guardUnavailable(() =>
      this.orm.em.fork().transactional(async (em) => {
        const q = ormQuery(em);
        // One writer of plans at a time (as in syncCatalog): two accounts claiming one new plan id
        // would otherwise both find it free and both insert version 1; the second now sees the first's.
        await q(`lock table plans in share row exclusive mode`);
        await q(`insert into accounts (account_id, created_at) values (?, ?) on conflict do nothing`, [accountId, now]);
        await q(`select 1 from accounts where account_id = ? for update`, [accountId]);
        const latest = (await q(`select * from plans where plan_id = ? order by version desc limit 1`, [input.plan.planId])).map(planFromRow)[0];
        if (latest && latest.accountId !== accountId) {
          return fail("INVALID_FIELD", `plan_id: ${input.plan.planId} belongs to another account`, { field: "plan_id" });
        }
        const plan = latest && sameTerms(latest, input.plan) ? latest : await insertVersion(q, input.plan, (latest?.version ?? 0) + 1, now);
        await q(`delete from account_top_up_packs where account_id = ?`, [accountId]);
        for (const pack of input.packs) {
          await q(
            `insert into account_top_up_packs (account_id, pack_id, credits, price_minor, currency, validity_months) values (?, ?, ?, ?, ?, ?)`,
            [accountId, pack.packId, pack.credits, pack.price.amountMinor, pack.price.currencyCode, pack.validityMonths],
          );
        }
        return ok({ plan, packs: [...input.packs] });
      }),
    );
  }

  async syncCatalog(plans: readonly Omit<Plan, "version">[], now: Date): Promise<number> {
    return this.orm.em.fork().transactional(async (em) => {
      const q = ormQuery(em);
      // Servers starting together take turns; the second finds nothing left to add.
      await q(`lock table plans in share row exclusive mode`);
      const current = new Map((await q(`${LATEST} order by plan_id, version desc`)).map((r) => [r["plan_id"] as string, planFromRow(r)]));
      let added = 0;
      for (const plan of plans) {
        const latest = current.get(plan.planId);
        if (latest && sameTerms(latest, plan)) continue;
        if (latest && latest.accountId !== null) throw new Error(`catalog plan ${plan.planId} clashes with a business plan id`);
        await insertVersion(q, plan, (latest?.version ?? 0) + 1, now);
        added += 1;
      }
      return added;
    });
  }
}
