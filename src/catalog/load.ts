import { readFileSync } from "node:fs";
import { z } from "zod";
import { MAX_CREDITS, MAX_MONEY_MINOR } from "../domain/limits.js";
import type { Plan } from "../domain/plan.js";

/** A whole number given as a JSON integer (≤ 2^53) or a digit string, read as bigint. */
export const wholeNumber = (max: bigint) =>
  z
    .union([z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER), z.string().regex(/^\d{1,19}$/)])
    .transform((v) => BigInt(v))
    .refine((v) => v <= max, { message: `must be at most ${max}` });

export const moneySchema = z.object({
  currencyCode: z.string().regex(/^[A-Z]{3}$/, "must be an ISO 4217 code"),
  amountMinor: wholeNumber(MAX_MONEY_MINOR),
});

const planSchema = z.object({
  planId: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, "must be lowercase letters, digits and dashes"),
  name: z.string().min(1).max(128),
  interval: z.enum(["MONTH", "YEAR"]),
  monthlyAllowance: wholeNumber(MAX_CREDITS),
  price: moneySchema,
});

const catalogSchema = z
  .object({ plans: z.array(planSchema).min(1) })
  .refine((c) => new Set(c.plans.map((p) => p.planId)).size === c.plans.length, { message: "plan ids must be unique", path: ["plans"] });

export type CatalogPlan = Omit<Plan, "version">;

/** Validates a parsed catalog file; the error names the file and the broken entry. */
export function parsePlanCatalog(json: unknown, source: string): CatalogPlan[] {
  const parsed = catalogSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new Error(`invalid plan catalog ${source}: ${issues}`);
  }
  return parsed.data.plans.map((p) => ({ ...p, accountId: null }));
}

/** The checked-in plan catalog (src/catalog/plans.json), or another file given by PLAN_CATALOG_PATH. */
export function loadPlanCatalog(path: string | URL = new URL("./plans.json", import.meta.url)): CatalogPlan[] {
  const source = String(path);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`cannot read plan catalog ${source}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return parsePlanCatalog(json, source);
}
