import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../../src/cli.js";
import { Code, ConnectError, createCreditClients, type CreditClients } from "../../src/client/index.js";
import { MAX_BALANCE_BUCKETS } from "../../src/domain/limits.js";
import { newAccountId, newKey, startTestService, TEST_EPOCH, type TestService } from "../support/harness.js";

/**
 * credit-admin, the operators' command line, against a real server with authentication on:
 * what it prints and the exit status it returns.
 */

const ADMIN_TOKEN = randomBytes(24).toString("base64url");
const SUPPORT_TOKEN = randomBytes(24).toString("base64url");

let t: TestService;
let env: Record<string, string>;
let admin: CreditClients;

/** Runs the CLI, capturing what it prints, split into lines. */
async function cli(args: string[], over: Record<string, string | undefined> = {}): Promise<{ code: number; lines: string[] }> {
  const printed: string[] = [];
  const code = await run(args, { ...env, ...over }, (text) => printed.push(text));
  return { code, lines: printed.join("\n").split("\n") };
}

/** A table row's cells (columns are separated by at least two spaces; no cell here contains spaces). */
const cells = (line: string | undefined) => (line ?? "").trim().split(/\s+/);

beforeAll(async () => {
  // The hashes for AUTH_TOKENS come from the CLI itself, as an operator would make them.
  const adminHash = await hashOf(ADMIN_TOKEN);
  const supportHash = await hashOf(SUPPORT_TOKEN);
  t = await startTestService({ AUTH_TOKENS: `ops-admin:admin:${adminHash},support-desk:support:${supportHash}` });
  env = { CREDIT_URL: `http://127.0.0.1:${t.service.port}`, CREDIT_TOKEN: ADMIN_TOKEN };
  admin = createCreditClients({ baseUrl: env["CREDIT_URL"]!, token: ADMIN_TOKEN });
});
afterAll(async () => {
  await t?.stop();
});

async function hashOf(token: string): Promise<string> {
  const printed: string[] = [];
  expect(await run(["hash-token", token], {}, (text) => printed.push(text))).toBe(0);
  expect(printed).toHaveLength(1);
  return printed[0]!;
}

describe("hash-token", () => {
  it("prints the SHA-256 of the token in hex, and nothing else", async () => {
    const token = randomBytes(16).toString("hex");
    const { code, lines } = await cli(["hash-token", token], { CREDIT_URL: undefined, CREDIT_TOKEN: undefined });
    expect(code).toBe(0);
    expect(lines).toEqual([createHash("sha256").update(token, "utf8").digest("hex")]);
  });
});

