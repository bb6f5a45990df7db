import { fail, ok, type Result } from "./errors.js";

export type GenerationKind = "IMAGE" | "VIDEO" | "ANIMATION" | "AUDIO" | "UPSCALE";
export type Quality = "DRAFT" | "STANDARD" | "HIGH" | "ULTRA";

/** Quality levels from lowest to highest; a rate card's multipliers may not fall along it. */
export const QUALITY_ORDER: readonly Quality[] = ["DRAFT", "STANDARD", "HIGH", "ULTRA"];

/** What a runner is about to generate. */
export interface GenerationSpec {
  readonly model: string;
  readonly kind: GenerationKind;
  readonly width: number;
  readonly height: number;
  /** Whole milliseconds; billed per started second. */
  readonly durationMs: number;
  readonly count: number;
  readonly quality: Quality;
}

/** A resolution step: outputs up to `maxPixels` (width × height) add `credits` per item. */
export interface ResolutionTier {
  readonly maxPixels: number;
  readonly credits: bigint;
}

/** How one model is priced. Multipliers are in permille (1000 = ×1) so that nothing is a float. */
export interface ModelRate {
  readonly model: string;
  readonly kind: GenerationKind;
  readonly baseCredits: bigint;
  readonly maxWidth: number;
  readonly maxHeight: number;
  /** Ascending by maxPixels; the first tier that fits applies. Empty: resolution is free. */
  readonly resolutionTiers: readonly ResolutionTier[];
  /** Null: the model takes no duration (images, upscales). */
  readonly duration: { readonly minSeconds: number; readonly maxSeconds: number; readonly creditsPerSecond: bigint } | null;
  readonly maxCount: number;
  readonly qualityPermille: Readonly<Partial<Record<Quality, number>>>;
  readonly minimumCredits: bigint;
}

export interface RateCard {
  readonly version: string;
  readonly models: ReadonlyMap<string, ModelRate>;
}

export interface QuoteLine {
  readonly item: "base" | "resolution" | "duration" | "quality" | "count" | "account_pricing" | "minimum";
  readonly credits: bigint;
  readonly detail: string;
}

export interface Quote {
  readonly credits: bigint;
  readonly lines: readonly QuoteLine[];
  readonly rateCardVersion: string;
  readonly accountPermille: number;
}

/** ceil(a × permille / 1000) for a ≥ 0. */
function scaleUp(amount: bigint, permille: number): bigint {
  const scaled = amount * BigInt(permille);
  return (scaled + 999n) / 1000n;
}

function checkSpec(rate: ModelRate | undefined, spec: GenerationSpec): Result<ModelRate> {
  if (!rate) return fail("UNKNOWN_MODEL", `model ${spec.model} is not on the rate card`, { field: "spec.model", model: spec.model });
  if (rate.kind !== spec.kind) {
    return fail("UNSUPPORTED_KIND", `model ${spec.model} generates ${rate.kind}, not ${spec.kind}`, { field: "spec.kind", model: spec.model });
  }
  if (spec.width < 0 || spec.height < 0 || spec.width > rate.maxWidth || spec.height > rate.maxHeight) {
    return fail("RESOLUTION_OUT_OF_RANGE", `${spec.width}x${spec.height} exceeds ${rate.maxWidth}x${rate.maxHeight} for ${spec.model}`, {
      field: spec.width < 0 || spec.width > rate.maxWidth ? "spec.width" : "spec.height",
      model: spec.model,
    });
  }
  const pixels = spec.width * spec.height;
  if (rate.resolutionTiers.length > 0 && pixels > rate.resolutionTiers[rate.resolutionTiers.length - 1]!.maxPixels) {
    return fail("RESOLUTION_OUT_OF_RANGE", `${pixels} pixels is above the largest tier of ${spec.model}`, { field: "spec.width", model: spec.model });
  }
  const seconds = Math.ceil(spec.durationMs / 1000);
  if (rate.duration === null ? spec.durationMs !== 0 : seconds < rate.duration.minSeconds || seconds > rate.duration.maxSeconds) {
    const range = rate.duration ? `${rate.duration.minSeconds}-${rate.duration.maxSeconds}s` : "no duration";
    return fail("DURATION_OUT_OF_RANGE", `${spec.model} takes ${range}, not ${spec.durationMs}ms`, { field: "spec.duration", model: spec.model });
  }
  if (spec.count < 1 || spec.count > rate.maxCount) {
    return fail("COUNT_OUT_OF_RANGE", `${spec.model} generates 1 to ${rate.maxCount} items, not ${spec.count}`, { field: "spec.count", model: spec.model });
  }
  if (rate.qualityPermille[spec.quality] === undefined) {
    return fail("UNSUPPORTED_QUALITY", `${spec.model} has no ${spec.quality} quality`, { field: "spec.quality", model: spec.model });
  }
  return ok(rate);
}

/**
 * Prices a generation, in integer credits, always rounding up:
 *   item     = base + resolution tier + credits/second × started seconds
 *   quality  = ceil(item × quality‰ / 1000)
 *   subtotal = quality × count
 *   tailored = ceil(subtotal × account‰ / 1000)      (business pricing; 1000 = list price)
 *   total    = max(tailored, model minimum)
 * The breakdown lines add up to the total (quality and account lines may be negative).
 */
export function quote(card: RateCard, spec: GenerationSpec, accountPermille = 1000): Result<Quote> {
  const checked = checkSpec(card.models.get(spec.model), spec);
  if (!checked.ok) return checked;
  const rate = checked.value;
  const pixels = spec.width * spec.height;
  const tier = rate.resolutionTiers.find((t) => pixels <= t.maxPixels);
  const resolution = tier?.credits ?? 0n;
  const seconds = BigInt(Math.ceil(spec.durationMs / 1000));
  const duration = rate.duration ? rate.duration.creditsPerSecond * seconds : 0n;
  const item = rate.baseCredits + resolution + duration;
  const qualityPermille = rate.qualityPermille[spec.quality]!;
  const perItem = scaleUp(item, qualityPermille);
  const subtotal = perItem * BigInt(spec.count);
  const tailored = scaleUp(subtotal, accountPermille);
  const total = tailored > rate.minimumCredits ? tailored : rate.minimumCredits;
  const lines: QuoteLine[] = [
    { item: "base", credits: rate.baseCredits, detail: `${spec.model} base` },
    { item: "resolution", credits: resolution, detail: `${spec.width}x${spec.height}` },
    { item: "duration", credits: duration, detail: `${seconds}s × ${rate.duration?.creditsPerSecond ?? 0n}` },
    { item: "quality", credits: perItem - item, detail: `${spec.quality} ×${qualityPermille / 1000}` },
    { item: "count", credits: subtotal - perItem, detail: `× ${spec.count}` },
    { item: "account_pricing", credits: tailored - subtotal, detail: `×${accountPermille / 1000}` },
    { item: "minimum", credits: total - tailored, detail: `minimum ${rate.minimumCredits}` },
  ];
  return ok({ credits: total, lines, rateCardVersion: card.version, accountPermille });
}
