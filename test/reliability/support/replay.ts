import { toBinary } from "@bufbuild/protobuf";
import { CommitResponseSchema, type CreditClients, ReleaseResponseSchema, ReserveResponseSchema } from "../../../src/client/index.js";
import { type AttemptLog, type Replayable, untilAnswered } from "./load.js";

/** Sends every acknowledged request again (same key, same request); counts responses that differ from the original bytes. */
export async function replayAll(clients: CreditClients, log: AttemptLog, calls: readonly Replayable[], concurrency = 16): Promise<{ differing: number; refused: number; examples: string[] }> {
  let differing = 0;
  let refused = 0;
  const examples: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < calls.length) {
      const call = calls[next++]!;
      /* eslint-disable @typescript-eslint/no-explicit-any */
      const r = await untilAnswered(log, async () => {
        if (call.method === "reserve") return toBinary(ReserveResponseSchema, await clients.credit.reserve(call.request as any));
        if (call.method === "commit") return toBinary(CommitResponseSchema, await clients.credit.commit(call.request as any));
        return toBinary(ReleaseResponseSchema, await clients.credit.release(call.request as any));
      });
      /* eslint-enable @typescript-eslint/no-explicit-any */
      if (!r.ok) {
        refused += 1;
        if (examples.length < 10) examples.push(`${call.method} ${String(call.request["idempotencyKey"])}: ${r.error.message}`);
      } else if (Buffer.compare(Buffer.from(r.value), Buffer.from(call.response)) !== 0) {
        differing += 1;
        if (examples.length < 10) examples.push(`${call.method} ${String(call.request["idempotencyKey"])}: response bytes differ`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { differing, refused, examples };
}
