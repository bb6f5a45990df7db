import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadRateCard, parseRateCard } from "../../src/catalog/rate-card.js";
import { startTestService } from "../support/harness.js";

type Json = Record<string, unknown>;

const dir = mkdtempSync(join(tmpdir(), "rate-card-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh deep copy of the checked-in card's JSON, to break one entry of. */
function defaultCard(): { version: string; models: Json[] } {
  return structuredClone(loadRateCard().json) as { version: string; models: Json[] };
}

function model(card: { models: Json[] }, id: string): Json {
  const found = card.models.find((m) => m["model"] === id);
  if (!found) throw new Error(`the default card has no ${id}`);
  return found;
}

function indexOf(card: { models: Json[] }, id: string): number {
  return card.models.findIndex((m) => m["model"] === id);
}

function errorOf(json: unknown, source = "test-card.json"): string {
  try {
    parseRateCard(json, source);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  return expect.unreachable("the broken rate card was accepted");
}

function writeTemp(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

describe("parseRateCard", () => {
  it("accepts the checked-in card", () => {
    const card = parseRateCard(defaultCard(), "default");
    expect(card.models.size).toBe(defaultCard().models.length);
    expect(card.models.get("veo-lite")?.baseCredits).toBe(20n);
  });

  it("a model missing baseCredits is refused naming the model and the field", () => {
    const card = defaultCard();
    delete model(card, "sdxl")["baseCredits"];
    const message = errorOf(card);
    expect(message).toMatch(/^invalid rate card test-card\.json: /);
    expect(message).toContain(`models.${indexOf(card, "sdxl")}.baseCredits`);
    expect(message).toContain("sdxl");
  });

  it("a negative credit amount is refused naming the model and the tier", () => {
    const card = defaultCard();
    (model(card, "flux-pro")["resolutionTiers"] as Json[])[1]!["credits"] = -4;
    const message = errorOf(card);
    expect(message).toContain(`models.${indexOf(card, "flux-pro")}.resolutionTiers.1.credits`);
    expect(message).toContain("flux-pro");
  });

  it("a negative minimum is refused naming the model", () => {
    const card = defaultCard();
    model(card, "music-gen")["minimumCredits"] = -1;
    const message = errorOf(card);
    expect(message).toContain(`models.${indexOf(card, "music-gen")}.minimumCredits`);
    expect(message).toContain("music-gen");
  });

  it("descending resolution tiers are refused naming the model", () => {
    const card = defaultCard();
    model(card, "kling-pro")["resolutionTiers"] = [
      { maxPixels: 2073600, credits: 40 },
      { maxPixels: 921600, credits: 0 },
    ];
    const message = errorOf(card);
    expect(message).toContain(`models.${indexOf(card, "kling-pro")}.resolutionTiers`);
    expect(message).toContain("kling-pro");
  });

  it("a larger tier that costs less is refused naming the model", () => {
    const card = defaultCard();
    model(card, "upscale-4x")["resolutionTiers"] = [
      { maxPixels: 4194304, credits: 6 },
      { maxPixels: 16777216, credits: 0 },
    ];
    const message = errorOf(card);
    expect(message).toContain(`models.${indexOf(card, "upscale-4x")}.resolutionTiers`);
    expect(message).toContain("upscale-4x");
  });

  it("a higher quality cheaper than a lower one is refused naming the model", () => {
    const card = defaultCard();
    model(card, "flux-pro")["qualityPermille"] = { STANDARD: 1000, HIGH: 900, ULTRA: 2500 };
    const message = errorOf(card);
    expect(message).toContain(`models.${indexOf(card, "flux-pro")}.qualityPermille`);
    expect(message).toContain("flux-pro");
  });

  it("duplicate model ids are refused naming the duplicated model", () => {
    const card = defaultCard();
    card.models.push({ ...model(card, "veo-lite"), baseCredits: 25 });
    const first = indexOf(card, "veo-lite");
    const second = card.models.length - 1;
    const message = errorOf(card);
    // Either occurrence may be the one named, but the entry's path and the model id must both be there.
    expect(message).toMatch(new RegExp(`models\\.(${first}|${second})\\b`));
    expect(message).toContain("veo-lite");
  });

  it("a fractional credit amount is refused naming the model and the field", () => {
    const card = defaultCard();
    model(card, "animate-diff")["baseCredits"] = 10.5;
    const message = errorOf(card);
    expect(message).toContain(`models.${indexOf(card, "animate-diff")}.baseCredits`);
    expect(message).toContain("animate-diff");
  });

  it("a fractional duration limit is refused naming the model and the field", () => {
    const card = defaultCard();
    (model(card, "voice-tts")["duration"] as Json)["maxSeconds"] = 600.5;
    const message = errorOf(card);
    expect(message).toContain(`models.${indexOf(card, "voice-tts")}.duration.maxSeconds`);
    expect(message).toContain("voice-tts");
  });

  it("the error names the source it was read from", () => {
    const card = defaultCard();
    model(card, "sdxl")["maxCount"] = 0;
    expect(errorOf(card, "/etc/cards/prod.json")).toMatch(/^invalid rate card \/etc\/cards\/prod\.json: .*sdxl/);
  });
});

describe("loadRateCard", () => {
  it("a missing file fails with 'cannot read rate card' and the path", () => {
    const path = join(dir, "does-not-exist.json");
    expect(() => loadRateCard(path)).toThrow(/cannot read rate card .*does-not-exist\.json/);
  });

  it("a file that is not JSON fails with 'cannot read rate card'", () => {
    const path = writeTemp("not-json.json", '{ "version": "x", "models": [ ');
    expect(() => loadRateCard(path)).toThrow(/cannot read rate card .*not-json\.json/);
  });

  it("a valid file elsewhere is loaded", () => {
    const card = defaultCard();
    card.version = "temp-copy";
    const loaded = loadRateCard(writeTemp("valid.json", JSON.stringify(card)));
    expect(loaded.card.version).toBe("temp-copy");
    expect(loaded.card.models.size).toBe(card.models.length);
  });
});

describe("the service refuses to start with a broken catalog", () => {
  it("a broken rate card at RATE_CARD_PATH stops the start with a message naming the model", async () => {
    const card = defaultCard();
    model(card, "veo-lite")["baseCredits"] = -20;
    const path = writeTemp("broken-card.json", JSON.stringify(card));
    await expect(startTestService({ RATE_CARD_PATH: path })).rejects.toThrow(/invalid rate card .*model veo-lite/);
  });

  it("an unreadable rate card at RATE_CARD_PATH stops the start", async () => {
    await expect(startTestService({ RATE_CARD_PATH: join(dir, "missing-card.json") })).rejects.toThrow(/cannot read rate card/);
  });

  it("a broken plan catalog at PLAN_CATALOG_PATH stops the start", async () => {
    const path = writeTemp("broken-plans.json", JSON.stringify({ plans: [{ planId: "pro-monthly", name: "Pro", interval: "WEEK", monthlyAllowance: 5000 }] }));
    await expect(startTestService({ PLAN_CATALOG_PATH: path })).rejects.toThrow(/invalid plan catalog .*plans\.0/);
  });
});
