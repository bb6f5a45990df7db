import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, type CreditClientOptions, createCreditClients } from "../../src/client/index.js";
import { parseConfig } from "../../src/config.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { scrape } from "../support/prometheus.js";

/**
 * Transport security: with TLS_CERT_FILE/TLS_KEY_FILE the server speaks only TLS; adding
 * TLS_CLIENT_CA_FILE makes it mutual TLS, refusing clients without a certificate that CA signed.
 * Certificates are made fresh with openssl for each run.
 */

const OPENSSL = "/usr/bin/openssl";
const dir = mkdtempSync(join(tmpdir(), "credit-tls-"));
const file = (name: string) => join(dir, name);

function openssl(args: readonly string[]): void {
  execFileSync(OPENSSL, args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

/** A self-signed CA: `<name>.crt` and `<name>.key`. */
function makeCa(name: string, cn: string): void {
  openssl([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", file(`${name}.key`), "-out", file(`${name}.crt`), "-days", "2", "-subj", `/CN=${cn}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
}

/** A leaf certificate signed by CA `ca`: `<name>.crt` and `<name>.key`. */
function makeLeaf(name: string, ca: string, cn: string, extensions: string): void {
  writeFileSync(file(`${name}.ext`), extensions);
  openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", file(`${name}.key`), "-out", file(`${name}.csr`), "-subj", `/CN=${cn}`]);
  openssl([
    "x509", "-req", "-in", file(`${name}.csr`), "-CA", file(`${ca}.crt`), "-CAkey", file(`${ca}.key`), "-CAcreateserial",
    "-out", file(`${name}.crt`), "-days", "2", "-extfile", file(`${name}.ext`),
  ]);
}

makeCa("ca", "Credit Test CA");
makeLeaf("server", "ca", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n");
makeLeaf("client", "ca", "test-client", "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n");
makeCa("rogue-ca", "Rogue CA");
makeLeaf("rogue-client", "rogue-ca", "test-client", "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n");

const pem = (name: string) => readFileSync(file(name));
const SERVER_TLS = { TLS_CERT_FILE: file("server.crt"), TLS_KEY_FILE: file("server.key") };

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function clients(baseUrl: string, tls?: CreditClientOptions["tls"]) {
  return createCreditClients({ baseUrl, tls, caller: "tls-test", defaultTimeoutMs: 5000, retry: { maxAttempts: 1 } });
}

/** Funds a new account and reads its balance back: a mutating and a reading call over the given clients. */
async function roundTrip(c: ReturnType<typeof clients>): Promise<bigint | undefined> {
  const accountId = newAccountId("tls");
  await c.admin.adjustCredits({ accountId, amount: 42n, reason: "tls round trip", idempotencyKey: newKey() });
  return (await c.credit.getBalance({ accountId })).balance?.available;
}

/** The error a call failed with; fails the test if the call got a response. */
async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  return expect.unreachable("the call got a response");
}

/** Calls the server has handled so far, whatever their outcome (from its /metrics). */
async function handledCalls(t: TestService): Promise<number> {
  const text = await scrape(t.service.metricsPort);
  return text
    .split("\n")
    .filter((l) => l.startsWith("grpc_server_handled_total{"))
    .reduce((sum, l) => sum + Number(l.split(/\s+/).at(-1)), 0);
}

/** Asserts that a call is refused before any handler (or the authentication interceptor) sees it. */
async function refusedAtTransport(t: TestService, call: () => Promise<unknown>): Promise<ConnectError> {
  const before = await handledCalls(t);
  const err = await refusal(call());
  expect(await handledCalls(t)).toBe(before);
  return err;
}

describe("TLS", () => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService(SERVER_TLS);
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("an SDK client trusting the CA calls the server over https://localhost", async () => {
    expect(await roundTrip(clients(`https://localhost:${t.service.port}`, { ca: pem("ca.crt") }))).toBe(42n);
  });

  it("the certificate also covers https://127.0.0.1", async () => {
    expect(await roundTrip(clients(`https://127.0.0.1:${t.service.port}`, { ca: pem("ca.crt") }))).toBe(42n);
  });

  it("a plaintext client gets no response", async () => {
    await refusedAtTransport(t, () => clients(`http://127.0.0.1:${t.service.port}`).credit.listPlans({}));
  });

  it("a client that does not trust the CA refuses the server", async () => {
    const err = await refusal(clients(`https://localhost:${t.service.port}`).credit.listPlans({}));
    expect(err.message).toMatch(/certificate/i);
  });

  it("a client trusting another CA refuses the server", async () => {
    const err = await refusal(clients(`https://localhost:${t.service.port}`, { ca: pem("rogue-ca.crt") }).credit.listPlans({}));
    expect(err.message).toMatch(/certificate/i);
  });

  it("without TLS_CLIENT_CA_FILE a client certificate is not required", async () => {
    expect(await roundTrip(clients(`https://localhost:${t.service.port}`, { ca: pem("ca.crt"), cert: pem("rogue-client.crt"), key: pem("rogue-client.key") }))).toBe(42n);
  });
});

describe("mutual TLS", () => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService({ ...SERVER_TLS, TLS_CLIENT_CA_FILE: file("ca.crt") });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("a client presenting a certificate signed by the client CA is served", async () => {
    expect(await roundTrip(clients(`https://localhost:${t.service.port}`, { ca: pem("ca.crt"), cert: pem("client.crt"), key: pem("client.key") }))).toBe(42n);
  });

  it("a client without a certificate is refused", async () => {
    const accountId = newAccountId("mtls-refused");
    const c = clients(`https://localhost:${t.service.port}`, { ca: pem("ca.crt") });
    await refusedAtTransport(t, () => c.admin.adjustCredits({ accountId, amount: 5n, reason: "must not land", idempotencyKey: newKey() }));
    // Nothing reached the ledger: a trusted client finds no such account.
    const trusted = clients(`https://localhost:${t.service.port}`, { ca: pem("ca.crt"), cert: pem("client.crt"), key: pem("client.key") });
    expect((await refusal(trusted.credit.getBalance({ accountId }))).code).toBe(Code.NotFound);
  });

  it("a client whose certificate another CA signed is refused", async () => {
    const c = clients(`https://localhost:${t.service.port}`, { ca: pem("ca.crt"), cert: pem("rogue-client.crt"), key: pem("rogue-client.key") });
    await refusedAtTransport(t, () => c.credit.listPlans({}));
  });

  it("a plaintext client is refused", async () => {
    await refusedAtTransport(t, () => clients(`http://127.0.0.1:${t.service.port}`).credit.listPlans({}));
  });
});

describe("TLS configuration", () => {
  it("TLS_CERT_FILE without TLS_KEY_FILE is refused", () => {
    expect(() => parseConfig({ TLS_CERT_FILE: file("server.crt") })).toThrow(/TLS_CERT_FILE and TLS_KEY_FILE go together/);
    expect(() => parseConfig({ TLS_KEY_FILE: file("server.key") })).toThrow(/TLS_CERT_FILE and TLS_KEY_FILE go together/);
  });

  it("TLS_CLIENT_CA_FILE without a server certificate is refused", () => {
    expect(() => parseConfig({ TLS_CLIENT_CA_FILE: file("ca.crt") })).toThrow(/TLS_CLIENT_CA_FILE/);
  });
});
