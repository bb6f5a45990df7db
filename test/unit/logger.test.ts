import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger, scrubCredentials } from "../../src/observability/logger.js";

/** A logger writing into an array of parsed JSON lines. */
function captured(): { log: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n").filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: createLogger(sink), lines };
}

describe("scrubCredentials", () => {
  it.each([
    ["grpc-js's message for a header it cannot accept", 'Failed to add metadata entry authorization: Bearer\tsecret.1. Metadata string value "Bearer\tsecret.1" contains illegal characters'],
    ["grpc-js's trace of every header", 'received headers {"te":["trailers"],"authorization":["Bearer secret.2"],"x-request-id":["r1"]}'],
    ["a token with quotes and dots in it", 'authorization: Bearer se"cr.et"3 and more'],
    ["a lower-case scheme", "something bearer secret.4"],
    ["a token without the scheme", "Failed to add metadata entry authorization: secret.5\u00e9"],
  ])("drops everything from the credential on: %s", (_what, message) => {
    const scrubbed = scrubCredentials(message);
    expect(scrubbed).not.toMatch(/secret|se"cr/);
    expect(scrubbed).toMatch(/(authorization|bearer) \[REDACTED\]$/i);
  });

  it("leaves a message that names no credential as it is", () => {
    const message = 'Failed to add metadata entry x-caller: a\tb. Metadata string value "a\tb" contains illegal characters';
    expect(scrubCredentials(message)).toBe(message);
  });
});

describe("createLogger", () => {
  it("censors an authorization field wherever a log line carries one", () => {
    const { log, lines } = captured();
    log.info({ authorization: "Bearer secret.a", headers: { authorization: "Bearer secret.b" }, call: { metadata: { authorization: "Bearer secret.c" } } }, "call");
    expect(JSON.stringify(lines)).not.toMatch(/secret/);
    expect(lines[0]).toMatchObject({ authorization: "[REDACTED]", headers: { authorization: "[REDACTED]" }, call: { metadata: { authorization: "[REDACTED]" } } });
  });
});
