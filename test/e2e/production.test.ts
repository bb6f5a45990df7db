import { randomBytes } from "node:crypto";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import { createCreditClients } from "../../src/client/index.js";
import { sha256 } from "../../src/rpc/auth.js";
import { failureOf } from "../support/e2e.js";
import { newAccountId, newKey } from "../support/harness.js";
import { type ServerProcess, spawnServer } from "../support/server-process.js";

/**
 * The switch to production, as the container image throws it: `NODE_ENV=production` and nothing
 * else. The real entry point (src/main.ts) runs as its own process, so what it reads is exactly
 * what a deployment gives it.
 */

const started: ServerProcess[] = [];
afterAll(async () => {
  await Promise.all(started.map((s) => s.stop()));
});

function start(env: Record<string, string>): ServerProcess {
  const server = spawnServer(env);
  started.push(server);
  return server;
}

/** The JSON log lines the process wrote to stdout. */
function logLines(server: ServerProcess): Record<string, unknown>[] {
  return server
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("NODE_ENV=production", () => {
  it("without AUTH_TOKENS, the server refuses to start, saying why", async () => {
    const server = start({ NODE_ENV: "production" });
    const outcome = await Promise.race([server.listening.then(() => "listening"), server.exited.then((code) => `exited ${code}`)]);
    expect(outcome).toBe("exited 1");
    expect(server.output()).toMatch(/production requires authentication: set AUTH_TOKENS/);
  });

  it("with AUTH_TOKENS, it refuses AdvanceTestClock (even to an admin) and anonymous calls, and warns that it runs without TLS", async () => {
    const token = randomBytes(24).toString("base64url");
    const server = start({ NODE_ENV: "production", AUTH_TOKENS: `ops:admin:${sha256(token).toString("hex")}`, IDEMPOTENCY_SECRET: randomBytes(32).toString("hex") });
    const port = await server.listening;
    const url = `http://127.0.0.1:${port}`;
    const admin = createCreditClients({ baseUrl: url, token, retry: { maxAttempts: 1 } });
    const anonymous = createCreditClients({ baseUrl: url, retry: { maxAttempts: 1 } });
    const accountId = newAccountId("prod");
    await admin.admin.adjustCredits({ accountId, amount: 10n, reason: "production switch", idempotencyKey: newKey() });

    const clock = await failureOf(admin.admin.advanceTestClock({ accountId, by: durationFromMs(400 * 24 * 3600_000), idempotencyKey: newKey("clock") }));
    expect([clock.code, clock.reason]).toEqual([Code.FailedPrecondition, "TEST_CLOCK_DISABLED"]);
    const anon = await failureOf(anonymous.admin.advanceTestClock({ accountId, by: durationFromMs(60_000), idempotencyKey: newKey("clock") }));
    expect(anon.code).toBe(Code.Unauthenticated);
    expect((await admin.credit.getBalance({ accountId })).balance?.available).toBe(10n);

    const warnings = logLines(server).filter((l) => l["level"] === 40).map((l) => String(l["msg"]));
    expect(warnings).toEqual(expect.arrayContaining([expect.stringMatching(/without TLS.*plaintext/)]));
  });
});
