import { describe, expect, it } from "vitest";
import { loadRateCard } from "../../src/catalog/rate-card.js";
import type { FailureReason } from "../../src/domain/errors.js";
import { type GenerationKind, type GenerationSpec, type Quality, type Quote, quote } from "../../src/domain/pricing.js";

/**
 * Prices of the checked-in rate card (src/catalog/rate-card.json), computed by hand:
 *   item     = base + resolution tier + credits/second × started seconds
 *   per item = ceil(item × quality‰ / 1000)
 *   subtotal = per item × count
 *   tailored = ceil(subtotal × account‰ / 1000)
 *   total    = max(tailored, model minimum)
 */
const { card } = loadRateCard();

function spec(model: string, kind: GenerationKind, width: number, height: number, durationMs: number, count: number, quality: Quality): GenerationSpec {
  return { model, kind, width, height, durationMs, count, quality };
}

function priced(s: GenerationSpec, accountPermille?: number): Quote {
  const result = quote(card, s, accountPermille);
  if (!result.ok) return expect.unreachable(`expected a price, got ${result.failure.reason}: ${result.failure.message}`);
  return result.value;
}

function refusal(s: GenerationSpec): { reason: FailureReason; metadata: Readonly<Record<string, string>> } {
  const result = quote(card, s);
  if (result.ok) return expect.unreachable(`expected a refusal, got a price of ${result.value.credits}`);
  return result.failure;
}

const sumLines = (q: Quote) => q.lines.reduce((s, l) => s + l.credits, 0n);

interface Row {
  readonly rule: string;
  readonly spec: GenerationSpec;
  readonly permille?: number;
  readonly expected: bigint;
}

const MODELS_PRICED = [
  "flux-schnell",
  "flux-pro",
  "sdxl",
  "veo-lite",
  "kling-pro",
  "animate-diff",
  "live-portrait",
  "voice-tts",
  "music-gen",
  "upscale-4x",
];

