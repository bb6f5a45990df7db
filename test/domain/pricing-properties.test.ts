import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { loadRateCard } from "../../src/catalog/rate-card.js";
import { type GenerationSpec, type ModelRate, QUALITY_ORDER, type Quality, type Quote, quote } from "../../src/domain/pricing.js";

const { card } = loadRateCard();
const MODELS: readonly ModelRate[] = [...card.models.values()];
const RUNS = { numRuns: 500 };

/** The largest pixel count a model accepts (its largest tier), or no limit beyond width × height. */
function maxPixels(rate: ModelRate): number {
  const tiers = rate.resolutionTiers;
  return tiers.length === 0 ? rate.maxWidth * rate.maxHeight : tiers[tiers.length - 1]!.maxPixels;
}

/** The tallest height a model accepts at this width. */
function maxHeightAt(rate: ModelRate, width: number): number {
  return width === 0 ? rate.maxHeight : Math.min(rate.maxHeight, Math.floor(maxPixels(rate) / width));
}

function offered(rate: ModelRate): Quality[] {
  return QUALITY_ORDER.filter((q) => rate.qualityPermille[q] !== undefined);
}

/** Milliseconds whose started seconds fall within the model's limits (0 for models without a duration). */
function durationArb(rate: ModelRate): fc.Arbitrary<number> {
  if (rate.duration === null) return fc.constant(0);
  return fc.integer({ min: (rate.duration.minSeconds - 1) * 1000 + 1, max: rate.duration.maxSeconds * 1000 });
}

function specArb(rate: ModelRate): fc.Arbitrary<GenerationSpec> {
  return fc
    .record({
      width: fc.integer({ min: 0, max: rate.maxWidth }),
      heightFraction: fc.double({ min: 0, max: 1, noNaN: true }),
      durationMs: durationArb(rate),
      count: fc.integer({ min: 1, max: rate.maxCount }),
      quality: fc.constantFrom(...offered(rate)),
    })
    .map(({ width, heightFraction, durationMs, count, quality }) => ({
      model: rate.model,
      kind: rate.kind,
      width,
      height: Math.floor(heightFraction * maxHeightAt(rate, width)),
      durationMs,
      count,
      quality,
    }));
}

const modelArb = fc.constantFrom(...MODELS);
const validSpecArb = modelArb.chain((rate) => specArb(rate).map((spec) => ({ rate, spec })));
const permilleArb = fc.integer({ min: 1, max: 100_000 });

function priced(spec: GenerationSpec, permille = 1000): Quote {
  const result = quote(card, spec, permille);
  if (!result.ok) throw new Error(`a valid spec was refused: ${result.failure.reason} ${JSON.stringify(spec)}`);
  return result.value;
}

/** A number in [from, to] picked by a fraction in [0, 1]. */
const between = (from: number, to: number, fraction: number) => from + Math.floor(fraction * (to - from));

describe("pricing properties over the default rate card", () => {
  it("every valid spec is priced as a whole number of credits at least the model minimum", () => {
    fc.assert(
      fc.property(validSpecArb, permilleArb, ({ rate, spec }, permille) => {
        const q = priced(spec, permille);
        expect(typeof q.credits).toBe("bigint");
        expect(q.credits).toBeGreaterThanOrEqual(rate.minimumCredits);
        expect(q.credits).toBeGreaterThan(0n);
      }),
      RUNS,
    );
  });

  it("the breakdown lines add up to the total", () => {
    fc.assert(
      fc.property(validSpecArb, permilleArb, ({ spec }, permille) => {
        const q = priced(spec, permille);
        expect(q.lines.reduce((s, l) => s + l.credits, 0n)).toBe(q.credits);
        expect(q.lines.find((l) => l.item === "minimum")!.credits).toBeGreaterThanOrEqual(0n);
      }),
      RUNS,
    );
  });

  it("a longer duration never costs less", () => {
    const arb = fc
      .constantFrom(...MODELS.filter((m) => m.duration !== null))
      .chain((rate) => fc.record({ spec: specArb(rate), longer: durationArb(rate) }).map((v) => ({ rate, ...v })));
    fc.assert(
      fc.property(arb, permilleArb, ({ spec, longer }, permille) => {
        const [short, long] = spec.durationMs <= longer ? [spec.durationMs, longer] : [longer, spec.durationMs];
        expect(priced({ ...spec, durationMs: long }, permille).credits).toBeGreaterThanOrEqual(priced({ ...spec, durationMs: short }, permille).credits);
      }),
      RUNS,
    );
  });

  it("a larger width or height never costs less", () => {
    const arb = validSpecArb.chain(({ rate, spec }) =>
      fc.record({ w: fc.double({ min: 0, max: 1, noNaN: true }), h: fc.double({ min: 0, max: 1, noNaN: true }) }).map(({ w, h }) => {
        // Grow the width as far as the current height allows, then the height as far as the new width allows.
        const widthLimit = spec.height === 0 ? rate.maxWidth : Math.min(rate.maxWidth, Math.floor(maxPixels(rate) / spec.height));
        const width = between(spec.width, widthLimit, w);
        const height = between(spec.height, maxHeightAt(rate, width), h);
        return { spec, bigger: { ...spec, width, height } };
      }),
    );
    fc.assert(
      fc.property(arb, permilleArb, ({ spec, bigger }, permille) => {
        expect(bigger.width).toBeGreaterThanOrEqual(spec.width);
        expect(bigger.height).toBeGreaterThanOrEqual(spec.height);
        expect(priced(bigger, permille).credits).toBeGreaterThanOrEqual(priced(spec, permille).credits);
      }),
      RUNS,
    );
  });

  it("a larger count never costs less", () => {
    const arb = validSpecArb.chain(({ rate, spec }) => fc.integer({ min: spec.count, max: rate.maxCount }).map((count) => ({ spec, more: { ...spec, count } })));
    fc.assert(
      fc.property(arb, permilleArb, ({ spec, more }, permille) => {
        expect(priced(more, permille).credits).toBeGreaterThanOrEqual(priced(spec, permille).credits);
      }),
      RUNS,
    );
  });

  it("a higher quality never costs less", () => {
    const arb = validSpecArb.chain(({ rate, spec }) => {
      const higher = offered(rate).filter((q) => QUALITY_ORDER.indexOf(q) >= QUALITY_ORDER.indexOf(spec.quality));
      return fc.constantFrom(...higher).map((quality) => ({ spec, better: { ...spec, quality } }));
    });
    fc.assert(
      fc.property(arb, permilleArb, ({ spec, better }, permille) => {
        expect(priced(better, permille).credits).toBeGreaterThanOrEqual(priced(spec, permille).credits);
      }),
      RUNS,
    );
  });

  it("a larger account multiplier never costs less", () => {
    fc.assert(
      fc.property(validSpecArb, permilleArb, permilleArb, ({ spec }, a, b) => {
        const [p1, p2] = a <= b ? [a, b] : [b, a];
        expect(priced(spec, p1).credits).toBeLessThanOrEqual(priced(spec, p2).credits);
      }),
      RUNS,
    );
  });
});
