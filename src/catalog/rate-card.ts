import { readFileSync } from "node:fs";
import { z } from "zod";
import { MAX_CREDITS } from "../domain/limits.js";
import { type ModelRate, QUALITY_ORDER, type RateCard } from "../domain/pricing.js";
import { wholeNumber } from "./load.js";

const MAX_DIMENSION = 16_384;

const modelSchema = z
  .object({
    model: z.string().regex(/^[a-z0-9][a-z0-9.-]{0,63}$/, "must be lowercase letters, digits, dots and dashes"),
    kind: z.enum(["IMAGE", "VIDEO", "ANIMATION", "AUDIO", "UPSCALE"]),
    baseCredits: wholeNumber(MAX_CREDITS),
    maxWidth: z.number().int().min(0).max(MAX_DIMENSION),
    maxHeight: z.number().int().min(0).max(MAX_DIMENSION),
    resolutionTiers: z.array(z.object({ maxPixels: z.number().int().positive(), credits: wholeNumber(MAX_CREDITS) })),
    duration: z
      .object({ minSeconds: z.number().int().min(1), maxSeconds: z.number().int().min(1).max(86_400), creditsPerSecond: wholeNumber(MAX_CREDITS) })
      .refine((d) => d.minSeconds <= d.maxSeconds, { message: "minSeconds must not exceed maxSeconds" })
      .nullable(),
    maxCount: z.number().int().min(1).max(100),
    qualityPermille: z.partialRecord(z.enum(["DRAFT", "STANDARD", "HIGH", "ULTRA"]), z.number().int().min(1).max(100_000)),
    minimumCredits: wholeNumber(MAX_CREDITS),
  })
  .refine((m) => m.resolutionTiers.every((t, i, all) => i === 0 || (t.maxPixels > all[i - 1]!.maxPixels && t.credits >= all[i - 1]!.credits)), {
    message: "resolution tiers must ascend in maxPixels and never get cheaper",
    path: ["resolutionTiers"],
  })
  .refine(
    (m) => {
      const offered = QUALITY_ORDER.map((q) => m.qualityPermille[q]).filter((v): v is number => v !== undefined);
      return offered.length > 0 && offered.every((v, i) => i === 0 || v >= offered[i - 1]!);
    },
    { message: "at least one quality, and a higher quality never costs less", path: ["qualityPermille"] },
  );

const cardSchema = z
  .object({
    version: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "must be 1-64 letters, digits, dots, dashes or underscores"),
    models: z.array(modelSchema).min(1),
  })
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.models.forEach((m, i) => {
      if (seen.has(m.model)) ctx.addIssue({ code: "custom", message: `duplicate model id ${m.model}`, path: ["models", i, "model"] });
      seen.add(m.model);
    });
  });

/** Validates a parsed rate card; the error names the source and the broken entry (with its model id). */
export function parseRateCard(json: unknown, source: string): RateCard {
  const parsed = cardSchema.safeParse(json);
  if (!parsed.success) {
    const models = (json as { models?: { model?: unknown }[] } | null)?.models;
    const issues = parsed.error.issues
      .map((i) => {
        const index = i.path[0] === "models" && typeof i.path[1] === "number" ? i.path[1] : null;
        const name = index !== null && typeof models?.[index]?.model === "string" ? ` (model ${models[index].model})` : "";
        return `${i.path.join(".")}${name}: ${i.message}`;
      })
      .join("; ");
    throw new Error(`invalid rate card ${source}: ${issues}`);
  }
  const models = new Map<string, ModelRate>(parsed.data.models.map((m) => [m.model, m]));
  return { version: parsed.data.version, models };
}

/** The checked-in rate card (src/catalog/rate-card.json), or another file given by RATE_CARD_PATH. */
export function loadRateCard(path: string | URL = new URL("./rate-card.json", import.meta.url)): { card: RateCard; json: unknown } {
  const source = String(path);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`cannot read rate card ${source}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return { card: parseRateCard(json, source), json };
}