const ROWS: readonly Row[] = [
  // flux-schnell: base 2; tiers ≤1048576:0, ≤2359296:2, ≤4194304:5; DRAFT 500, STANDARD 1000, HIGH 1500; min 1
  {
    rule: "flux-schnell at exactly 1024×1024 (the first tier's maxPixels) adds no resolution credits",
    spec: spec("flux-schnell", "IMAGE", 1024, 1024, 0, 1, "STANDARD"),
    expected: 2n, // (2 + 0) = 2 → ×1 = 2 → ×1 = 2
  },
  {
    rule: "flux-schnell one column over the first tier pays the second tier",
    spec: spec("flux-schnell", "IMAGE", 1025, 1024, 0, 1, "STANDARD"),
    expected: 4n, // 1025×1024 = 1049600 > 1048576 → (2 + 2) = 4 → ×1 = 4
  },
  {
    rule: "flux-schnell at exactly 1536×1536 (second tier's maxPixels), HIGH, count 3",
    spec: spec("flux-schnell", "IMAGE", 1536, 1536, 0, 3, "HIGH"),
    expected: 18n, // (2 + 2) = 4 → ×1.5 = 6 → ×3 = 18
  },
  {
    rule: "flux-schnell DRAFT rounds each item up before multiplying by count",
    spec: spec("flux-schnell", "IMAGE", 2048, 2048, 0, 8, "DRAFT"),
    expected: 32n, // 2048×2048 = 4194304 (third tier) → (2 + 5) = 7 → ×0.5 = 3.5 → 4 → ×8 = 32
  },
  {
    rule: "flux-schnell cheapest spec costs exactly its 1-credit minimum",
    spec: spec("flux-schnell", "IMAGE", 512, 512, 0, 1, "DRAFT"),
    expected: 1n, // (2 + 0) = 2 → ×0.5 = 1 → ×1 = 1 → max(1, min 1) = 1
  },
  // flux-pro: base 8; tiers ≤1048576:0, ≤2359296:4, ≤4194304:10; STANDARD 1000, HIGH 1500, ULTRA 2500; min 8; maxCount 4
  {
    rule: "flux-pro at exactly 1536×1536 (second tier's maxPixels), ULTRA, count 2",
    spec: spec("flux-pro", "IMAGE", 1536, 1536, 0, 2, "ULTRA"),
    expected: 60n, // (8 + 4) = 12 → ×2.5 = 30 → ×2 = 60
  },
  {
    rule: "flux-pro one row over the second tier pays the third tier",
    spec: spec("flux-pro", "IMAGE", 1536, 1537, 0, 1, "STANDARD"),
    expected: 18n, // 1536×1537 = 2360832 > 2359296 → (8 + 10) = 18 → ×1 = 18
  },
  {
    rule: "flux-pro at the largest size, HIGH, its maximum count of 4",
    spec: spec("flux-pro", "IMAGE", 2048, 2048, 0, 4, "HIGH"),
    expected: 108n, // (8 + 10) = 18 → ×1.5 = 27 → ×4 = 108
  },
  {
    rule: "flux-pro under 20 % off falls below its minimum and is raised to 8",
    spec: spec("flux-pro", "IMAGE", 1024, 1024, 0, 1, "STANDARD"),
    permille: 800,
    expected: 8n, // (8 + 0) = 8 → ×1 = 8 → ×0.8 = 6.4 → 7 → max(7, min 8) = 8
  },
  // sdxl: base 3; max 1536×1536; tiers ≤1048576:0, ≤2359296:3; DRAFT 500, STANDARD 1000, HIGH 1400; min 1
  {
    rule: "sdxl at exactly 1536×1536 (the largest tier's maxPixels), HIGH rounds up",
    spec: spec("sdxl", "IMAGE", 1536, 1536, 0, 2, "HIGH"),
    expected: 18n, // (3 + 3) = 6 → ×1.4 = 8.4 → 9 → ×2 = 18
  },
  {
    rule: "sdxl DRAFT rounds a half credit up",
    spec: spec("sdxl", "IMAGE", 512, 512, 0, 1, "DRAFT"),
    expected: 2n, // (3 + 0) = 3 → ×0.5 = 1.5 → 2 → ×1 = 2
  },
  {
    rule: "sdxl cheapest spec at the lowest account multiplier costs exactly its 1-credit minimum",
    spec: spec("sdxl", "IMAGE", 512, 512, 0, 1, "DRAFT"),
    permille: 1,
    expected: 1n, // 2 (as above) → ×0.001 = 0.002 → 1 → max(1, min 1) = 1
  },
  {
    rule: "sdxl at exactly 1024×1024 (first tier's maxPixels), count 5",
    spec: spec("sdxl", "IMAGE", 1024, 1024, 0, 5, "STANDARD"),
    expected: 15n, // (3 + 0) = 3 → ×1 = 3 → ×5 = 15
  },
  // veo-lite: base 20; max 1920×1920; tiers ≤921600:0, ≤2073600:20; 2–10 s at 10/s; maxCount 2; STANDARD 1000, HIGH 1800; min 30
  {
    rule: "veo-lite 1920×1080 (exactly the top tier), 6.5 s billed as 7 started seconds, HIGH, count 2",
    spec: spec("veo-lite", "VIDEO", 1920, 1080, 6500, 2, "HIGH"),
    expected: 396n, // (20 + 20 + 7×10) = 110 → ×1.8 = 198 → ×2 = 396
  },
  {
    rule: "veo-lite 1280×720 (exactly the first tier's maxPixels) at its shortest duration",
    spec: spec("veo-lite", "VIDEO", 1280, 720, 2000, 1, "STANDARD"),
    expected: 40n, // (20 + 0 + 2×10) = 40 → ×1 = 40
  },
  {
    rule: "veo-lite bills 2.001 s as 3 started seconds",
    spec: spec("veo-lite", "VIDEO", 640, 480, 2001, 1, "STANDARD"),
    expected: 50n, // (20 + 0 + 3×10) = 50 → ×1 = 50
  },
  {
    rule: "veo-lite under 30 % off falls below its minimum and is raised to 30",
    spec: spec("veo-lite", "VIDEO", 640, 480, 2000, 1, "STANDARD"),
    permille: 700,
    expected: 30n, // (20 + 0 + 20) = 40 → ×0.7 = 28 → max(28, min 30) = 30
  },
  // kling-pro: base 40; max 3840; tiers ≤921600:0, ≤2073600:40, ≤8294400:160; 5–20 s at 25/s; maxCount 1; STANDARD 1000, HIGH 1600, ULTRA 2400; min 100
  {
    rule: "kling-pro 3840×2160 (exactly the top tier), 20 s, ULTRA",
    spec: spec("kling-pro", "VIDEO", 3840, 2160, 20_000, 1, "ULTRA"),
    expected: 1680n, // (40 + 160 + 20×25) = 700 → ×2.4 = 1680
  },
  {
    rule: "kling-pro 1920×1080 (exactly the second tier's maxPixels), 10 s, HIGH",
    spec: spec("kling-pro", "VIDEO", 1920, 1080, 10_000, 1, "HIGH"),
    expected: 528n, // (40 + 40 + 10×25) = 330 → ×1.6 = 528
  },
  {
    rule: "kling-pro bills 4.001 s as 5 started seconds (its minimum)",
    spec: spec("kling-pro", "VIDEO", 1280, 720, 4001, 1, "STANDARD"),
    expected: 165n, // (40 + 0 + 5×25) = 165 → ×1 = 165
  },
  {
    rule: "kling-pro at half price falls below its minimum and is raised to 100",
    spec: spec("kling-pro", "VIDEO", 640, 360, 5000, 1, "STANDARD"),
    permille: 500,
    expected: 100n, // (40 + 0 + 125) = 165 → ×0.5 = 82.5 → 83 → max(83, min 100) = 100
  },
  // animate-diff: base 10; max 1024; tiers ≤262144:0, ≤1048576:8; 1–8 s at 6/s; maxCount 4; DRAFT 600, STANDARD 1000, HIGH 1500; min 10
  {
    rule: "animate-diff 1024×1024 (exactly the top tier), 8 s, HIGH, count 4",
    spec: spec("animate-diff", "ANIMATION", 1024, 1024, 8000, 4, "HIGH"),
    expected: 396n, // (10 + 8 + 8×6) = 66 → ×1.5 = 99 → ×4 = 396
  },
  {
    rule: "animate-diff one column over the first tier pays the second tier",
    spec: spec("animate-diff", "ANIMATION", 513, 512, 3000, 2, "STANDARD"),
    expected: 72n, // 513×512 = 262656 > 262144 → (10 + 8 + 3×6) = 36 → ×1 = 36 → ×2 = 72
  },
  {
    rule: "animate-diff 512×512 (exactly the first tier's maxPixels), DRAFT rounds up to its minimum",
    spec: spec("animate-diff", "ANIMATION", 512, 512, 1000, 1, "DRAFT"),
    expected: 10n, // (10 + 0 + 6) = 16 → ×0.6 = 9.6 → 10 → max(10, min 10) = 10
  },
  {
    rule: "animate-diff DRAFT under 20 % off falls below its minimum and is raised to 10",
    spec: spec("animate-diff", "ANIMATION", 256, 256, 500, 1, "DRAFT"),
    permille: 800,
    expected: 10n, // 0.5 s → 1 s: (10 + 0 + 6) = 16 → ×0.6 = 9.6 → 10 → ×0.8 = 8 → max(8, min 10) = 10
  },
  // live-portrait: base 6; max 1024; one tier ≤1048576:0; 1–30 s at 3/s; maxCount 1; STANDARD 1000, HIGH 1300; min 6
  {
    rule: "live-portrait 1024×1024 (exactly its only tier), 30 s, HIGH rounds up",
    spec: spec("live-portrait", "ANIMATION", 1024, 1024, 30_000, 1, "HIGH"),
    expected: 125n, // (6 + 0 + 30×3) = 96 → ×1.3 = 124.8 → 125
  },
  {
    rule: "live-portrait 1 s STANDARD",
    spec: spec("live-portrait", "ANIMATION", 512, 512, 1000, 1, "STANDARD"),
    expected: 9n, // (6 + 0 + 1×3) = 9 → ×1 = 9
  },
  {
    rule: "live-portrait at half price falls below its minimum and is raised to 6",
    spec: spec("live-portrait", "ANIMATION", 512, 512, 1000, 1, "STANDARD"),
    permille: 500,
    expected: 6n, // 9 → ×0.5 = 4.5 → 5 → max(5, min 6) = 6
  },
  // voice-tts: base 1; 0×0 only; no tiers; 1–600 s at 1/s; maxCount 1; STANDARD 1000, HIGH 2000; min 2
  {
    rule: "voice-tts 1 s costs exactly its minimum",
    spec: spec("voice-tts", "AUDIO", 0, 0, 1000, 1, "STANDARD"),
    expected: 2n, // (1 + 0 + 1×1) = 2 → ×1 = 2 → max(2, min 2) = 2
  },
  {
    rule: "voice-tts at its longest duration (600 s), HIGH",
    spec: spec("voice-tts", "AUDIO", 0, 0, 600_000, 1, "HIGH"),
    expected: 1202n, // (1 + 0 + 600×1) = 601 → ×2 = 1202
  },
  {
    rule: "voice-tts bills 90.5 s as 91 started seconds",
    spec: spec("voice-tts", "AUDIO", 0, 0, 90_500, 1, "STANDARD"),
    expected: 92n, // (1 + 0 + 91×1) = 92
  },
  {
    rule: "voice-tts at half price falls below its minimum and is raised to 2",
    spec: spec("voice-tts", "AUDIO", 0, 0, 1000, 1, "STANDARD"),
    permille: 500,
    expected: 2n, // 2 → ×0.5 = 1 → max(1, min 2) = 2
  },
  // music-gen: base 5; 0×0 only; 5–240 s at 2/s; maxCount 2; DRAFT 500, STANDARD 1000, HIGH 1500; min 10
  {
    rule: "music-gen DRAFT at its shortest duration is raised to its minimum at list price",
    spec: spec("music-gen", "AUDIO", 0, 0, 5000, 1, "DRAFT"),
    expected: 10n, // (5 + 0 + 5×2) = 15 → ×0.5 = 7.5 → 8 → max(8, min 10) = 10
  },
  {
    rule: "music-gen at its longest duration (240 s), HIGH, count 2",
    spec: spec("music-gen", "AUDIO", 0, 0, 240_000, 2, "HIGH"),
    expected: 1456n, // (5 + 0 + 240×2) = 485 → ×1.5 = 727.5 → 728 → ×2 = 1456
  },
  {
    rule: "music-gen 30 s STANDARD",
    spec: spec("music-gen", "AUDIO", 0, 0, 30_000, 1, "STANDARD"),
    expected: 65n, // (5 + 0 + 30×2) = 65
  },
  // upscale-4x: base 4; max 8192; tiers ≤4194304:0, ≤16777216:6, ≤67108864:16; maxCount 4; STANDARD 1000, HIGH 1500; min 4
  {
    rule: "upscale-4x 2048×2048 (exactly the first tier's maxPixels) costs exactly its minimum",
    spec: spec("upscale-4x", "UPSCALE", 2048, 2048, 0, 1, "STANDARD"),
    expected: 4n, // (4 + 0) = 4 → ×1 = 4 → max(4, min 4) = 4
  },
  {
    rule: "upscale-4x 4096×4096 (exactly the second tier's maxPixels), HIGH, count 3",
    spec: spec("upscale-4x", "UPSCALE", 4096, 4096, 0, 3, "HIGH"),
    expected: 45n, // (4 + 6) = 10 → ×1.5 = 15 → ×3 = 45
  },
  {
    rule: "upscale-4x one column over the second tier pays the third tier",
    spec: spec("upscale-4x", "UPSCALE", 4097, 4096, 0, 1, "STANDARD"),
    expected: 20n, // 4097×4096 = 16781312 > 16777216 → (4 + 16) = 20
  },
  {
    rule: "upscale-4x 8192×8192 (exactly the top tier), HIGH, count 4",
    spec: spec("upscale-4x", "UPSCALE", 8192, 8192, 0, 4, "HIGH"),
    expected: 120n, // (4 + 16) = 20 → ×1.5 = 30 → ×4 = 120
  },
  {
    rule: "upscale-4x at half price falls below its minimum and is raised to 4",
    spec: spec("upscale-4x", "UPSCALE", 1024, 1024, 0, 1, "STANDARD"),
    permille: 500,
    expected: 4n, // 4 → ×0.5 = 2 → max(2, min 4) = 4
  },
];

