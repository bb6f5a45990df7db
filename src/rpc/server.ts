import { readFileSync } from "node:fs";
import type { TlsOptions } from "node:tls";
import { type ChannelOptions, Server, ServerCredentials, type ServerInterceptor } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import { listen } from "./connections.js";
import { bindService, type ServiceBinding } from "./grpc-adapter.js";
import { HealthReporter } from "./health.js";
import { createReflection } from "./reflection.js";
import { type StreamLimit, streamingCallLimit } from "./stream-limit.js";

/** What one client may hold; the GRPC_* connection settings (README). 0 turns a timer off. */
export interface ConnectionLimits {
  readonly maxConnections: number;
  readonly maxConcurrentStreams: number;
  /** Streaming calls open at once on the whole server. */
  readonly maxStreamingCalls: number;
  readonly handshakeTimeoutMs: number;
  readonly idleMs: number;
  readonly maxAgeMs: number;
  readonly maxAgeGraceMs: number;
  readonly tcpKeepaliveMs: number;
  readonly tcpKeepaliveTimeoutMs: number;
}

export interface GrpcServerOptions {
  readonly host: string;
  readonly port: number;
  readonly maxMessageBytes: number;
  /** null: plaintext. */
  readonly tls: TlsOptions | null;
  readonly limits: ConnectionLimits;
  /** Every call passes it first; it also keeps the server's cap on open streams (`streams`). */
  readonly callInterceptor: (streams: StreamLimit) => ServerInterceptor;
}

export interface TlsFiles {
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
  readonly clientCaFile?: string | undefined;
}

/**
 * Plaintext (null), TLS (cert + key), or mutual TLS (plus a client CA: clients without a
 * certificate it signed are refused during the handshake). The same settings grpc-js's
 * `ServerCredentials.createSsl` made, for the TLS server this service now runs itself.
 */
export function tlsOptions(files: TlsFiles): TlsOptions | null {
  if (!files.certFile || !files.keyFile) return null;
  const clientCa = files.clientCaFile ? readFileSync(files.clientCaFile) : undefined;
  return {
    cert: readFileSync(files.certFile),
    key: readFileSync(files.keyFile),
    ca: clientCa,
    requestCert: clientCa !== undefined,
    rejectUnauthorized: true,
    ALPNProtocols: ["h2"],
  };
}

/** grpc-js's own settings for the limits it keeps itself (a timer at 0 is left out: grpc-js would fire it at once). */
function grpcOptions(limits: ConnectionLimits): ChannelOptions {
  return {
    "grpc.max_concurrent_streams": limits.maxConcurrentStreams,
    // Counts open calls: a connection with a stream open (a Watch) is never idle.
    ...(limits.idleMs > 0 && { "grpc.max_connection_idle_ms": limits.idleMs }),
    // GOAWAY at the age (±10 %); open calls, streams included, then have the grace before the cut.
    ...(limits.maxAgeMs > 0 && { "grpc.max_connection_age_ms": limits.maxAgeMs, "grpc.max_connection_age_grace_ms": limits.maxAgeGraceMs }),
    // No grpc.keepalive_time_ms: grpc-js 1.14.7 destroys a connection whose keepalive ping falls
    // after its GOAWAY (the ping fails on a closing session), cutting the calls it is draining at
    // shutdown and the streams in their age grace. TCP keepalive (connections.ts) finds dead peers.
  };
}

export interface GrpcServer {
  readonly port: number;
  readonly health: HealthReporter;
  /** Connections open now. */
  readonly connections: number;
  /** Streaming calls open now. */
  readonly streamingCalls: number;
  /** Stops accepting calls, waits up to `graceMs` for in-flight calls, then cuts the rest. */
  shutdown(graceMs: number): Promise<void>;
}

/** How often, at most, a full connection cap is logged. */
const CAP_REPORT_MS = 60_000;

/** A grpc-js server with the given services, reflection and health, bound and listening. */
export async function startGrpcServer(
  services: readonly ServiceBinding[],
  options: GrpcServerOptions,
  log: Logger,
): Promise<GrpcServer> {
  const streams = streamingCallLimit(options.limits.maxStreamingCalls);
  const server = new Server({
    "grpc.max_receive_message_length": options.maxMessageBytes,
    "grpc.max_send_message_length": 4 * 1024 * 1024,
    // The service serves no channelz, so grpc-js' per-call channelz bookkeeping would be pure cost.
    "grpc.enable_channelz": 0,
    ...grpcOptions(options.limits),
    interceptors: [options.callInterceptor(streams)],
  });
  for (const binding of services) {
    const bound = bindService(binding, log);
    server.addService(bound.definition, bound.implementation);
  }
  const health = new HealthReporter(services.map((s) => s.service.typeName));
  health.implementation.addToServer(server);
  const healthService = file_grpc_health_v1_health.services[0]!;
  createReflection([...services.map((s) => s.service), healthService]).addToServer(server);

  // grpc-js serves the connections this listener accepts (its public connection injector), already
  // decrypted with TLS: the socket layer is ours, for the limits grpc-js lacks (connections.ts).
  const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
  let refused = 0;
  let reportedAt = -Infinity;
  const listener = await listen({
    host: options.host,
    port: options.port,
    tls: options.tls,
    maxConnections: options.limits.maxConnections,
    handshakeTimeoutMs: options.limits.handshakeTimeoutMs,
    tcpKeepalive: options.limits.tcpKeepaliveMs > 0 ? { idleMs: options.limits.tcpKeepaliveMs, timeoutMs: options.limits.tcpKeepaliveTimeoutMs } : null,
    serve: (socket) => injector.injectConnection(socket),
    onRefused: () => {
      refused += 1;
      if (performance.now() - reportedAt < CAP_REPORT_MS) return;
      reportedAt = performance.now();
      log.warn({ maxConnections: options.limits.maxConnections, refused }, "connection cap reached: new connections are closed");
    },
  });
  return {
    port: listener.port,
    health,
    get connections() {
      return listener.connections;
    },
    get streamingCalls() {
      return streams.open();
    },
    async shutdown(graceMs) {
      health.set("NOT_SERVING");
      const closed = listener.close();
      // GOAWAY on every connection; each closes once its calls have finished. grpc-js's own callback
      // here does not wait for them with injected connections (Node's server close marks the
      // sessions closed first, and grpc-js takes that for done), so the sockets are waited for.
      server.tryShutdown(() => {});
      let force: NodeJS.Timeout | undefined;
      const graceOver = new Promise<"grace over">((resolve) => (force = setTimeout(() => resolve("grace over"), graceMs)));
      if ((await Promise.race([closed, graceOver])) === "grace over") {
        server.forceShutdown();
        // Connections grpc-js never saw (a TLS handshake, a missing preface) go too.
        listener.destroyAll();
        await closed;
      }
      clearTimeout(force);
    },
  };
}
