import { type Metadata, status } from "@grpc/grpc-js";
import { serviceError } from "./errors.js";

/**
 * At most `max` streaming calls (health Watch, WatchBalance, StreamEvents) open at once on the
 * whole server; one more is refused with RESOURCE_EXHAUSTED TOO_MANY_STREAMS. The connection cap
 * times the streams per connection would otherwise allow 100,000 long-lived streams, over a
 * gigabyte (docs/decisions.md). Unary calls end by themselves and are not counted. The call
 * interceptor (interceptor.ts) asks it once a streaming caller is authenticated, so a refusal is
 * logged like any call, and gives the place back when the call ends: one interceptor layer per
 * stream, not two (each layer is ~1 KB of grpc-js objects held for as long as the stream is open).
 */
export interface StreamLimit {
  /** Takes a place for a stream; false when every place is taken (refuse it with `refusal`). */
  tryOpen(): boolean;
  /** Gives a place back (once per place taken). */
  close(): void;
  /** Streams open now. */
  open(): number;
  /** What a refused stream is told. */
  refusal(): { code: status; details: string; metadata: Metadata };
}

export function streamingCallLimit(max: number): StreamLimit {
  let open = 0;
  return {
    tryOpen() {
      if (open >= max) return false;
      open += 1;
      return true;
    },
    close() {
      open -= 1;
    },
    open: () => open,
    refusal() {
      const details = `the server has ${max} streams open, its most`;
      const error = serviceError(status.RESOURCE_EXHAUSTED, details, "TOO_MANY_STREAMS", { max: String(max) });
      return { code: status.RESOURCE_EXHAUSTED, details, metadata: error.metadata! };
    },
  };
}
