import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GenerationKind, GenerationSpecSchema, LedgerEntryKind, Quality, ReservationState } from "../../src/client/index.js";
import { loadRateCard } from "../../src/catalog/rate-card.js";
import { runDatabaseUrl, TEST_DATABASE_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { failureOf } from "../support/e2e.js";

/** The checked-in card: its version and JSON (the prices below are computed by hand from it). */
const DEFAULT = loadRateCard();
const VERSION = DEFAULT.card.version;

const dir = mkdtempSync(join(tmpdir(), "pricing-e2e-"));

let t: TestService;
beforeAll(async () => {
  // Starting the default service first stores the default card's version before any test changes it.
  t = await startTestService();
});
afterAll(async () => {
  await t.stop();
  rmSync(dir, { recursive: true, force: true });
});

type SpecInit = MessageInitShape<typeof GenerationSpecSchema>;

function spec(model: string, kind: GenerationKind, width: number, height: number, durationMs: number | null, count: number, quality: Quality): SpecInit {
  return { model, kind, width, height, duration: durationMs === null ? undefined : durationFromMs(durationMs), count, quality };
}

// veo-lite 1920×1080, 6.5 s (7 started seconds), HIGH, count 2: (20 + 20 + 7×10) = 110 → ×1.8 = 198 → ×2 = 396
const VEO_396 = spec("veo-lite", GenerationKind.VIDEO, 1920, 1080, 6500, 2, Quality.HIGH);
// veo-lite 1920×1080, 4 s, HIGH, count 1: (20 + 20 + 4×10) = 80 → ×1.8 = 144
const VEO_144 = spec("veo-lite", GenerationKind.VIDEO, 1920, 1080, 4000, 1, Quality.HIGH);
// kling-pro 1280×720, 5 s, STANDARD: (40 + 0 + 5×25) = 165
const KLING_165 = spec("kling-pro", GenerationKind.VIDEO, 1280, 720, 5000, 1, Quality.STANDARD);
// kling-pro 1920×1080, 10 s, HIGH: (40 + 40 + 10×25) = 330 → ×1.6 = 528
const KLING_528 = spec("kling-pro", GenerationKind.VIDEO, 1920, 1080, 10_000, 1, Quality.HIGH);
// kling-pro 3840×2160, 20 s, ULTRA: (40 + 160 + 20×25) = 700 → ×2.4 = 1680
const KLING_1680 = spec("kling-pro", GenerationKind.VIDEO, 3840, 2160, 20_000, 1, Quality.ULTRA);

async function fund(accountId: string, amount: bigint, svc: TestService = t): Promise<void> {
  await svc.admin.adjustCredits({ accountId, amount, reason: "pricing test funding", idempotencyKey: newKey("fund") });
}

function reserveSpec(accountId: string, s: SpecInit, svc: TestService = t) {
  return svc.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "spec", value: create(GenerationSpecSchema, s) } });
}

function commitSpec(reservationId: string, s: SpecInit, svc: TestService = t) {
  return svc.credit.commit({ reservationId, idempotencyKey: newKey("commit"), actual: { case: "spec", value: create(GenerationSpecSchema, s) } });
}

async function entriesOf(accountId: string, kinds: LedgerEntryKind[] = []) {
  const res = await t.admin.listLedgerEntries({ accountId, kinds, pageSize: 1000 });
  expect(res.nextPageToken).toBe("");
  return res.entries;
}

const sum = (xs: readonly { amount: bigint }[]) => xs.reduce((s, x) => s + x.amount, 0n);

/** A copy of the default card with changes, written to a temp file; returns its path. */
function cardFile(change: (card: { version: string; models: Record<string, unknown>[] }) => void): string {
  const card = structuredClone(DEFAULT.json) as { version: string; models: Record<string, unknown>[] };
  change(card);
  const path = join(dir, `card-${randomUUID()}.json`);
  writeFileSync(path, JSON.stringify(card));
  return path;
}

function modelOf(card: { models: Record<string, unknown>[] }, id: string): Record<string, unknown> {
  const found = card.models.find((m) => m["model"] === id);
  if (!found) throw new Error(`no ${id} on the default card`);
  return found;
}

