import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CreditAdminService } from "../gen/credit/v1/admin_service_pb.js";
import { CreditService } from "../gen/credit/v1/credit_service_pb.js";

export { CreditAdminService, CreditService };
export * from "../gen/credit/v1/admin_service_pb.js";
export * from "../gen/credit/v1/credit_service_pb.js";
export * from "../gen/credit/v1/types_pb.js";

export interface CreditClientOptions {
  /** For example "http://127.0.0.1:50051". */
  readonly baseUrl: string;
  /** Recorded on ledger entries as the caller (sent as `x-caller` metadata). */
  readonly caller?: string;
  /** Per-call deadline unless a call sets its own. */
  readonly defaultTimeoutMs?: number;
}

export interface CreditClients {
  readonly credit: Client<typeof CreditService>;
  readonly admin: Client<typeof CreditAdminService>;
}

/** Typed clients for both services over one gRPC (HTTP/2) transport. */
export function createCreditClients(options: CreditClientOptions): CreditClients {
  const interceptors: Interceptor[] = [];
  if (options.caller) {
    const caller = options.caller;
    interceptors.push((next) => (req) => {
      req.header.set("x-caller", caller);
      return next(req);
    });
  }
  const transport = createGrpcTransport({
    baseUrl: options.baseUrl,
    interceptors,
    defaultTimeoutMs: options.defaultTimeoutMs ?? 10_000,
  });
  return { credit: createClient(CreditService, transport), admin: createClient(CreditAdminService, transport) };
}
