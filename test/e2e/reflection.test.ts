import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";

/**
 * Engineers debug the service with `buf curl` / grpcurl by server reflection, without the .proto
 * files: the services, their methods and real calls must all work through reflection alone.
 */

const run = promisify(execFile);
const BUF = join(process.cwd(), "node_modules", ".bin", "buf");

let t: TestService;
let url: string;
let cacheDir: string;

beforeAll(async () => {
  t = await startTestService();
  url = `http://127.0.0.1:${t.service.port}`;
  cacheDir = mkdtempSync(join(tmpdir(), "buf-cache-"));
});
afterAll(async () => {
  await t?.stop();
  if (cacheDir) rmSync(cacheDir, { recursive: true, force: true });
});

/** Runs `buf curl` over gRPC (HTTP/2 without TLS) by reflection; resolves with stdout, rejects with the exit error. */
async function bufCurl(args: readonly string[]): Promise<string> {
  const { stdout } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect", ...args], {
    timeout: 30_000,
    env: { ...process.env, BUF_CACHE_DIR: cacheDir, NO_COLOR: "1" },
  });
  return stdout;
}

async function call(method: string, body: unknown): Promise<Record<string, unknown>> {
  return JSON.parse(await bufCurl(["-d", JSON.stringify(body), `${url}/${method}`])) as Record<string, unknown>;
}

/** A failed `buf curl` call: its exit status and the error JSON it prints on stderr. */
async function failedCall(method: string, body: unknown): Promise<{ exitCode: number; error: Record<string, unknown> }> {
  try {
    await bufCurl(["-d", JSON.stringify(body), `${url}/${method}`]);
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    return { exitCode: e.code ?? -1, error: JSON.parse(e.stderr ?? "{}") as Record<string, unknown> };
  }
  throw new Error(`expected ${method} to fail`);
}

const lines = (out: string) =>
  out
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0);

describe("server reflection through buf curl", () => {
  it("lists the credit services and the health service", async () => {
    const services = lines(await bufCurl(["--list-services", url]));
    expect(services).toEqual(expect.arrayContaining(["credit.v1.CreditService", "credit.v1.CreditAdminService", "grpc.health.v1.Health"]));
  });

  it.each(["grpc-v1", "grpc-v1alpha"])("answers the %s reflection protocol (buf curl and older grpcurl)", async (protocol) => {
    const services = lines(await bufCurl(["--reflect-protocol", protocol, "--list-services", url]));
    expect(services).toContain("credit.v1.CreditService");
    const out = await bufCurl(["--reflect-protocol", protocol, "-d", "{}", `${url}/grpc.health.v1.Health/Check`]);
    expect(JSON.parse(out)).toEqual({ status: "SERVING" });
  });

  it("lists every method of CreditService and CreditAdminService", async () => {
    const methods = lines(await bufCurl(["--list-methods", url]));
    expect(methods).toEqual(
      expect.arrayContaining([
        "credit.v1.CreditService/Reserve",
        "credit.v1.CreditService/Commit",
        "credit.v1.CreditService/Release",
        "credit.v1.CreditService/GetBalance",
        "credit.v1.CreditService/GetReservation",
        "credit.v1.CreditService/ExtendReservation",
        "credit.v1.CreditService/PurchaseTopUp",
        "credit.v1.CreditAdminService/AdjustCredits",
        "credit.v1.CreditAdminService/ListLedgerEntries",
        "grpc.health.v1.Health/Check",
      ]),
    );
  });

  it("a top-up, a hold and a balance read made with JSON by reflection show the expected credits", async () => {
    const accountId = newAccountId("reflect");
    const bought = await call("credit.v1.CreditService/PurchaseTopUp", { accountId, packId: "topup-1000", paymentReference: newKey("pay") });
    expect(bought).toMatchObject({
      bucket: { kind: "BUCKET_KIND_TOP_UP", granted: "1000", remaining: "1000" },
      balance: { accountId, available: "1000" },
      price: { currencyCode: "USD", amountMinor: "900" },
    });

    const held = await call("credit.v1.CreditService/Reserve", { accountId, idempotencyKey: newKey(), amount: "250", metadata: { model: "img-v2" } });
    expect(held).toMatchObject({ reservation: { accountId, state: "RESERVATION_STATE_HELD", heldAmount: "250", metadata: { model: "img-v2" } } });

    const balance = await call("credit.v1.CreditService/GetBalance", { accountId });
    expect(balance).toMatchObject({ balance: { accountId, available: "750", held: "250" } });
    // The same numbers through the generated client.
    const viaClient = await t.credit.getBalance({ accountId });
    expect([viaClient.balance?.available, viaClient.balance?.held]).toEqual([750n, 250n]);
  });

  it("the admin service is callable by reflection, and an x-caller header is recorded as the entry's caller", async () => {
    const accountId = newAccountId("reflect");
    await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    await bufCurl([
      "-H",
      "x-caller: support-cli",
      "-d",
      JSON.stringify({ accountId, idempotencyKey: newKey(), amount: "20" }),
      `${url}/credit.v1.CreditService/Reserve`,
    ]);
    const page = await call("credit.v1.CreditAdminService/ListLedgerEntries", { accountId, kinds: ["LEDGER_ENTRY_KIND_HOLD"] });
    const entries = page["entries"] as Record<string, unknown>[];
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ accountId, kind: "LEDGER_ENTRY_KIND_HOLD", amount: "20", caller: "support-cli" });
  });

  it("health Check reports SERVING for the server and for each credit service", async () => {
    expect(await call("grpc.health.v1.Health/Check", {})).toEqual({ status: "SERVING" });
    expect(await call("grpc.health.v1.Health/Check", { service: "credit.v1.CreditService" })).toEqual({ status: "SERVING" });
    expect(await call("grpc.health.v1.Health/Check", { service: "credit.v1.CreditAdminService" })).toEqual({ status: "SERVING" });
  });

  it("a refused call exits non-zero with its gRPC code and an ErrorInfo detail naming the reason", async () => {
    const ghost = newAccountId("reflect-ghost");
    const { exitCode, error } = await failedCall("credit.v1.CreditService/GetBalance", { accountId: ghost });
    expect(exitCode).not.toBe(0);
    expect(error["code"]).toBe("not_found");
    const details = error["details"] as { type: string; value: string }[];
    const info = details.find((d) => d.type === "google.rpc.ErrorInfo");
    expect(info).toBeDefined();
    const decoded = fromBinary(ErrorInfoSchema, Buffer.from(info!.value, "base64"));
    expect(decoded.reason).toBe("ACCOUNT_NOT_FOUND");
    expect(decoded.domain).toBe("credit.v1");
    expect(decoded.metadata["account_id"]).toBe(ghost);
  });

  it("bad input through buf curl is invalid_argument naming the field", async () => {
    const { error } = await failedCall("credit.v1.CreditService/Reserve", { accountId: newAccountId("reflect"), idempotencyKey: newKey(), amount: "-5" });
    expect(error["code"]).toBe("invalid_argument");
    const info = (error["details"] as { type: string; value: string }[]).find((d) => d.type === "google.rpc.ErrorInfo");
    const decoded = fromBinary(ErrorInfoSchema, Buffer.from(info!.value, "base64"));
    expect([decoded.reason, decoded.metadata["field"]]).toEqual(["INVALID_FIELD", "amount"]);
  });
});
