import type { Reply } from "../app/deps.js";
import { FailureError } from "../domain/errors.js";
import { EncodedResponse } from "./grpc-adapter.js";

/** A use case's reply as a handler result: the encoded response, or the failure thrown for rpc/errors.ts. */
export function reply(result: Reply): EncodedResponse {
  if (!result.ok) throw new FailureError(result.failure);
  return new EncodedResponse(result.bytes);
}