describe("Quote", () => {
  it("returns the credits, a breakdown adding up to them and the rate card version", async () => {
    const q = await t.credit.quote({ spec: VEO_396 });
    expect(q.credits).toBe(396n);
    expect(q.rateCardVersion).toBe(VERSION);
    expect(q.breakdown.map((l) => [l.item, l.credits])).toEqual([
      ["base", 20n],
      ["resolution", 20n],
      ["duration", 70n],
      ["quality", 88n], // 198 − 110
      ["count", 198n], // 396 − 198
      ["account_pricing", 0n],
      ["minimum", 0n],
    ]);
    expect(q.breakdown.reduce((s, l) => s + l.credits, 0n)).toBe(q.credits);
  });

  it("an unset quality is STANDARD and a count of 0 is one item", async () => {
    // kling-pro 1280×720, 5 s: (40 + 0 + 125) = 165
    const q = await t.credit.quote({ spec: spec("kling-pro", GenerationKind.VIDEO, 1280, 720, 5000, 0, Quality.UNSPECIFIED) });
    expect(q.credits).toBe(165n);
  });

  it("a quote for an account that does not exist is NotFound", async () => {
    const failure = await failureOf(t.credit.quote({ spec: VEO_396, accountId: newAccountId("ghost") }));
    expect(failure.code).toBe(Code.NotFound);
    expect(failure.reason).toBe("ACCOUNT_NOT_FOUND");
  });
});

describe("Reserve and Commit by spec", () => {
  it("Reserve by spec holds exactly the quoted price and records how it was priced", async () => {
    const accountId = newAccountId();
    await fund(accountId, 1000n);
    const q = await t.credit.quote({ spec: VEO_396, accountId });
    expect(q.credits).toBe(396n);

    const r = await reserveSpec(accountId, VEO_396);
    expect(r.reservation?.state).toBe(ReservationState.HELD);
    expect(r.reservation?.heldAmount).toBe(q.credits);
    expect(r.balance?.available).toBe(604n); // 1000 − 396
    expect(r.balance?.held).toBe(396n);

    const pricing = r.reservation?.pricing;
    expect(pricing?.rateCardVersion).toBe(VERSION);
    expect(pricing?.accountPricePermille).toBe(1000);
    expect(pricing?.quotedCredits).toBe(396n);
    expect(pricing?.spec?.model).toBe("veo-lite");
    expect(pricing?.spec?.kind).toBe(GenerationKind.VIDEO);
    expect(pricing?.spec?.width).toBe(1920);
    expect(pricing?.spec?.height).toBe(1080);
    expect(pricing?.spec?.duration?.seconds).toBe(6n);
    expect(pricing?.spec?.duration?.nanos).toBe(500_000_000);
    expect(pricing?.spec?.count).toBe(2);
    expect(pricing?.spec?.quality).toBe(Quality.HIGH);

    // The pricing is stored with the hold, not only echoed.
    const read = await t.credit.getReservation({ reservationId: r.reservation!.reservationId });
    expect(read.reservation?.pricing?.quotedCredits).toBe(396n);
    expect(read.reservation?.pricing?.rateCardVersion).toBe(VERSION);

    const holds = (await entriesOf(accountId, [LedgerEntryKind.HOLD])).filter((e) => e.reservationId === r.reservation!.reservationId);
    expect(sum(holds)).toBe(396n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a hold of a raw amount has no pricing", async () => {
    const accountId = newAccountId();
    await fund(accountId, 100n);
    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 50n } });
    expect(r.reservation?.pricing).toBeUndefined();
  });

  it("Commit by a smaller spec captures the smaller price and returns the rest", async () => {
    const accountId = newAccountId();
    await fund(accountId, 1000n);
    const r = await reserveSpec(accountId, VEO_396);
    const id = r.reservation!.reservationId;

    const c = await commitSpec(id, VEO_144);
    expect(c.reservation?.state).toBe(ReservationState.COMMITTED);
    expect(c.reservation?.heldAmount).toBe(396n);
    expect(c.reservation?.capturedAmount).toBe(144n);
    expect(c.reservation?.releasedAmount).toBe(252n); // 396 − 144
    expect(c.balance?.available).toBe(856n); // 1000 − 144
    expect(c.balance?.held).toBe(0n);

    const mine = (await entriesOf(accountId)).filter((e) => e.reservationId === id);
    expect(sum(mine.filter((e) => e.kind === LedgerEntryKind.CAPTURE))).toBe(144n);
    expect(sum(mine.filter((e) => e.kind === LedgerEntryKind.RELEASE))).toBe(252n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("Commit by a spec costing more than the hold draws the extra from available credits", async () => {
    const accountId = newAccountId();
    await fund(accountId, 2000n);
    const r = await reserveSpec(accountId, KLING_165);
    expect(r.reservation?.heldAmount).toBe(165n);

    const c = await commitSpec(r.reservation!.reservationId, KLING_1680);
    expect(c.reservation?.state).toBe(ReservationState.COMMITTED);
    expect(c.reservation?.heldAmount).toBe(165n);
    expect(c.reservation?.capturedAmount).toBe(1680n);
    expect(c.reservation?.releasedAmount).toBe(0n);
    expect(c.balance?.available).toBe(320n); // 2000 − 1680
    expect(c.balance?.held).toBe(0n);
    const captures = (await entriesOf(accountId, [LedgerEntryKind.CAPTURE])).filter((e) => e.reservationId === r.reservation!.reservationId);
    expect(sum(captures)).toBe(1680n);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("Commit by spec of a hold of a raw amount prices with the current card and the account's pricing", async () => {
    const accountId = newAccountId("biz");
    await fund(accountId, 1000n);
    await t.admin.setAccountPricing({ accountId, pricePermille: 800 });
    const r = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: 500n } });
    const c = await commitSpec(r.reservation!.reservationId, VEO_396);
    expect(c.reservation?.capturedAmount).toBe(317n); // 396 × 0.8 = 316.8 → 317
    expect(c.reservation?.releasedAmount).toBe(183n); // 500 − 317
    expect(c.balance?.available).toBe(683n);
  });

  it("Commit by spec of an unknown reservation is NotFound", async () => {
    const failure = await failureOf(commitSpec(randomUUID(), VEO_144));
    expect(failure.code).toBe(Code.NotFound);
    expect(failure.reason).toBe("RESERVATION_NOT_FOUND");
  });

  it("Reserve by spec without enough credits fails INSUFFICIENT_CREDITS and holds nothing", async () => {
    const accountId = newAccountId();
    await fund(accountId, 395n);
    const failure = await failureOf(reserveSpec(accountId, VEO_396));
    expect(failure.code).toBe(Code.FailedPrecondition);
    expect(failure.reason).toBe("INSUFFICIENT_CREDITS");
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(395n);
    expect(balance?.held).toBe(0n);
  });
});

