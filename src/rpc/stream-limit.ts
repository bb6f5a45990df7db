import { ServerInterceptingCall, type ServerInterceptor, status } from "@grpc/grpc-js";
import { serviceError } from "./errors.js";

/**
 * At most `max` streaming calls (health Watch, WatchBalance; later StreamEvents) open at once on
 * the whole server; one more is refused with RESOURCE_EXHAUSTED TOO_MANY_STREAMS. The connection
 * cap times the streams per connection would otherwise allow 100,000 long-lived streams, over a
 * gigabyte (docs/decisions.md). Unary calls end by themselves and are not counted. It sits outside
 * the call interceptor: a refused caller was authenticated first, and the refusal is logged.
 */
export function streamingCallLimit(max: number): { interceptor: ServerInterceptor; open(): number } {
  let open = 0;
  const interceptor: ServerInterceptor = (descriptor, call) => {
    // Unary calls go through untouched: no extra layer on the hot path (grpc-js only uses the interface).
    if (!descriptor.requestStream && !descriptor.responseStream) return call as ServerInterceptingCall;
    let counted = false;
    const release = () => {
      if (counted) open -= 1;
      counted = false;
    };
    return new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, nextMetadata) {
            if (open >= max) {
              const message = `the server has ${max} streams open, its most`;
              const refusal = serviceError(status.RESOURCE_EXHAUSTED, message, "TOO_MANY_STREAMS", { max: String(max) });
              call.sendStatus({ code: status.RESOURCE_EXHAUSTED, details: message, metadata: refusal.metadata! });
              return;
            }
            open += 1;
            counted = true;
            nextMetadata(metadata);
          },
          // A client that cancels its stream gets no status: the count drops here.
          onCancel: release,
        });
      },
      sendStatus(statusObject, next) {
        release();
        next(statusObject);
      },
    });
  };
  return { interceptor, open: () => open };
}