describe("rate card prices (default card)", () => {
  it("the table covers every model of the default card with at least 2 rows each", () => {
    expect([...card.models.keys()].sort()).toEqual([...MODELS_PRICED].sort());
    for (const model of MODELS_PRICED) {
      expect(ROWS.filter((r) => r.spec.model === model).length, model).toBeGreaterThanOrEqual(2);
    }
  });

  it.each(ROWS.map((r) => [r.rule, r] as const))("%s", (_rule, row) => {
    const q = priced(row.spec, row.permille);
    expect(q.credits).toBe(row.expected);
    expect(sumLines(q)).toBe(q.credits);
    expect(q.rateCardVersion).toBe(card.version);
    expect(q.accountPermille).toBe(row.permille ?? 1000);
  });

  it("the breakdown itemises base, resolution, duration, quality and count and adds up to the total", () => {
    const q = priced(spec("veo-lite", "VIDEO", 1920, 1080, 6500, 2, "HIGH"));
    // (20 + 20 + 70) = 110 → ×1.8 = 198 (+88) → ×2 = 396 (+198)
    expect(q.lines.map((l) => [l.item, l.credits])).toEqual([
      ["base", 20n],
      ["resolution", 20n],
      ["duration", 70n],
      ["quality", 88n],
      ["count", 198n],
      ["account_pricing", 0n],
      ["minimum", 0n],
    ]);
    expect(sumLines(q)).toBe(396n);
  });

  it("a cheaper quality shows as a negative quality line and the minimum tops up the rest", () => {
    const q = priced(spec("music-gen", "AUDIO", 0, 0, 5000, 1, "DRAFT"));
    // (5 + 10) = 15 → ×0.5 = 8 (−7) → ×1 (0) → min 10 (+2)
    expect(q.lines.map((l) => [l.item, l.credits])).toEqual([
      ["base", 5n],
      ["resolution", 0n],
      ["duration", 10n],
      ["quality", -7n],
      ["count", 0n],
      ["account_pricing", 0n],
      ["minimum", 2n],
    ]);
    expect(q.credits).toBe(10n);
  });
});