describe("rate card versions", () => {
  it("a rate card change between Reserve and Commit does not reprice the held generation", async () => {
    const newVersion = `e2e-${randomUUID()}`;
    // kling-pro's base doubles from 40 to 80 on the new card.
    const path = cardFile((card) => {
      card.version = newVersion;
      modelOf(card, "kling-pro")["baseCredits"] = 80;
    });

    const accountId = newAccountId();
    await fund(accountId, 2000n);
    const r = await reserveSpec(accountId, KLING_165);
    expect(r.reservation?.heldAmount).toBe(165n);
    expect(r.reservation?.pricing?.rateCardVersion).toBe(VERSION);

    const t2 = await startTestService({ RATE_CARD_PATH: path });
    try {
      // The new card prices higher: (80 + 40 + 250) = 370 → ×1.6 = 592, and (80 + 0 + 125) = 205.
      const newQuote = await t2.credit.quote({ spec: KLING_528 });
      expect(newQuote.credits).toBe(592n);
      expect(newQuote.rateCardVersion).toBe(newVersion);
      expect((await t2.credit.quote({ spec: KLING_165 })).credits).toBe(205n);
      expect((await t2.credit.getRateCard({})).version).toBe(newVersion);

      // Committed through the new service, the hold is priced with the card it was reserved with: 528.
      const c = await commitSpec(r.reservation!.reservationId, KLING_528, t2);
      expect(c.reservation?.state).toBe(ReservationState.COMMITTED);
      expect(c.reservation?.capturedAmount).toBe(528n);
      expect(c.reservation?.pricing?.rateCardVersion).toBe(VERSION);
      expect(c.balance?.available).toBe(1472n); // 2000 − 528
      expect(c.balance?.held).toBe(0n);

      // A new hold on the new service uses the new card.
      const r2 = await reserveSpec(accountId, KLING_165, t2);
      expect(r2.reservation?.heldAmount).toBe(205n);
      expect(r2.reservation?.pricing?.rateCardVersion).toBe(newVersion);
    } finally {
      await t2.stop();
    }
    // The first service still quotes its own card.
    const old = await t.credit.quote({ spec: KLING_528 });
    expect(old.credits).toBe(528n);
    expect(old.rateCardVersion).toBe(VERSION);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a hold reserved under a newer card is committed by that card even through a service on the older one", async () => {
    const newVersion = `e2e-${randomUUID()}`;
    const path = cardFile((card) => {
      card.version = newVersion;
      modelOf(card, "kling-pro")["baseCredits"] = 80;
    });
    const accountId = newAccountId();
    await fund(accountId, 2000n);
    const t2 = await startTestService({ RATE_CARD_PATH: path });
    let reservationId: string;
    try {
      const r = await reserveSpec(accountId, KLING_165, t2);
      expect(r.reservation?.heldAmount).toBe(205n); // (80 + 0 + 125)
      reservationId = r.reservation!.reservationId;
    } finally {
      await t2.stop();
    }
    // The first service reads the newer version from the database: (80 + 40 + 250) = 370 → ×1.6 = 592.
    const c = await commitSpec(reservationId, KLING_528);
    expect(c.reservation?.capturedAmount).toBe(592n);
    expect(c.balance?.available).toBe(1408n); // 2000 − 592
  });

  it("starting with a card that reuses a stored version with other prices is refused", async () => {
    const path = cardFile((card) => {
      modelOf(card, "flux-pro")["baseCredits"] = 9;
    });
    await expect(startTestService({ RATE_CARD_PATH: path })).rejects.toThrow(/already stored with other prices/);
    // The stored version keeps its prices.
    const q = await t.credit.quote({ spec: spec("flux-pro", GenerationKind.IMAGE, 512, 512, null, 1, Quality.STANDARD) });
    expect(q.credits).toBe(8n);
  });

  it("a refused start leaves no database connection open behind it", async () => {
    // On a database of its own: other test files open connections to the shared one meanwhile.
    const url = runDatabaseUrl(`refused_${process.pid}`);
    const name = new URL(url).pathname.slice(1);
    const db = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await db.connect();
    try {
      const first = await startTestService({ DATABASE_URL: url, DB_MIGRATE: "true" }); // stores the card's version
      await first.stop();
      const path = cardFile((card) => {
        modelOf(card, "sdxl")["baseCredits"] = 4;
      });
      await expect(startTestService({ DATABASE_URL: url, RATE_CARD_PATH: path })).rejects.toThrow(/already stored with other prices/);
      const open = await db.query<{ n: string }>("select count(*) as n from pg_stat_activity where datname = $1", [name]);
      expect(Number(open.rows[0]!.n)).toBe(0);
    } finally {
      await db.query(`drop database if exists "${name}" with (force)`);
      await db.end();
    }
  });

  it("starting again with the same card under the same version is accepted", async () => {
    const path = cardFile(() => {});
    const again = await startTestService({ RATE_CARD_PATH: path });
    try {
      expect((await again.credit.quote({ spec: VEO_396 })).credits).toBe(396n);
    } finally {
      await again.stop();
    }
  });
});