describe("adjust, balance, entries and reconcile", () => {
  it("adjust grants an adjustment bucket and says how much is available", async () => {
    const accountId = newAccountId("cli");
    const { code, lines } = await cli(["adjust", accountId, "500", "--reason", "ticket-123"]);
    expect(code).toBe(0);
    const bucketId = (await admin.credit.getBalance({ accountId })).balance!.buckets[0]!.bucketId;
    expect(lines).toEqual([`granted 500 credits in bucket ${bucketId}; available now 500`]);
  });

  it("balance prints the totals and a table: a header row, then the account's bucket with its numbers", async () => {
    const accountId = newAccountId("cli");
    expect((await cli(["adjust", accountId, "500", "--reason", "ticket-124"])).code).toBe(0);
    await admin.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 120n } });
    const bucketId = (await admin.credit.getBalance({ accountId })).balance!.buckets[0]!.bucketId;

    const { code, lines } = await cli(["balance", accountId]);
    expect(code).toBe(0);
    expect(lines[0]).toBe(`account ${accountId}: available 380, held 120`);
    const header = lines.findIndex((l) => l.startsWith("BUCKET"));
    expect(cells(lines[header])).toEqual(["BUCKET", "KIND", "GRANTED", "REMAINING", "HELD", "EXPIRES"]);
    expect(lines.slice(header + 1).map(cells)).toEqual([[bucketId, "ADJUSTMENT", "500", "500", "120", "-"]]);
  });

  it("balance aligns every column under its header", async () => {
    const accountId = newAccountId("cli");
    expect((await cli(["adjust", accountId, "7", "--reason", "small"])).code).toBe(0);
    const { lines } = await cli(["balance", accountId]);
    const header = lines.find((l) => l.startsWith("BUCKET"))!;
    const row = lines[lines.indexOf(header) + 1]!;
    for (const title of ["KIND", "GRANTED", "REMAINING", "HELD", "EXPIRES"]) {
      const at = header.indexOf(title);
      expect([title, row[at - 1], row[at]]).toEqual([title, " ", expect.stringMatching(/\S/)]);
    }
  });

  it("balance says when the account has more buckets than the answer lists", async () => {
    const accountId = newAccountId("cli");
    for (let i = 0; i <= MAX_BALANCE_BUCKETS; i += 1) {
      await admin.admin.adjustCredits({ accountId, amount: 1n, reason: `grant ${i}`, idempotencyKey: newKey() });
    }
    const { code, lines } = await cli(["balance", accountId]);
    expect(code).toBe(0);
    expect(lines[0]).toBe(`account ${accountId}: available ${MAX_BALANCE_BUCKETS + 1}, held 0`);
    const header = lines.findIndex((l) => l.startsWith("BUCKET"));
    expect(lines.slice(header + 1, -1)).toHaveLength(MAX_BALANCE_BUCKETS);
    expect(lines.at(-1)).toBe(`(the first ${MAX_BALANCE_BUCKETS} of ${MAX_BALANCE_BUCKETS + 1} buckets, in consumption order)`);
  });

  it("adjust --expires sets the bucket's expiry, shown in the EXPIRES column", async () => {
    const accountId = newAccountId("cli");
    expect((await cli(["adjust", accountId, "40", "--reason", "incident", "--expires", "2030-06-01T00:00:00Z"])).code).toBe(0);
    const { lines } = await cli(["balance", accountId]);
    const header = lines.findIndex((l) => l.startsWith("BUCKET"));
    expect(cells(lines[header + 1]).slice(1)).toEqual(["ADJUSTMENT", "40", "40", "0", "2030-06-01T00:00:00.000Z"]);
  });

  it("entries lists the ADJUST entry with its amount, bucket, time and the principal as caller", async () => {
    const accountId = newAccountId("cli");
    expect((await cli(["adjust", accountId, "250", "--reason", "goodwill"])).code).toBe(0);
    const bucketId = (await admin.credit.getBalance({ accountId })).balance!.buckets[0]!.bucketId;
    const { entries } = await admin.admin.listLedgerEntries({ accountId });

    const { code, lines } = await cli(["entries", accountId]);
    expect(code).toBe(0);
    expect(cells(lines[0])).toEqual(["ID", "TIME", "KIND", "AMOUNT", "BUCKET", "RESERVATION", "CALLER"]);
    // The CLI sends x-caller "credit-admin"; with authentication on, the token's principal is recorded.
    expect(lines.slice(1).map(cells)).toEqual([[String(entries[0]!.entryId), TEST_EPOCH.toISOString(), "ADJUST", "250", bucketId, "-", "ops-admin"]]);
  });

  it("entries --kind and --limit filter and cut the list", async () => {
    const accountId = newAccountId("cli");
    expect((await cli(["adjust", accountId, "100", "--reason", "fund"])).code).toBe(0);
    const a = await admin.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 10n } });
    await admin.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 20n } });

    const holds = await cli(["entries", accountId, "--kind", "hold"]);
    expect(holds.lines.slice(1).map((l) => cells(l).slice(2, 4))).toEqual([
      ["HOLD", "10"],
      ["HOLD", "20"],
    ]);
    expect(cells(holds.lines[1])[5]).toBe(a.reservation!.reservationId);

    const first = await cli(["entries", accountId, "--limit", "1"]);
    expect(first.lines.slice(1).map((l) => cells(l)[2])).toEqual(["ADJUST"]);
  });

  it("a support token may adjust too, and is recorded as the caller", async () => {
    const accountId = newAccountId("cli");
    expect((await cli(["adjust", accountId, "15", "--reason", "support"], { CREDIT_TOKEN: SUPPORT_TOKEN })).code).toBe(0);
    const { lines } = await cli(["entries", accountId], { CREDIT_TOKEN: SUPPORT_TOKEN });
    expect(cells(lines[1])[6]).toBe("support-desk");
  });

  it("alert sets a balance alert in credits or in percent of the plan's allowance and says where it stands", async () => {
    const accountId = newAccountId("cli");
    expect((await cli(["adjust", accountId, "300", "--reason", "fund"])).code).toBe(0);
    expect(await cli(["alert", accountId, "500"])).toEqual({ code: 0, lines: ["alert below 500 credits (re-arms at 550), LOW; available now 300"] });
    expect(await cli(["alert", accountId, "20%"])).toEqual({ code: 0, lines: ["alert set, inactive until the account has a plan; available now 300"] });
    await admin.credit.changePlan({ accountId, planId: "basic-monthly" }); // 1000 a month: 20 % = 200
    expect(await cli(["alert", accountId, "20%"], { CREDIT_TOKEN: SUPPORT_TOKEN })).toEqual({
      code: 0,
      lines: ["alert below 200 credits (re-arms at 220), ARMED; available now 1300"],
    });
  });

  it("reconcile says the account is consistent and returns 0", async () => {
    const accountId = newAccountId("cli");
    expect((await cli(["adjust", accountId, "300", "--reason", "fund"])).code).toBe(0);
    await admin.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 30n } });
    const { code, lines } = await cli(["reconcile", accountId]);
    expect(lines).toEqual([`account ${accountId}: consistent`]);
    expect(code).toBe(0);
  });
});

