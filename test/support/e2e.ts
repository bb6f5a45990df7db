import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { type Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, expect } from "vitest";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { startTestService, type TestService } from "./harness.js";

export interface CallFailure {
  readonly code: Code;
  readonly reason: string | undefined;
  readonly metadata: Record<string, string>;
}

/** Awaits a call that must fail; returns its gRPC code and its ErrorInfo reason and metadata. */
export async function failureOf(call: Promise<unknown>): Promise<CallFailure> {
  try {
    await call;
  } catch (e) {
    expect(e).toBeInstanceOf(ConnectError);
    const err = ConnectError.from(e);
    const info = err.findDetails(ErrorInfoSchema)[0];
    return { code: err.code, reason: info?.reason, metadata: { ...(info?.metadata ?? {}) } };
  }
  return expect.unreachable("the call succeeded but should have failed");
}

/** A timestamp as an ISO string (undefined when unset), for readable assertions. */
export function iso(ts: Timestamp | undefined): string | undefined {
  return ts ? timestampDate(ts).toISOString() : undefined;
}

/** One service for the enclosing describe block, started at `start` with `env`. */
export function serviceAt(start: Date, env: Record<string, string> = {}): () => TestService {
  let t: TestService | undefined;
  beforeAll(async () => {
    t = await startTestService(env, start);
  });
  afterAll(async () => {
    await t?.stop();
  });
  return () => {
    if (!t) throw new Error("service not started");
    return t;
  };
}
