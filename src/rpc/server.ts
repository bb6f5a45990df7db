import { type DescService } from "@bufbuild/protobuf";
import { readFileSync } from "node:fs";
import { Server, ServerCredentials, type ServerInterceptor } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import { bindService, type ServiceHandlers } from "./grpc-adapter.js";
import { HealthReporter } from "./health.js";
import { createReflection } from "./reflection.js";

export interface GrpcServerOptions {
  readonly host: string;
  readonly port: number;
  readonly maxMessageBytes: number;
  readonly credentials: ServerCredentials;
  readonly interceptors: readonly ServerInterceptor[];
}

export interface TlsFiles {
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
  readonly clientCaFile?: string | undefined;
}

/** Plaintext, TLS (cert + key), or mutual TLS (plus a client CA: clients without a certificate it signed are refused). */
export function serverCredentials(tls: TlsFiles): ServerCredentials {
  if (!tls.certFile || !tls.keyFile) return ServerCredentials.createInsecure();
  const keyCert = { cert_chain: readFileSync(tls.certFile), private_key: readFileSync(tls.keyFile) };
  const clientCa = tls.clientCaFile ? readFileSync(tls.clientCaFile) : null;
  return ServerCredentials.createSsl(clientCa, [keyCert], clientCa !== null);
}

export interface GrpcServer {
  readonly port: number;
  readonly health: HealthReporter;
  /** Stops accepting calls, waits up to `graceMs` for in-flight calls, then cuts the rest. */
  shutdown(graceMs: number): Promise<void>;
}

/** A grpc-js server with the given services, reflection and health, bound and listening. */
export async function startGrpcServer(
  services: readonly { service: DescService; handlers: ServiceHandlers }[],
  options: GrpcServerOptions,
  log: Logger,
): Promise<GrpcServer> {
  const server = new Server({
    "grpc.max_receive_message_length": options.maxMessageBytes,
    "grpc.max_send_message_length": 4 * 1024 * 1024,
    // The service serves no channelz, so grpc-js' per-call channelz bookkeeping would be pure cost.
    "grpc.enable_channelz": 0,
    interceptors: [...options.interceptors],
  });
  for (const { service, handlers } of services) {
    const bound = bindService(service, handlers, log);
    server.addService(bound.definition, bound.implementation);
  }
  const health = new HealthReporter(services.map((s) => s.service.typeName));
  health.implementation.addToServer(server);
  const healthService = file_grpc_health_v1_health.services[0]!;
  createReflection([...services.map((s) => s.service), healthService]).addToServer(server);

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${options.host}:${options.port}`, options.credentials, (err, bound) => (err ? reject(err) : resolve(bound))),
  );
  return {
    port,
    health,
    async shutdown(graceMs) {
      health.set("NOT_SERVING");
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
    },
  };
}
