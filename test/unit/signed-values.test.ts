import { describe, expect, it } from "vitest";
import { ValueSigner } from "../../src/idempotency/signed-values.js";

describe("ValueSigner", () => {
  const value = { state: "D" as const, hash: "ab".repeat(32), payload: "ü-payload-base64==" };

  it("seals in the stored format: values written by an earlier build still open after a change to how the MAC is computed", () => {
    // Computed by the first implementation (one HMAC update per length and field); a value in
    // Redis outlives the build that wrote it.
    const sealed = "D|abababababababababababababababababababababababababababababababab|ü-payload-base64==|nzR9uPU9cfobgelBtNHH9AaJp4JOGsz_TNfhl6DwftE";
    const signer = new ValueSigner("a secret ✓");
    expect(signer.seal("idem:acct:reserve:k1", value)).toBe(sealed);
    expect(signer.open("idem:acct:reserve:k1", sealed)).toEqual(value);
  });

  it("refuses a value under another key, another secret, or with a field moved across a separator", () => {
    const signer = new ValueSigner("a secret ✓");
    const sealed = signer.seal("idem:acct:reserve:k1", value);
    expect(signer.open("idem:acct:reserve:k2", sealed)).toBeNull();
    expect(new ValueSigner("another secret").open("idem:acct:reserve:k1", sealed)).toBeNull();
    const [state, hash, payload, mac] = sealed.split("|") as [string, string, string, string];
    expect(signer.open("idem:acct:reserve:k1", [state, hash.slice(0, -1), hash.slice(-1) + payload, mac].join("|"))).toBeNull();
  });
});
