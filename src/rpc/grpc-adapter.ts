import { type DescMessage, type DescMethod, type DescService, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { sendUnaryData, ServerUnaryCall, ServiceDefinition, UntypedServiceImplementation } from "@grpc/grpc-js";
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
 * A handler for every method of a generated service, keyed by the method's local name, each typed
 * from the method's descriptor: a method or field renamed in the proto is a compile error here.
 */
export type ServiceHandlers<S extends GenService<GenServiceMethods>> = {
  readonly [K in keyof S["method"]]: UnaryHandler<S["method"][K]["input"], S["method"][K]["output"]>;
};

/** Handlers for some of a service's methods (one file's share of them). */
export type SomeHandlers<S extends GenService<GenServiceMethods>> = Partial<ServiceHandlers<S>>;

/** A service and its handlers, checked against each other; what the server binds. */
export interface ServiceBinding {
  readonly service: DescService;
  readonly handlers: Readonly<Record<string, UnaryHandler<DescMessage, DescMessage>>>;
}

/** Pairs a generated service with a handler for each of its methods. */
export function implement<S extends GenService<GenServiceMethods>>(service: S, handlers: ServiceHandlers<S>): ServiceBinding {
  return { service: service as DescService, handlers: handlers as unknown as ServiceBinding["handlers"] };
}

function methodDefinition(method: DescMethod) {
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    requestStream: false,
    responseStream: false,
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

/**
 * The one bridge between protobuf-es descriptors and grpc-js: a grpc-js service definition built
 * from a DescService (unary methods only), and an implementation that runs each handler and turns
 * whatever it throws into a status through rpc/errors.ts.
 */
export function bindService({ service, handlers }: ServiceBinding, log: Logger) {
  const definition: Record<string, ReturnType<typeof methodDefinition>> = {};
  const implementation: UntypedServiceImplementation = {};
  for (const method of service.methods) {
    if (method.methodKind !== "unary") throw new Error(`${method.name}: only unary methods are supported`);
    const handler = handlers[method.localName];
    if (!handler) throw new Error(`no handler for ${service.typeName}.${method.name}`);
    definition[method.name] = methodDefinition(method);
    implementation[method.name] = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      const request = call.request;
      const context: CallContext = { method: method.name, caller: callerOf(call.metadata) };
      const run =
        request instanceof MalformedRequest
          ? Promise.reject(new FailureError({ reason: "INVALID_FIELD", message: "request is not a valid protobuf message", metadata: { field: "" } }))
          : handler(request as MessageShape<DescMessage>, context);
      run.then(
        (response) => callback(null, response),
        (err: unknown) => callback(toStatus(err, log, `${service.typeName}/${method.name}`)),
      );
    };
  }
  return { definition: definition as ServiceDefinition, implementation };
}
