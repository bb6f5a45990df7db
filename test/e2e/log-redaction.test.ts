import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GetBalanceRequestSchema } from "../../src/client/index.js";
import { sha256 } from "../../src/rpc/auth.js";
import { type ServerProcess, spawnServer } from "../support/server-process.js";

/**
 * No bearer token reaches the logs, whatever the header looks like. grpc-js logs the whole value
 * of a header it cannot accept (a TAB, a byte above 0x7e) and, with tracing on, every header of
 * every call; the real server process runs with grpc-js at its most verbose, and everything it
 * writes to stdout and stderr is searched for the tokens.
 */

/** The random part of every token made here, to search the output for. */
const secrets: string[] = [];
function token(label: string): string {
  const random = randomBytes(18).toString("hex");
  secrets.push(random);
  return `${label}.${random}`;
}
const VALID = token("valid");
const WITH_TAB = token("tab");
const WITH_HIGH_BYTE = token("latin1");
const WITH_TAB_AFTER = token("tab-after");
const NO_SCHEME = token("bare");

let server: ServerProcess;
let port: number;

beforeAll(async () => {
  server = spawnServer({
    AUTH_TOKENS: `runner:runner:${sha256(VALID).toString("hex")}`,
    LOG_LEVEL: "trace",
    GRPC_VERBOSITY: "DEBUG",
    GRPC_TRACE: "all",
  });
  port = await server.listening;
});
afterAll(async () => {
  await server?.stop();
});

/** A GetBalance request framed for gRPC: no compression, a 4-byte length, the message. */
const REQUEST = (() => {
  const message = toBinary(GetBalanceRequestSchema, create(GetBalanceRequestSchema, { accountId: "redaction-probe" }));
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
})();

/** One GetBalance over a raw HTTP/2 stream with this authorization header; resolves with its grpc-status. */
function callWith(authorization: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": "/credit.v1.CreditService/GetBalance",
      "content-type": "application/grpc",
      te: "trailers",
      authorization,
    });
    stream.end(REQUEST);
    let status = "";
    stream.on("response", (headers) => (status = String(headers["grpc-status"] ?? status)));
    stream.on("trailers", (trailers) => (status = String(trailers["grpc-status"] ?? status)));
    stream.on("data", () => {});
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      resolve(status);
    });
  });
}

describe("tokens never reach the log", () => {
  it("neither from headers grpc-js rejects nor from its traces of the headers it accepts", async () => {
    // 16 = UNAUTHENTICATED: grpc-js drops a header it cannot read, so the call has no token at all.
    expect(await callWith(`Bearer\t${WITH_TAB}`)).toBe("16");
    expect(await callWith(`Bearer ${WITH_HIGH_BYTE}\u00e9`)).toBe("16");
    expect(await callWith(`Bearer ${WITH_TAB_AFTER}\tx`)).toBe("16");
    expect(await callWith(NO_SCHEME)).toBe("16");
    // 5 = NOT_FOUND: the valid token authenticated the call, and the account does not exist.
    expect(await callWith(`Bearer ${VALID}`)).toBe("5");
    await server.stop();

    const output = server.output();
    // The calls went through the paths that print header values (else this test would prove nothing).
    expect(output).toMatch(/Failed to add metadata entry authorization/);
    expect(output).toMatch(/received headers/);
    expect(secrets).toHaveLength(5);
    for (const secret of secrets) {
      // Any 16 digits of the random part, so a token cut or re-quoted on its way into the log is caught too.
      for (let at = 0; at + 16 <= secret.length; at += 4) expect(output).not.toContain(secret.slice(at, at + 16));
    }
  });
});