describe("account pricing", () => {
  it("a tailored account at 800‰ pays its price in Quote, Reserve and Commit by spec", async () => {
    const accountId = newAccountId("biz");
    await fund(accountId, 1000n);
    const set = await t.admin.setAccountPricing({ accountId, pricePermille: 800 });
    expect(set.pricePermille).toBe(800);

    const q = await t.credit.quote({ spec: VEO_396, accountId });
    expect(q.credits).toBe(317n); // 396 × 0.8 = 316.8 → 317
    expect(q.breakdown.find((l) => l.item === "account_pricing")?.credits).toBe(-79n);
    expect(q.breakdown.reduce((s, l) => s + l.credits, 0n)).toBe(317n);
    // Without the account the list price applies.
    expect((await t.credit.quote({ spec: VEO_396 })).credits).toBe(396n);

    const r = await reserveSpec(accountId, VEO_396);
    expect(r.reservation?.heldAmount).toBe(317n);
    expect(r.reservation?.pricing?.accountPricePermille).toBe(800);
    expect(r.reservation?.pricing?.quotedCredits).toBe(317n);
    expect(r.balance?.available).toBe(683n); // 1000 − 317

    // 144 × 0.8 = 115.2 → 116
    const c = await commitSpec(r.reservation!.reservationId, VEO_144);
    expect(c.reservation?.capturedAmount).toBe(116n);
    expect(c.reservation?.releasedAmount).toBe(201n); // 317 − 116
    expect(c.balance?.available).toBe(884n); // 1000 − 116
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("a pricing change after Reserve does not change the price the hold commits at", async () => {
    const accountId = newAccountId("biz");
    await fund(accountId, 1000n);
    await t.admin.setAccountPricing({ accountId, pricePermille: 800 });
    const r = await reserveSpec(accountId, VEO_396);
    expect(r.reservation?.heldAmount).toBe(317n);

    await t.admin.setAccountPricing({ accountId, pricePermille: 1500 });
    expect((await t.credit.quote({ spec: VEO_396, accountId })).credits).toBe(594n); // 396 × 1.5

    const c = await commitSpec(r.reservation!.reservationId, VEO_396);
    expect(c.reservation?.capturedAmount).toBe(317n);
    expect(c.reservation?.releasedAmount).toBe(0n);
    expect(c.balance?.available).toBe(683n);
  });

  it("SetAccountPricing on an unknown account is NotFound", async () => {
    const failure = await failureOf(t.admin.setAccountPricing({ accountId: newAccountId("ghost"), pricePermille: 800 }));
    expect(failure.code).toBe(Code.NotFound);
    expect(failure.reason).toBe("ACCOUNT_NOT_FOUND");
  });

  it.each([0, -1, 100_001])("SetAccountPricing with price_permille %i is InvalidArgument and changes nothing", async (permille) => {
    const accountId = newAccountId("biz");
    await fund(accountId, 100n);
    const failure = await failureOf(t.admin.setAccountPricing({ accountId, pricePermille: permille }));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe("INVALID_FIELD");
    expect(failure.metadata["field"]).toBe("price_permille");
    expect((await t.credit.quote({ spec: VEO_396, accountId })).credits).toBe(396n);
  });
});

describe("specs the rate card refuses", () => {
  const refused: readonly (readonly [string, SpecInit, string])[] = [
    ["an unknown model", spec("dall-e-9", GenerationKind.IMAGE, 512, 512, null, 1, Quality.STANDARD), "UNKNOWN_MODEL"],
    // 1920×1200 = 2304000 px > veo-lite's largest tier of 2073600
    ["an unsupported resolution", spec("veo-lite", GenerationKind.VIDEO, 1920, 1200, 5000, 1, Quality.STANDARD), "RESOLUTION_OUT_OF_RANGE"],
    ["a width over the model's maximum", spec("sdxl", GenerationKind.IMAGE, 1537, 512, null, 1, Quality.STANDARD), "RESOLUTION_OUT_OF_RANGE"],
    ["a duration below the model's minimum", spec("kling-pro", GenerationKind.VIDEO, 1280, 720, 4000, 1, Quality.STANDARD), "DURATION_OUT_OF_RANGE"],
    ["a duration above the model's maximum", spec("veo-lite", GenerationKind.VIDEO, 1280, 720, 10_001, 1, Quality.STANDARD), "DURATION_OUT_OF_RANGE"],
    ["a duration for an image model", spec("flux-pro", GenerationKind.IMAGE, 512, 512, 1000, 1, Quality.STANDARD), "DURATION_OUT_OF_RANGE"],
  ];

  it.each(refused)("Quote of %s is InvalidArgument with its reason", async (_rule, s, reason) => {
    const failure = await failureOf(t.credit.quote({ spec: s }));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe(reason);
  });

  it.each(refused)("Reserve of %s is InvalidArgument with its reason and writes nothing", async (_rule, s, reason) => {
    const accountId = newAccountId();
    await fund(accountId, 5000n);
    const before = await t.credit.getBalance({ accountId });
    const entriesBefore = await entriesOf(accountId);

    const failure = await failureOf(reserveSpec(accountId, s));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe(reason);

    const after = await t.credit.getBalance({ accountId });
    expect(after.balance?.available).toBe(5000n);
    expect(after.balance?.held).toBe(0n);
    expect(after.balance?.buckets).toEqual(before.balance?.buckets);
    expect(await entriesOf(accountId)).toEqual(entriesBefore);
  });

  it.each(refused)("Commit of %s is InvalidArgument with its reason and leaves the hold HELD", async (_rule, s, reason) => {
    const accountId = newAccountId();
    await fund(accountId, 5000n);
    const r = await reserveSpec(accountId, KLING_165);
    const id = r.reservation!.reservationId;
    const entriesBefore = await entriesOf(accountId);

    const failure = await failureOf(commitSpec(id, s));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.reason).toBe(reason);

    const read = await t.credit.getReservation({ reservationId: id });
    expect(read.reservation?.state).toBe(ReservationState.HELD);
    const { balance } = await t.credit.getBalance({ accountId });
    expect(balance?.available).toBe(4835n); // 5000 − 165
    expect(balance?.held).toBe(165n);
    expect(await entriesOf(accountId)).toEqual(entriesBefore);
  });
});

describe("GetRateCard", () => {
  it("lists every model of the rate card file with its rates", async () => {
    const res = await t.credit.getRateCard({});
    expect(res.version).toBe(VERSION);
    const file = DEFAULT.json as { models: Record<string, unknown>[] };
    expect(res.models.map((m) => m.model).sort()).toEqual(file.models.map((m) => m["model"] as string).sort());

    const kinds: Record<string, GenerationKind> = {
      IMAGE: GenerationKind.IMAGE,
      VIDEO: GenerationKind.VIDEO,
      ANIMATION: GenerationKind.ANIMATION,
      AUDIO: GenerationKind.AUDIO,
      UPSCALE: GenerationKind.UPSCALE,
    };
    const qualities: Record<string, Quality> = { DRAFT: Quality.DRAFT, STANDARD: Quality.STANDARD, HIGH: Quality.HIGH, ULTRA: Quality.ULTRA };
    for (const m of file.models) {
      const got = res.models.find((r) => r.model === m["model"]);
      expect(got, String(m["model"])).toBeDefined();
      const duration = m["duration"] as { minSeconds: number; maxSeconds: number; creditsPerSecond: number } | null;
      const tiers = m["resolutionTiers"] as { maxPixels: number; credits: number }[];
      const quality = m["qualityPermille"] as Record<string, number>;
      expect({
        kind: got!.kind,
        baseCredits: got!.baseCredits,
        maxWidth: got!.maxWidth,
        maxHeight: got!.maxHeight,
        tiers: got!.resolutionTiers.map((t) => [t.maxPixels, t.credits]),
        creditsPerSecond: got!.creditsPerSecond,
        minSeconds: got!.minSeconds,
        maxSeconds: got!.maxSeconds,
        maxCount: got!.maxCount,
        qualities: got!.qualities.map((q) => [q.quality, q.permille]).sort((a, b) => a[0]! - b[0]!),
        minimumCredits: got!.minimumCredits,
      }).toEqual({
        kind: kinds[m["kind"] as string],
        baseCredits: BigInt(m["baseCredits"] as number),
        maxWidth: m["maxWidth"],
        maxHeight: m["maxHeight"],
        tiers: tiers.map((t) => [BigInt(t.maxPixels), BigInt(t.credits)]),
        creditsPerSecond: BigInt(duration?.creditsPerSecond ?? 0),
        minSeconds: duration?.minSeconds ?? 0,
        maxSeconds: duration?.maxSeconds ?? 0,
        maxCount: m["maxCount"],
        qualities: Object.entries(quality)
          .map(([q, p]) => [qualities[q]!, p])
          .sort((a, b) => a[0]! - b[0]!),
        minimumCredits: BigInt(m["minimumCredits"] as number),
      });
    }
  });

  it("shows veo-lite's rates as written on the card", async () => {
    const veo = (await t.credit.getRateCard({})).models.find((m) => m.model === "veo-lite");
    expect(veo?.kind).toBe(GenerationKind.VIDEO);
    expect(veo?.baseCredits).toBe(20n);
    expect(veo?.resolutionTiers.map((r) => [r.maxPixels, r.credits])).toEqual([
      [921_600n, 0n],
      [2_073_600n, 20n],
    ]);
    expect(veo?.creditsPerSecond).toBe(10n);
    expect([veo?.minSeconds, veo?.maxSeconds]).toEqual([2, 10]);
    expect(veo?.maxCount).toBe(2);
    expect(veo?.minimumCredits).toBe(30n);
  });

  it("lists the default top-up packs", async () => {
    const res = await t.credit.getRateCard({});
    const packs = res.topUpPacks.map((p) => [p.packId, p.credits, p.price?.currencyCode, p.price?.amountMinor, p.validityMonths]);
    expect(packs).toEqual([
      ["topup-500", 500n, "USD", 500n, 2],
      ["topup-1000", 1000n, "USD", 900n, 2],
      ["topup-5000", 5000n, "USD", 4000n, 2],
      ["topup-20000", 20000n, "USD", 15000n, 2],
    ]);
  });
});