describe("failures", () => {
  it.each([
    ["no command at all", []],
    ["a command without an account", ["balance"]],
    ["hash-token without a token", ["hash-token"]],
    ["an unknown command", ["frobnicate", "acct-1"]],
    ["adjust without an amount or reason", ["adjust", "acct-1"]],
    ["adjust without --reason", ["adjust", "acct-1", "50"]],
    ["alert without a threshold", ["alert", "acct-1"]],
    ["alert with a bad threshold", ["alert", "acct-1", "ten"]],
  ])("bad usage (%s) prints a usage line and returns 2", async (_what, args) => {
    const { code, lines } = await cli(args);
    expect(code).toBe(2);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^usage: credit-admin|^unknown command/);
  });

  it("bad usage changes nothing on the server", async () => {
    const accountId = newAccountId("cli");
    expect((await cli(["adjust", accountId, "50"])).code).toBe(2);
    const err = await admin.credit.getBalance({ accountId }).catch((e: unknown) => ConnectError.from(e));
    expect(err instanceof ConnectError ? err.code : "found").toBe(Code.NotFound);
  });

  it("without CREDIT_TOKEN the server refuses the CLI as Unauthenticated", async () => {
    const err = await cli(["balance", newAccountId("cli")], { CREDIT_TOKEN: undefined }).catch((e: unknown) => ConnectError.from(e));
    expect(err instanceof ConnectError ? err.code : "succeeded").toBe(Code.Unauthenticated);
  });

  it("balance of an unknown account fails with NotFound", async () => {
    const err = await cli(["balance", newAccountId("cli-ghost")]).catch((e: unknown) => ConnectError.from(e));
    expect(err instanceof ConnectError ? err.code : "succeeded").toBe(Code.NotFound);
  });
});

describe("caps", () => {
  it("sets caps on running holds for a member and says what runs; Reserve beyond them is refused", async () => {
    const accountId = newAccountId("cli-caps");
    await admin.admin.adjustCredits({ accountId, amount: 300n, reason: "cli caps", idempotencyKey: newKey() });
    await admin.credit.reserve({ accountId, idempotencyKey: newKey(), memberId: "gina", cost: { case: "amount", value: 40n } });
    const out = await cli(["caps", accountId, "--member", "gina", "--holds", "1", "--credits", "100"]);
    expect(out.code).toBe(0);
    expect(out.lines).toEqual(["member gina: at most 1 holds running, at most 100 credits held; running now: 1 holds holding 40 credits"]);
    await expect(admin.credit.reserve({ accountId, idempotencyKey: newKey(), memberId: "gina", cost: { case: "amount", value: 1n } })).rejects.toThrow(/CONCURRENCY_LIMIT_EXCEEDED|running/);
    expect((await cli(["caps", accountId, "--holds", "-1"])).code).toBe(2);
  });
});

