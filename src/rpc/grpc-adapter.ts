import { type DescMessage, type DescMethod, type DescService, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { sendUnaryData, ServerUnaryCall, ServerWritableStream, ServiceDefinition, UntypedServiceImplementation } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { FailureError } from "../domain/errors.js";
import { asBuffer, encodeMessage } from "./binary-encoder.js";
import { toStatus } from "./errors.js";
import { callerOf } from "./interceptor.js";

/** A response already encoded (a replayed idempotent response, or one stored with its operation). */
export class EncodedResponse {
  constructor(readonly bytes: Uint8Array) {}
}

/** A request whose bytes are not a valid message of the method's input type. */
class MalformedRequest {
  constructor(readonly cause: unknown) {}
}

/** What a handler knows of its call besides the request. */
export interface CallContext {
  /** The method's name in the proto (`Reserve`). */
  readonly method: string;
  /** Who is calling, as the call interceptor established it (the token's principal; see interceptor.ts). */
  readonly caller: string;
}

export type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: CallContext,
) => Promise<MessageShape<O> | EncodedResponse>;

/**
 * The sending side of a server stream, as a handler sees it: nothing of grpc-js beyond this.
 */
export interface ServerStream<O extends DescMessage> {
  /**
   * Sends one message. Resolves once grpc-js has taken it without exceeding its buffer, or, when
   * the buffer is full, once it has drained: a handler that awaits each send never holds more than
   * one message in memory for a slow client. After the call has ended it resolves without sending
   * (the handler learns of the end from `signal`).
   */
  send(message: MessageShape<O> | EncodedResponse): Promise<void>;
  /**
   * Sends one message at once, without a promise: false when grpc-js' buffer is now past its
   * high-water mark, and the caller writes nothing more until `drained()` resolves. After the call
   * has ended it sends nothing and returns true.
   */
  write(message: MessageShape<O> | EncodedResponse): boolean;
  /** Resolves once grpc-js' buffer has drained, or the call has ended. */
  drained(): Promise<void>;
  /** Aborted when the client cancels, the connection goes, or the call has ended. */
  readonly signal: AbortSignal;
}

/**
 * A server-streaming method: sends through `stream` and resolves to end the call with OK, or
 * rejects to end it with the status rpc/errors.ts makes of the rejection (as for a unary call).
 */
export type StreamHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: CallContext,
  stream: ServerStream<O>,
) => Promise<void>;

/** The handler a method of this kind takes; client and bidi streaming have none (never: not implementable). */
export type HandlerFor<M extends Pick<DescMethod, "input" | "output" | "methodKind">> = M["methodKind"] extends "unary"
  ? UnaryHandler<M["input"], M["output"]>
  : M["methodKind"] extends "server_streaming"
    ? StreamHandler<M["input"], M["output"]>
    : never;

/**
 * A handler for every method of a generated service, keyed by the method's local name, each typed
 * from the method's descriptor: a method or field renamed in the proto is a compile error here,
 * and so is a unary handler for a streaming method or the other way round.
 */
export type ServiceHandlers<S extends GenService<GenServiceMethods>> = {
  readonly [K in keyof S["method"]]: HandlerFor<S["method"][K]>;
};

/** Handlers for some of a service's methods (one file's share of them). */
export type SomeHandlers<S extends GenService<GenServiceMethods>> = Partial<ServiceHandlers<S>>;

/** A service and its handlers, checked against each other; what the server binds. */
export interface ServiceBinding {
  readonly service: DescService;
  readonly handlers: Readonly<Record<string, UnaryHandler<DescMessage, DescMessage> | StreamHandler<DescMessage, DescMessage>>>;
}

/** Pairs a generated service with a handler for each of its methods. */
export function implement<S extends GenService<GenServiceMethods>>(service: S, handlers: ServiceHandlers<S>): ServiceBinding {
  return { service: service as DescService, handlers: handlers as unknown as ServiceBinding["handlers"] };
}

