import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { createCreditClients } from "../../src/client/index.js";
import { TEST_DATABASE_URL, TEST_REDIS_URL } from "../support/env.js";
import { newAccountId, newKey } from "../support/harness.js";

let child: ChildProcess | null = null;
afterAll(() => {
  child?.kill("SIGKILL");
});

/** Starts `src/main.ts` as its own process and resolves with the port from its "listening" log line. */
function startServerProcess(): Promise<{ port: number; lines: Record<string, unknown>[]; exited: Promise<number | null> }> {
  const proc = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    env: { ...process.env, DATABASE_URL: TEST_DATABASE_URL, REDIS_URL: TEST_REDIS_URL, GRPC_PORT: "0", GRPC_HOST: "127.0.0.1", DB_MIGRATE: "false", METRICS_PORT: "0" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  child = proc;
  const lines: Record<string, unknown>[] = [];
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on("line", (line) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      lines.push(entry);
      if (entry["msg"] === "credit service listening") resolve({ port: entry["port"] as number, lines, exited });
    });
    proc.on("exit", (code) => reject(new Error(`server exited with ${code} before listening`)));
  });
}

describe("SIGTERM", () => {
  it("finishes the call in flight, then exits 0", async () => {
    const { port, lines, exited } = await startServerProcess();
    const { credit, admin } = createCreditClients({ baseUrl: `http://127.0.0.1:${port}` });
    const accountId = newAccountId("shutdown");
    await admin.adjustCredits({ accountId, amount: 50n, reason: "shutdown test", idempotencyKey: newKey() });

    // Hold the account row so the next Reserve is still running when SIGTERM arrives.
    const blocker = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await blocker.connect();
    await blocker.query("begin");
    await blocker.query("select 1 from accounts where account_id = $1 for update", [accountId]);
    const inFlight = credit.reserve({ accountId, idempotencyKey: newKey(), cost: { case: "amount", value: 20n } });
    await new Promise((r) => setTimeout(r, 300));
    child!.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
    await blocker.query("commit");
    await blocker.end();

    const reserved = await inFlight;
    expect(reserved.balance?.available).toBe(30n);
    expect(await exited).toBe(0);
    expect(lines.map((l) => l["msg"])).toEqual(expect.arrayContaining(["shutting down", "stopped"]));
  });
});
