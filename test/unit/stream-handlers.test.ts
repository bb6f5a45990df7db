/**
 * Server-streaming methods through the adapter (grpc-adapter.ts), on a real grpc-js server and a
 * real client: the health service's Watch stands in for any server-streaming method. The typing
 * half works like typed-handlers.test.ts: each `@ts-expect-error` is a mistake typecheck must catch.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { FailureError } from "../../src/domain/errors.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { Health, HealthCheckResponse_ServingStatus, HealthCheckResponseSchema, HealthListResponseSchema } from "../../src/gen/grpc/health/v1/health_pb.js";
import { bindService, EncodedResponse, implement, type ServiceHandlers, type StreamHandler } from "../../src/rpc/grpc-adapter.js";

const log = pino({ level: "silent" });
const SERVING = create(HealthCheckResponseSchema, { status: HealthCheckResponse_ServingStatus.SERVING });
const unaryAnswer = async () => SERVING;
const unused = async () => new EncodedResponse(new Uint8Array());

let stopServer: (() => void) | undefined;
afterEach(() => stopServer?.());

/** A grpc-js server serving Health with `watch` as its streaming method; a client for it. */
async function serve(watch: ServiceHandlers<typeof Health>["watch"]) {
  const server = new Server();
  const bound = bindService(implement(Health, { check: unaryAnswer, watch, list: unused }), log);
  server.addService(bound.definition, bound.implementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  stopServer = () => server.forceShutdown();
  return createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
}

/** A promise and the function that settles it, for waiting on something the server does. */
function signalled<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe("server-streaming handlers", () => {
  it("sends each message in order, then ends the call with OK when the handler resolves", async () => {
    const client = await serve(async (req, ctx, stream) => {
      expect(req.service).toBe("svc");
      expect(ctx.method).toBe("Watch");
      for (const status of [HealthCheckResponse_ServingStatus.NOT_SERVING, HealthCheckResponse_ServingStatus.SERVING]) {
        await stream.send(create(HealthCheckResponseSchema, { status }));
      }
    });
    const received: HealthCheckResponse_ServingStatus[] = [];
    for await (const message of client.watch({ service: "svc" })) received.push(message.status);
    expect(received).toEqual([HealthCheckResponse_ServingStatus.NOT_SERVING, HealthCheckResponse_ServingStatus.SERVING]);
  });

  it("a rejection becomes the call's status with its reason, after the messages already sent", async () => {
    const client = await serve(async (_req, _ctx, stream) => {
      await stream.send(SERVING);
      throw new FailureError({ reason: "ACCOUNT_NOT_FOUND", message: "no such account", metadata: { account_id: "a" } });
    });
    const received: HealthCheckResponse_ServingStatus[] = [];
    const error = await (async () => {
      try {
        for await (const message of client.watch({})) received.push(message.status);
      } catch (e) {
        return ConnectError.from(e);
      }
      return undefined;
    })();
    expect(received).toEqual([HealthCheckResponse_ServingStatus.SERVING]);
    expect(error?.code).toBe(Code.NotFound);
    expect(error?.findDetails(ErrorInfoSchema)[0]?.reason).toBe("ACCOUNT_NOT_FOUND");
  });

  it("an unexpected rejection is INTERNAL, its cause not sent", async () => {
    const client = await serve(async () => {
      throw new Error("secret detail");
    });
    const error = await (async () => {
      try {
        for await (const _ of client.watch({})) void _;
      } catch (e) {
        return ConnectError.from(e);
      }
      return undefined;
    })();
    expect(error?.code).toBe(Code.Internal);
    expect(error?.rawMessage).not.toContain("secret");
  });

  it("the handler's signal aborts when the client cancels, and a send after it resolves without sending", async () => {
    const aborted = signalled();
    const afterAbort = signalled<boolean>();
    const client = await serve(async (_req, _ctx, stream) => {
      await stream.send(SERVING);
      stream.signal.addEventListener("abort", () => aborted.resolve(), { once: true });
      await aborted.promise;
      await stream.send(SERVING);
      afterAbort.resolve(stream.signal.aborted);
    });
    const cancel = new AbortController();
    const stream = client.watch({}, { signal: cancel.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    cancel.abort();
    await aborted.promise;
    expect(await afterAbort.promise).toBe(true);
  });

  it("bindService refuses client and bidi streaming methods", () => {
    const watch = Health.method.watch;
    const bidi = { ...Health, methods: [{ ...watch, methodKind: "bidi_streaming" as const }] };
    const handlers = { watch: async () => {} };
    expect(() => bindService({ service: bidi, handlers } as never, log)).toThrow(/only unary and server-streaming/);
  });
});

describe("typed streaming handler maps", () => {
  it("a streaming method takes a StreamHandler and a unary method a UnaryHandler: a mix-up is a compile error", () => {
    const watch: StreamHandler<typeof Health.method.watch.input, typeof Health.method.watch.output> = async (_req, _ctx, stream) => {
      await stream.send(SERVING);
      // @ts-expect-error a stream sends its method's output message, not another one
      await stream.send(create(HealthListResponseSchema));
      // @ts-expect-error write takes its method's output message too
      stream.write(create(HealthListResponseSchema));
      // @ts-expect-error the stream offers send, write, drained and signal only, nothing of grpc-js
      stream.end();
    };
    const bindings = [
      implement(Health, { check: unaryAnswer, watch, list: unused }),
      // @ts-expect-error Watch is server-streaming: a unary handler returning its answer does not fit
      implement(Health, { check: unaryAnswer, watch: unaryAnswer, list: unused }),
      // @ts-expect-error Check is unary: a streaming handler does not fit
      implement(Health, { check: watch, watch, list: unused }),
    ];
    expect(bindings).toHaveLength(3);
  });
});
