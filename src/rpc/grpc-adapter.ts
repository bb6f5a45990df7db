import { type DescMessage, type DescMethod, type DescService, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type { Metadata, sendUnaryData, ServerUnaryCall, ServiceDefinition, UntypedServiceImplementation } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { FailureError } from "../domain/errors.js";
import { asBuffer, encodeMessage } from "./binary-encoder.js";
import { toStatus } from "./errors.js";

/** A response already encoded (a replayed idempotent response, or one stored with its operation). */
export class EncodedResponse {
  constructor(readonly bytes: Uint8Array) {}
}

/** A request whose bytes are not a valid message of the method's input type. */
class MalformedRequest {
  constructor(readonly cause: unknown) {}
}

export interface CallContext {
  readonly method: string;
  readonly metadata: Metadata;
}

export type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: CallContext,
) => Promise<MessageShape<O> | EncodedResponse>;

/** Handlers for every method of a service, keyed by method name; each takes its method's request type. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ServiceHandlers = Record<string, (request: any, context: CallContext) => Promise<MessageShape<DescMessage> | EncodedResponse>>;

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
export function bindService(service: DescService, handlers: ServiceHandlers, log: Logger) {
  const definition: Record<string, ReturnType<typeof methodDefinition>> = {};
  const implementation: UntypedServiceImplementation = {};
  for (const method of service.methods) {
    if (method.methodKind !== "unary") throw new Error(`${method.name}: only unary methods are supported`);
    const handler = handlers[method.name];
    if (!handler) throw new Error(`no handler for ${service.typeName}.${method.name}`);
    definition[method.name] = methodDefinition(method);
    implementation[method.name] = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      const request = call.request;
      const context: CallContext = { method: method.name, metadata: call.metadata };
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