function methodDefinition(method: DescMethod) {
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    requestStream: false,
    responseStream: method.methodKind === "server_streaming",
    originalName: method.localName,
    requestSerialize: (value: MessageShape<DescMessage>) => Buffer.from(toBinary(method.input, value)),
    requestDeserialize: (bytes: Buffer): MessageShape<DescMessage> | MalformedRequest => {
      try {
        return fromBinary(method.input, bytes);
      } catch (err) {
        return new MalformedRequest(err);
      }
    },
    responseSerialize: (value: MessageShape<DescMessage> | EncodedResponse) =>
      value instanceof EncodedResponse ? asBuffer(value.bytes) : encodeMessage(method.output, value),
    responseDeserialize: (bytes: Buffer) => fromBinary(method.output, bytes),
  };
}

const MALFORMED = () =>
  new FailureError({ reason: "INVALID_FIELD", message: "request is not a valid protobuf message", metadata: { field: "" } });

/**
 * The ServerStream over a grpc-js writable call. `signal` follows the call: a cancel (grpc-js emits
 * 'cancelled' and destroys the stream) or the stream's close after its status aborts it.
 */
function serverStream(call: ServerWritableStream<unknown, unknown>): ServerStream<DescMessage> {
  const ended = new AbortController();
  const end = () => ended.abort();
  call.once("cancelled", end);
  call.once("close", end);
  if (call.cancelled || call.destroyed) end();
  const drained = () =>
    new Promise<void>((resolve) => {
      if (ended.signal.aborted) return resolve();
      // 'drain', or the end of the call: a client that stops reading and then goes never drains.
      const done = () => {
        call.off("drain", done);
        ended.signal.removeEventListener("abort", done);
        resolve();
      };
      call.once("drain", done);
      ended.signal.addEventListener("abort", done, { once: true });
    });
  const write = (message: MessageShape<DescMessage> | EncodedResponse) => ended.signal.aborted || call.writableEnded || call.write(message);
  return {
    signal: ended.signal,
    write,
    drained,
    send: (message) => (write(message) ? Promise.resolve() : drained()),
  };
}

/**
 * The one bridge between protobuf-es descriptors and grpc-js: a grpc-js service definition built
 * from a DescService (unary and server-streaming methods; client and bidi streaming are refused),
 * and an implementation that runs each handler and turns whatever it throws into a status through
 * rpc/errors.ts.
 */
export function bindService({ service, handlers }: ServiceBinding, log: Logger) {
  const definition: Record<string, ReturnType<typeof methodDefinition>> = {};
  const implementation: UntypedServiceImplementation = {};
  for (const method of service.methods) {
    if (method.methodKind !== "unary" && method.methodKind !== "server_streaming") {
      throw new Error(`${method.name}: only unary and server-streaming methods are supported`);
    }
    const handler = handlers[method.localName];
    if (!handler) throw new Error(`no handler for ${service.typeName}.${method.name}`);
    definition[method.name] = methodDefinition(method);
    const where = `${service.typeName}/${method.name}`;
    if (method.methodKind === "server_streaming") {
      const stream = handler as StreamHandler<DescMessage, DescMessage>;
      implementation[method.name] = (call: ServerWritableStream<unknown, unknown>) => {
        const request = call.request;
        const context: CallContext = { method: method.name, caller: callerOf(call.metadata) };
        const out = serverStream(call);
        const run = request instanceof MalformedRequest ? Promise.reject(MALFORMED()) : stream(request as MessageShape<DescMessage>, context, out);
        run.then(
          () => {
            if (!out.signal.aborted) call.end();
          },
          (err: unknown) => {
            // grpc-js' own 'error' listener on a server stream makes the error the pending status
            // and ends the call: the messages already written go first, then this status.
            if (!out.signal.aborted) call.emit("error", toStatus(err, log, where));
          },
        );
      };
      continue;
    }
    const unary = handler as UnaryHandler<DescMessage, DescMessage>;
    implementation[method.name] = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      const request = call.request;
      const context: CallContext = { method: method.name, caller: callerOf(call.metadata) };
      const run = request instanceof MalformedRequest ? Promise.reject(MALFORMED()) : unary(request as MessageShape<DescMessage>, context);
      run.then(
        (response) => callback(null, response),
        (err: unknown) => callback(toStatus(err, log, where)),
      );
    };
  }
  return { definition: definition as ServiceDefinition, implementation };
}