describe("account pricing", () => {
  it("800‰ (20 % off) takes 20 % off the subtotal, rounding up", () => {
    const q = priced(spec("veo-lite", "VIDEO", 1920, 1080, 6500, 2, "HIGH"), 800);
    expect(q.credits).toBe(317n); // 396 → ×0.8 = 316.8 → 317
    expect(q.lines.find((l) => l.item === "account_pricing")?.credits).toBe(-79n); // 317 − 396
    expect(q.accountPermille).toBe(800);
    expect(sumLines(q)).toBe(317n);
  });

  it("800‰ on a price divisible by 5 is exact", () => {
    const q = priced(spec("kling-pro", "VIDEO", 1280, 720, 5000, 1, "STANDARD"), 800);
    expect(q.credits).toBe(132n); // 165 → ×0.8 = 132
  });

  it("1500‰ adds 50 % to the subtotal", () => {
    const q = priced(spec("veo-lite", "VIDEO", 1920, 1080, 6500, 2, "HIGH"), 1500);
    expect(q.credits).toBe(594n); // 396 → ×1.5 = 594
    expect(q.lines.find((l) => l.item === "account_pricing")?.credits).toBe(198n);
    expect(sumLines(q)).toBe(594n);
  });

  it("1500‰ rounds a half credit up", () => {
    const q = priced(spec("live-portrait", "ANIMATION", 1024, 1024, 30_000, 1, "HIGH"), 1500);
    expect(q.credits).toBe(188n); // 125 → ×1.5 = 187.5 → 188
    expect(sumLines(q)).toBe(188n);
  });

  it("1500‰ applies after the count, not per item", () => {
    const q = priced(spec("music-gen", "AUDIO", 0, 0, 30_000, 2, "STANDARD"), 1500);
    expect(q.credits).toBe(195n); // 65 → ×2 = 130 → ×1.5 = 195
  });

  it("list price is 1000‰", () => {
    expect(priced(spec("music-gen", "AUDIO", 0, 0, 30_000, 1, "STANDARD"), 1000).credits).toBe(65n);
    expect(priced(spec("music-gen", "AUDIO", 0, 0, 30_000, 1, "STANDARD")).credits).toBe(65n);
  });
});

