import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { createInterface } from "node:readline";
import { pino } from "pino";
import { parseConfig } from "../src/config.js";
import { Metrics } from "../src/observability/metrics.js";
import { createCallInterceptor } from "../src/rpc/interceptor.js";
import { startGrpcServer } from "../src/rpc/server.js";
import { SERVER_ENV, SERVER_NODE_FLAGS } from "./setup.js";
import { arg } from "./args.js";

/**
 * npx tsx bench/connections.ts [--connections N] [--streams N] [--quick] [--json]
 * What connections and streams cost the server, and what the limits hold it to: a gRPC server
 * with the service's connection limits (src/rpc/server.ts, GRPC_* from the environment, defaults
 * otherwise) and health, in its own process with the container's heap flags; this process plays
 * the clients and reads the server's resident set from /proc.
 *   1. idle HTTP/2 connections (preface sent, no call): resident set per connection;
 *   2. health Watch streams, GRPC_MAX_CONCURRENT_STREAMS per connection: resident set per stream;
 *   3. connections over GRPC_MAX_CONNECTIONS: refused;
 *   4. silent TCP connections: cut after GRPC_HANDSHAKE_TIMEOUT_MS.
 * No database: what is measured is the transport, which is all an unauthenticated client reaches.
 */

const WATCH = "/grpc.health.v1.Health/Watch";


function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match ? Number(match[1]) / 1024 : Number.NaN;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const quick = process.argv.includes("--quick");
  const config = parseConfig(process.env);
  const connections = arg("connections", quick ? 200 : Math.min(1000, config.GRPC_MAX_CONNECTIONS));
  const streams = arg("streams", quick ? 2000 : 5000);
  const perConnection = config.GRPC_MAX_CONCURRENT_STREAMS;

  const streamCap = Number(process.env["GRPC_MAX_STREAMING_CALLS"] ?? streams);
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, "--import", "tsx", "bench/connections.ts", "--server"], {
    // No idle or age limit unless the caller sets one: the connections must stay put while measured.
    // The streaming-call cap is the number of streams measured, unless the caller sets it.
    env: { GRPC_CONNECTION_IDLE_MS: "0", GRPC_CONNECTION_MAX_AGE_MS: "0", GRPC_HANDSHAKE_TIMEOUT_MS: "2000", GRPC_MAX_STREAMING_CALLS: String(streamCap), ...SERVER_ENV, ...process.env },
    stdio: ["pipe", "pipe", "inherit"],
  });
  process.on("exit", () => child.kill("SIGKILL"));
  child.on("exit", (code, signal) => {
    console.log(`the server died (exit ${code ?? signal}): see its last words above`);
    process.exit(1);
  });
  const replies = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async () => JSON.parse(((await replies.next()).value as string) ?? "{}") as { port?: number; connections?: number };
  const port = (await next()).port!;
  const openOnServer = async () => {
    child.stdin!.write("\n");
    return (await next()).connections!;
  };
  const settle = async () => {
    await pause(1500);
    return rssMb(child.pid!);
  };
  const rows: [string, string][] = [];
  const row = (what: string, value: string) => {
    rows.push([what, value]);
    console.log(`${what.padEnd(58)} ${value}`);
  };

  const base = await settle();
  row("server resident set at start", `${base.toFixed(1)} MB`);

  // 1. Idle HTTP/2 connections.
  const sessions: http2.ClientHttp2Session[] = [];
  for (let i = 0; i < connections; i++) {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    s.on("error", () => {});
    sessions.push(s);
    if (i % 100 === 99) await Promise.all(sessions.slice(-100).map((x) => new Promise((r) => x.once("remoteSettings", r))));
  }
  await Promise.all(sessions.map((x) => (x.remoteSettings ? null : new Promise((r) => x.once("remoteSettings", r)))));
  const withConnections = await settle();
  row(`${connections} idle connections`, `${(withConnections - base).toFixed(1)} MB, ${(((withConnections - base) * 1024) / connections).toFixed(1)} KB each`);

  // 2. Watch streams, as many per connection as the server allows; then some over the server's cap.
  const watch = (session: http2.ClientHttp2Session) =>
    new Promise<"served" | "refused">((resolve) => {
      const st = session.request({ ":method": "POST", ":path": WATCH, "content-type": "application/grpc", te: "trailers" });
      st.end(Buffer.alloc(5));
      st.on("error", () => {});
      st.on("data", () => resolve("served"));
      st.once("response", (headers) => headers["grpc-status"] !== undefined && resolve("refused"));
    });
  const measured = Math.min(streams, streamCap);
  const carriers = Math.min(sessions.length, Math.ceil((measured + 50) / perConnection));
  const outcomes: Promise<"served" | "refused">[] = [];
  for (let c = 0; c < carriers && outcomes.length < measured; c++) {
    for (let k = 0; k < perConnection && outcomes.length < measured; k++) outcomes.push(watch(sessions[c]!));
    if (c % 20 === 19) await Promise.all(outcomes);
  }
  const served = (await Promise.all(outcomes)).filter((o) => o === "served").length;
  const withStreams = await settle();
  row(`${served} Watch streams on ${Math.ceil(served / perConnection)} of them (${perConnection} each)`, `${(withStreams - withConnections).toFixed(1)} MB, ${(((withStreams - withConnections) * 1024) / served).toFixed(2)} KB each`);
  row("server resident set with all of them", `${withStreams.toFixed(1)} MB`);
  const over = await Promise.all(Array.from({ length: 50 }, (_, i) => watch(sessions[(carriers - 1 + i) % sessions.length]!)));
  row(`50 more Watch streams with ${streamCap} open (GRPC_MAX_STREAMING_CALLS)`, `${over.filter((o) => o === "refused").length} refused`);

  // 3. Over the cap.
  const room = config.GRPC_MAX_CONNECTIONS - (await openOnServer());
  const extra = Math.max(0, room) + 50;
  let refused = 0;
  const probes: net.Socket[] = [];
  await Promise.all(
    Array.from({ length: extra }, () => {
      const socket = net.connect(port, "127.0.0.1");
      probes.push(socket);
      socket.on("error", () => {});
      return new Promise<void>((resolve) => {
        socket.once("data", () => resolve());
        socket.once("close", () => {
          refused += 1;
          resolve();
        });
      });
    }),
  );
  row(`${extra} more connections with ${Math.max(0, room)} places left (GRPC_MAX_CONNECTIONS)`, `${refused} refused`);
  for (const socket of probes) socket.destroy();
  for (const s of sessions) s.destroy();
  while ((await openOnServer()) > 0) await pause(100);

  // 4. Silent sockets: cut at the handshake timeout.
  const silent = Array.from({ length: Math.min(500, config.GRPC_MAX_CONNECTIONS) }, () => net.connect(port, "127.0.0.1").on("error", () => {}));
  const started = performance.now();
  await Promise.all(silent.map((s) => new Promise((r) => s.once("close", r).resume())));
  row(`${silent.length} silent TCP connections`, `all closed by the server after ${Math.round(performance.now() - started)} ms (GRPC_HANDSHAKE_TIMEOUT_MS ${process.env["GRPC_HANDSHAKE_TIMEOUT_MS"] ?? 2000})`);

  child.removeAllListeners("exit");
  child.kill("SIGKILL");
  if (process.argv.includes("--json")) console.log(JSON.stringify(Object.fromEntries(rows)));
  process.exit(0);
}