describe("limits and set-limit", () => {
  it("sets a member's daily limit in a time zone, lists what applies, refuses beyond it, and removes it", async () => {
    const accountId = newAccountId("cli-limits");
    await admin.admin.adjustCredits({ accountId, amount: 300n, reason: "cli limits", idempotencyKey: newKey() });
    await admin.credit.reserve({ accountId, idempotencyKey: newKey(), memberId: "hank", cost: { case: "amount", value: 40n } });
    const set = await cli(["set-limit", accountId, "day", "100", "--member", "hank", "--tz", "Europe/Paris"]);
    expect(set.code).toBe(0);
    expect(set.lines[0]).toMatch(/^member hank: HARD DAY limit of 100 credits \(Europe\/Paris\); used 0, held 40, left 60, resets \d{4}-/);
    expect((await cli(["set-limit", accountId, "lifetime", "1000", "--soft"])).code).toBe(0);

    const listed = await cli(["limits", accountId, "--member", "hank"]);
    expect(listed.lines.map((l) => l.split(/\s+/).slice(0, 7))).toEqual([
      ["SCOPE", "PERIOD", "MODE", "LIMIT", "USED", "HELD", "LEFT"],
      ["(account)", "LIFETIME", "SOFT", "1000", "0", "40", "960"],
      ["hank", "DAY", "HARD", "100", "0", "40", "60"],
    ]);
    await expect(admin.credit.reserve({ accountId, idempotencyKey: newKey(), memberId: "hank", cost: { case: "amount", value: 61n } })).rejects.toThrow(/SPEND_LIMIT_EXCEEDED|limit/);

    expect((await cli(["set-limit", accountId, "day", "remove", "--member", "hank"])).lines).toEqual(["removed the DAY limit of member hank (0 of 100 used)"]);
    expect((await cli(["limits", accountId, "--member", "nobody"])).lines[0]).toMatch(/^SCOPE/);
    expect((await cli(["set-limit", accountId, "fortnight", "5"])).code).toBe(2);
    expect((await cli(["set-limit", accountId, "day", "-5"])).code).toBe(2);
  });
});

describe("usage and forecast", () => {
  it("prints where the credits went by day and member, and the forecast with what expires unused", async () => {
    const accountId = newAccountId("cli-usage");
    await admin.admin.adjustCredits({ accountId, amount: 1000n, reason: "cli usage", idempotencyKey: newKey(), expiresAt: timestampFromDate(new Date(TEST_EPOCH.getTime() + 5 * 86_400_000)) });
    for (const [memberId, amount] of [["ivy", 70n], ["jon", 30n]] as const) {
      const r = await admin.credit.reserve({ accountId, idempotencyKey: newKey(), memberId, cost: { case: "amount", value: amount } });
      await admin.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey(), actual: { case: "amount", value: amount } });
    }
    const usage = await cli(["usage", accountId, "--days", "2", "--by", "member"]);
    expect(usage.code).toBe(0);
    expect(usage.lines.map((l) => l.split(/\s+/).slice(1))).toEqual([
      ["MEMBER", "CONSUMED", "RESTORED", "GRANTED", "EXPIRED", "GENERATIONS"],
      ["-", "0", "0", "1000", "0", "0"],
      ["ivy", "70", "0", "0", "0", "1"],
      ["jon", "30", "0", "0", "0", "1"],
    ]);
    const forecast = await cli(["forecast", accountId]);
    // 100 a day on a one-day-old account: 900 left, 500 used in the 5 days before the bucket expires
    // with 400 in it; then nothing is left.
    const expiry = new Date(TEST_EPOCH.getTime() + 5 * 86_400_000).toISOString();
    expect(forecast.lines[0]).toBe(`burn rate 100 credits/day; runs out ${expiry}; next reset -`);
    expect(forecast.lines[1]!.split(/\s+/)[0]).toBe("BUCKET");
    expect(forecast.lines[2]!.split(/\s+/).slice(1, 3)).toEqual(["ADJUSTMENT", "400"]);
    expect((await cli(["usage", accountId, "--by", "colour"])).code).toBe(2);
  });
});

describe("watch", () => {
  it("prints the balance now, then the state after each change, and stops after --count lines", async () => {
    const accountId = newAccountId("cli-watch");
    await admin.admin.adjustCredits({ accountId, amount: 300n, reason: "cli watch", idempotencyKey: newKey() });
    const printed: string[] = [];
    const watching = run(["watch", accountId, "--count", "2"], env, (text) => printed.push(text));
    while (printed.length === 0) await new Promise((r) => setTimeout(r, 10)); // the first state is there
    await admin.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 40n } });
    expect(await watching).toBe(0);
    expect(printed.map((l) => l.split("  ").slice(0, 3))).toEqual([
      ["sequence 1", "available 300", "held 0"],
      ["sequence 2", "available 260", "held 40"],
    ]);
    expect(printed[0]).toMatch(/as of \d{4}-\d\d-\d\dT/);
  });
});