describe("specs the rate card refuses", () => {
  /** A resolution refusal names the width or the height. */
  const RESOLUTION_FIELD = /^spec\.(width|height)$/;
  const cases: readonly (readonly [string, GenerationSpec, FailureReason, RegExp])[] = [
    ["a model not on the card", spec("dall-e-9", "IMAGE", 512, 512, 0, 1, "STANDARD"), "UNKNOWN_MODEL", /^spec\.model$/],
    ["a kind the model does not generate", spec("flux-pro", "VIDEO", 512, 512, 0, 1, "STANDARD"), "UNSUPPORTED_KIND", /^spec\.kind$/],
    ["a width over the model's maximum", spec("sdxl", "IMAGE", 1537, 512, 0, 1, "STANDARD"), "RESOLUTION_OUT_OF_RANGE", RESOLUTION_FIELD],
    ["a height over the model's maximum", spec("flux-pro", "IMAGE", 512, 2049, 0, 1, "STANDARD"), "RESOLUTION_OUT_OF_RANGE", RESOLUTION_FIELD],
    // 1920×1200 = 2304000 > 2073600 although both sides are within 1920
    ["more pixels than the largest tier", spec("veo-lite", "VIDEO", 1920, 1200, 5000, 1, "STANDARD"), "RESOLUTION_OUT_OF_RANGE", RESOLUTION_FIELD],
    // 3840×3840 = 14745600 > 8294400
    ["the maximum width and height together over the largest tier", spec("kling-pro", "VIDEO", 3840, 3840, 5000, 1, "STANDARD"), "RESOLUTION_OUT_OF_RANGE", RESOLUTION_FIELD],
    ["any resolution for an audio model", spec("voice-tts", "AUDIO", 1, 1, 1000, 1, "STANDARD"), "RESOLUTION_OUT_OF_RANGE", RESOLUTION_FIELD],
    ["a negative width", spec("sdxl", "IMAGE", -1, 512, 0, 1, "STANDARD"), "RESOLUTION_OUT_OF_RANGE", RESOLUTION_FIELD],
    ["a duration below the model's minimum (4 s < 5 s)", spec("kling-pro", "VIDEO", 1280, 720, 4000, 1, "STANDARD"), "DURATION_OUT_OF_RANGE", /^spec\.duration$/],
    ["no duration for a video model", spec("veo-lite", "VIDEO", 1280, 720, 0, 1, "STANDARD"), "DURATION_OUT_OF_RANGE", /^spec\.duration$/],
    // 10.001 s is 11 started seconds > 10
    ["a duration above the model's maximum by one started second", spec("veo-lite", "VIDEO", 1280, 720, 10_001, 1, "STANDARD"), "DURATION_OUT_OF_RANGE", /^spec\.duration$/],
    ["a duration above the audio model's maximum", spec("voice-tts", "AUDIO", 0, 0, 601_000, 1, "STANDARD"), "DURATION_OUT_OF_RANGE", /^spec\.duration$/],
    ["a duration given to an image model", spec("flux-pro", "IMAGE", 512, 512, 1000, 1, "STANDARD"), "DURATION_OUT_OF_RANGE", /^spec\.duration$/],
    ["a duration given to an upscale model", spec("upscale-4x", "UPSCALE", 1024, 1024, 1, 1, "STANDARD"), "DURATION_OUT_OF_RANGE", /^spec\.duration$/],
    ["a count of 0", spec("flux-pro", "IMAGE", 512, 512, 0, 0, "STANDARD"), "COUNT_OUT_OF_RANGE", /^spec\.count$/],
    ["a count over the model's maximum", spec("flux-pro", "IMAGE", 512, 512, 0, 5, "STANDARD"), "COUNT_OUT_OF_RANGE", /^spec\.count$/],
    ["a second clip from a one-clip model", spec("kling-pro", "VIDEO", 1280, 720, 5000, 2, "STANDARD"), "COUNT_OUT_OF_RANGE", /^spec\.count$/],
    ["a quality below what the model offers", spec("flux-pro", "IMAGE", 512, 512, 0, 1, "DRAFT"), "UNSUPPORTED_QUALITY", /^spec\.quality$/],
    ["a quality above what the model offers", spec("veo-lite", "VIDEO", 1280, 720, 5000, 1, "ULTRA"), "UNSUPPORTED_QUALITY", /^spec\.quality$/],
  ];

  it.each(cases)("%s is refused", (_rule, s, reason, field) => {
    const failure = refusal(s);
    expect(failure.reason).toBe(reason);
    expect(failure.metadata["field"]).toMatch(field);
    expect(failure.metadata["model"]).toBe(s.model);
  });

  it("the same specs just inside the limits are priced", () => {
    // The valid neighbours of the refusals above.
    expect(priced(spec("sdxl", "IMAGE", 1536, 512, 0, 1, "STANDARD")).credits).toBe(3n); // 786432 px ≤ 1048576 → 3
    expect(priced(spec("veo-lite", "VIDEO", 1920, 1080, 10_000, 1, "STANDARD")).credits).toBe(140n); // (20 + 20 + 100) = 140
    expect(priced(spec("flux-pro", "IMAGE", 512, 512, 0, 4, "STANDARD")).credits).toBe(32n); // 8 × 4 = 32
    expect(priced(spec("voice-tts", "AUDIO", 0, 0, 600_000, 1, "STANDARD")).credits).toBe(601n); // 1 + 600 = 601
  });
});