async function serve(): Promise<void> {
  const config = parseConfig(process.env);
  const log = pino({ level: "silent" });
  const server = await startGrpcServer(
    [],
    {
      host: "127.0.0.1",
      port: 0,
      maxMessageBytes: config.GRPC_MAX_MESSAGE_BYTES,
      tls: null,
      limits: {
        maxConnections: config.GRPC_MAX_CONNECTIONS,
        maxConcurrentStreams: config.GRPC_MAX_CONCURRENT_STREAMS,
        maxStreamingCalls: config.GRPC_MAX_STREAMING_CALLS,
        handshakeTimeoutMs: config.GRPC_HANDSHAKE_TIMEOUT_MS,
        idleMs: config.GRPC_CONNECTION_IDLE_MS,
        maxAgeMs: config.GRPC_CONNECTION_MAX_AGE_MS,
        maxAgeGraceMs: config.GRPC_CONNECTION_AGE_GRACE_MS,
        tcpKeepaliveMs: config.GRPC_TCP_KEEPALIVE_MS,
        tcpKeepaliveTimeoutMs: config.GRPC_TCP_KEEPALIVE_TIMEOUT_MS,
      },
      // As the service runs it, authentication off: every call logged (silently here) and streams counted.
      callInterceptor: (streams) => createCallInterceptor({ tokens: null, openReflection: true, openHealth: true, log, metrics: new Metrics(), streams }),
    },
    log,
  );
  server.health.set("SERVING");
  console.log(JSON.stringify({ port: server.port }));
  // Connections open now, on request (a line on stdin), for the client side to wait on; gone with it.
  createInterface({ input: process.stdin })
    .on("line", () => console.log(JSON.stringify({ connections: server.connections })))
    .on("close", () => process.exit(0));
}


await (process.argv.includes("--server") ? serve() : main());