describe("events", () => {
  it("prints an account's events as a table with the next cursor, and resumes after it", async () => {
    const accountId = newAccountId("cli-events");
    await admin.admin.adjustCredits({ accountId, amount: 300n, reason: "cli events", idempotencyKey: newKey() });
    const held = await admin.credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 40n } });
    await admin.credit.commit({ reservationId: held.reservation!.reservationId, idempotencyKey: newKey(), actual: { case: "amount", value: 25n } });
    // Wait for the feed to hold all three changes (the sequencer numbers them just after commit).
    let out = await cli(["events", "--account", accountId]);
    while (out.lines.length < 5) out = await cli(["events", "--account", accountId]);
    expect(out.code).toBe(0);
    expect(cells(out.lines[0])).toEqual(["CURSOR", "OCCURRED", "ACCOUNT", "SEQ", "KIND", "WHAT"]);
    const rows = out.lines.slice(1, -1).map(cells);
    expect(rows.map((r) => [r[2], r[3], r[4]])).toEqual([
      [accountId, "1", "CREDITS_GRANTED"],
      [accountId, "2", "HOLD_CREATED"],
      [accountId, "3", "HOLD_COMMITTED"],
    ]);
    expect(out.lines.at(-1)).toMatch(/^next cursor: \d+(\.\d+)?$/);
    const after = await cli(["events", "--account", accountId, "--after", rows[0]![0]!, "--kind", "HOLD_COMMITTED"]);
    expect(after.lines.slice(1, -1).map((l) => cells(l)[4])).toEqual(["HOLD_COMMITTED"]);
    expect((await cli(["events", "--kind", "NOPE"])).code).toBe(2);
  });
});

describe("auto-top-up", () => {
  it("sets a rule, shows the request a low balance made, turns it off keeping its settings, and refuses bad arguments", async () => {
    const accountId = newAccountId("cli-atu");
    await admin.admin.adjustCredits({ accountId, amount: 300n, reason: "cli auto top-up", idempotencyKey: newKey() });
    expect((await cli(["auto-top-up", accountId])).lines).toEqual([`account ${accountId} has no auto top-up rule`]);
    const set = await cli(["auto-top-up", accountId, "set", "--below", "500", "--pack", "topup-1000", "--max-per-month", "2"]);
    expect(set.code).toBe(0);
    // Already below 500: the request is out at once.
    expect(set.lines[0]).toBe("below 500 credits buy pack topup-1000; REQUESTED; 1 of 2 this month");
    expect(cells(set.lines[1])).toEqual(["REQUEST", "CREDITS", "PACK", "OUTCOME", "EXPIRES"]);
    expect(cells(set.lines[2]).slice(0, 4)).toEqual([`atu:1:${accountId}`, "1000", "topup-1000", "REQUESTED"]);
    await admin.credit.failAutoTopUp({ requestId: `atu:1:${accountId}`, reason: "card_declined" });
    const shown = await cli(["auto-top-up", accountId]);
    expect(shown.lines[0]).toBe("below 500 credits buy pack topup-1000; ARMED; 1 of 2 this month");
    expect(shown.lines[1]).toMatch(new RegExp(`^last failure: atu:1:${accountId} at \\d{4}-.*: card_declined \\(1 in a row\\)$`));
    const off = await cli(["auto-top-up", accountId, "off"]);
    expect(off.lines[0]).toBe("below 500 credits buy pack topup-1000; DISABLED; 1 of 2 this month");
    const target = await cli(["auto-top-up", accountId, "set", "--below", "100", "--target", "2000"]);
    expect(target.lines[0]).toBe("below 100 credits buy up to 2000 credits; ARMED; 1 of 10 this month");
    for (const bad of [["set", "--below", "100"], ["set", "--below", "x", "--pack", "p"], ["set", "--below", "1", "--pack", "p", "--target", "5"], ["sometimes"]]) {
      expect((await cli(["auto-top-up", accountId, ...bad])).code, bad.join(" ")).toBe(2);
    }
    const bare = newAccountId("cli-atu-bare");
    await admin.admin.adjustCredits({ accountId: bare, amount: 1n, reason: "cli auto top-up", idempotencyKey: newKey() });
    expect(await cli(["auto-top-up", bare, "off"])).toEqual({ code: 1, lines: [`account ${bare} has no auto top-up rule`] });
    const err = await cli(["auto-top-up", newAccountId("cli-atu-ghost")]).catch((e: unknown) => ConnectError.from(e));
    expect(err instanceof ConnectError ? err.code : "succeeded").toBe(Code.NotFound);
  });
});
