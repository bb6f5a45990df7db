import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../src/gen/google/rpc/status_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { startTestService, type TestService } from "../support/harness.js";
import { handled, sampleOf, scrape } from "../support/prometheus.js";

/**
 * What a connection may cost the server before it has authenticated anything: sockets that never
 * speak HTTP/2, more connections than the cap, more streams than a connection may open, idle
 * connections, and connections past their age. Raw sockets and raw HTTP/2 sessions play the
 * misbehaving clients; the limits are set short through the service's own configuration.
 */

/** The client's half of the HTTP/2 connection preface (RFC 9113 §3.4), then an empty SETTINGS frame. */
// Each limit here acts within a second; a server without it would leave the test waiting.
vi.setConfig({ testTimeout: 20_000 });

const PREFACE = Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);
const WATCH = "/grpc.health.v1.Health/Watch";

const dir = mkdtempSync(join(tmpdir(), "credit-limits-"));
execFileSync("/usr/bin/openssl", [
  "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", join(dir, "server.key"),
  "-out", join(dir, "server.crt"), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
], { stdio: ["ignore", "ignore", "pipe"] });
const TLS = { TLS_CERT_FILE: join(dir, "server.crt"), TLS_KEY_FILE: join(dir, "server.key") };
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function service(env: Record<string, string>): () => TestService {
  let t: TestService | undefined;
  beforeAll(async () => {
    t = await startTestService(env);
  });
  afterAll(async () => {
    await t?.stop();
  });
  return () => t!;
}

/** A plain TCP connection, once connected. Every socket a test opens is destroyed after it. */
const sockets: net.Socket[] = [];
afterAll(() => sockets.forEach((s) => s.destroy()));
async function rawConnection(port: number, options: { allowHalfOpen?: boolean } = {}): Promise<net.Socket> {
  const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: options.allowHalfOpen ?? false });
  sockets.push(socket);
  socket.on("error", () => {});
  await new Promise<void>((resolve) => socket.once("connect", resolve));
  return socket;
}

/** Whether the server took the connection on (its first bytes arrive) or closed it without a word. */
function fate(socket: net.Socket): Promise<"served" | "closed"> {
  return new Promise((resolve) => {
    socket.once("data", () => resolve("served"));
    socket.once("close", () => resolve("closed"));
    socket.resume();
  });
}

/** Resolves when the socket is closed; says whether the server ended it (we never do). */
function closedByServer(socket: net.Socket): Promise<boolean> {
  return new Promise((resolve) => {
    let ended = false;
    socket.on("end", () => (ended = true));
    socket.once("close", () => resolve(ended || socket.readableEnded));
    socket.resume();
  });
}

/** The server's open connections, from /metrics. */
async function openConnections(t: TestService): Promise<number> {
  return sampleOf(await scrape(t.service.metricsPort), "credit_grpc_connections") ?? Number.NaN;
}

/** Polls until the condition holds (the test's own timeout bounds the wait). */
async function until(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((r) => setTimeout(r, 20));
}

/** A raw HTTP/2 session (closed after the test file). */
const sessions: http2.ClientHttp2Session[] = [];
afterAll(() => sessions.forEach((s) => s.destroy()));
function session(port: number): http2.ClientHttp2Session {
  const s = http2.connect(`http://127.0.0.1:${port}`);
  s.on("error", () => {});
  sessions.push(s);
  return s;
}

interface Watch {
  readonly stream: http2.ClientHttp2Stream;
  /** Resolves at the first status message. */
  readonly first: Promise<void>;
  /** Resolves when the stream closes, with its RST_STREAM code (0: none). */
  readonly closed: Promise<number>;
}

/** A grpc.health.v1.Health/Watch stream for the server as a whole (an empty request). */
function watch(s: http2.ClientHttp2Session): Watch {
  const stream = s.request({ ":method": "POST", ":path": WATCH, "content-type": "application/grpc", te: "trailers" });
  stream.end(Buffer.alloc(5));
  stream.on("error", () => {});
  const first = new Promise<void>((resolve) => stream.once("data", () => resolve()));
  const closed = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? 0)));
  return { stream, first, closed };
}

/** A grpc.health.v1.Health/Check on the session; resolves with its grpc-status. */
function unaryCheck(s: http2.ClientHttp2Session): Promise<string | undefined> {
  const stream = s.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/grpc", te: "trailers" });
  stream.end(Buffer.alloc(5));
  stream.resume();
  return new Promise((resolve, reject) => {
    stream.once("trailers", (trailers) => resolve(String(trailers["grpc-status"])));
    stream.once("error", reject);
  });
}

function healthClient(port: number) {
  return createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
}

describe("a connection that never completes the HTTP/2 preface", () => {
  const svc = service({ GRPC_HANDSHAKE_TIMEOUT_MS: "300" });

  it("is closed by the server once GRPC_HANDSHAKE_TIMEOUT_MS has passed, when it sends nothing", async () => {
    const socket = await rawConnection(svc().service.port);
    expect(await closedByServer(socket)).toBe(true);
  });

  it("is closed too when it sends only part of the preface", async () => {
    const socket = await rawConnection(svc().service.port);
    socket.write(PREFACE.subarray(0, 16));
    expect(await closedByServer(socket)).toBe(true);
  });

  it("while a client that completes it is served", async () => {
    const { status } = await healthClient(svc().service.port).check({ service: "" });
    expect(status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });
});

describe("with TLS, a connection that never completes the handshake or the preface", () => {
  const svc = service({ ...TLS, GRPC_HANDSHAKE_TIMEOUT_MS: "300" });

  it("is closed when it never starts the TLS handshake", async () => {
    const socket = await rawConnection(svc().service.port);
    expect(await closedByServer(socket)).toBe(true);
  });

  it("is closed when it finishes the handshake and then sends nothing", async () => {
    const socket = tls.connect({ port: svc().service.port, host: "127.0.0.1", ca: readFileSync(TLS.TLS_CERT_FILE), ALPNProtocols: ["h2"] });
    sockets.push(socket);
    socket.on("error", () => {});
    await new Promise<void>((resolve) => socket.once("secureConnect", resolve));
    expect(socket.alpnProtocol).toBe("h2");
    expect(await closedByServer(socket)).toBe(true);
  });
});

describe("a peer that ignores the server closing an idle connection", () => {
  const svc = service({ GRPC_CONNECTION_IDLE_MS: "200", GRPC_HANDSHAKE_TIMEOUT_MS: "200" });

  it("loses its connection anyway: the server cuts it GRPC_HANDSHAKE_TIMEOUT_MS after closing its side", async () => {
    const t = svc();
    await until(async () => (await openConnections(t)) === 0);
    const socket = await rawConnection(t.service.port, { allowHalfOpen: true });
    socket.write(PREFACE);
    const ended = new Promise<void>((resolve) => socket.once("end", resolve));
    socket.resume();
    await until(async () => (await openConnections(t)) === 1);
    // The server said goodbye (GOAWAY, then FIN); this peer never closes its side.
    await ended;
    await until(async () => (await openConnections(t)) === 0);
    expect(socket.destroyed).toBe(false);
  });
});

describe("the connection cap", () => {
  const svc = service({ GRPC_MAX_CONNECTIONS: "3", GRPC_HANDSHAKE_TIMEOUT_MS: "60000" });

  it("closes a connection over GRPC_MAX_CONNECTIONS at once, while the connected clients keep being served", async () => {
    const t = svc();
    const health = healthClient(t.service.port);
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const first = await rawConnection(t.service.port);
    expect(await fate(first)).toBe("served");
    const second = await rawConnection(t.service.port);
    expect(await fate(second)).toBe("served");

    const over = await rawConnection(t.service.port);
    expect(await fate(over)).toBe("closed");
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);

    // A place that frees up is taken by the next connection.
    first.destroy();
    await until(async () => (await openConnections(t)) === 2);
    expect(await fate(await rawConnection(t.service.port))).toBe("served");
  });
});

describe("concurrent streams on one connection", () => {
  const svc = service({ GRPC_MAX_CONCURRENT_STREAMS: "2" });

  it("are announced to the client as at most GRPC_MAX_CONCURRENT_STREAMS", async () => {
    const s = session(svc().service.port);
    const settings = await new Promise<http2.Settings>((resolve) => s.once("remoteSettings", resolve));
    expect(settings.maxConcurrentStreams).toBe(2);
  });

  it("beyond it, a stream the client opens anyway is refused (REFUSED_STREAM), and the others are served", async () => {
    // Opened before the server's SETTINGS arrive, so the client does not hold the third back itself.
    const s = session(svc().service.port);
    const watches = [watch(s), watch(s), watch(s)];
    expect(await watches[2]!.closed).toBe(http2.constants.NGHTTP2_REFUSED_STREAM);
    await Promise.all([watches[0]!.first, watches[1]!.first]);
  });

  it("a client that keeps to it queues the calls beyond it, and every one is served in turn", async () => {
    const s = session(svc().service.port);
    await new Promise((resolve) => s.once("remoteSettings", resolve));
    const statuses = await Promise.all(Array.from({ length: 12 }, () => unaryCheck(s)));
    expect(statuses).toEqual(Array.from({ length: 12 }, () => "0"));
  });
});

describe("streaming calls on the whole server", () => {
  const svc = service({ GRPC_MAX_STREAMING_CALLS: "2" });

  it("beyond GRPC_MAX_STREAMING_CALLS, a Watch on any connection is refused with RESOURCE_EXHAUSTED TOO_MANY_STREAMS; unary calls still pass", async () => {
    const t = svc();
    const port = t.service.port;
    const watches = [watch(session(port)), watch(session(port))];
    await Promise.all(watches.map((w) => w.first));
    expect(sampleOf(await scrape(t.service.metricsPort), "credit_grpc_streaming_calls")).toBe(2);

    const refused = await refusal(session(port));
    expect(refused).toEqual({ status: "8", reason: "TOO_MANY_STREAMS" });
    // Refused after authentication, in the call log and metrics like any call.
    expect(handled(await scrape(t.service.metricsPort), "grpc.health.v1.Health", "Watch", "RESOURCE_EXHAUSTED")).toBe(1);
    expect(await unaryCheck(session(port))).toBe("0");

    // A stream the client cancels gives its place back (it gets no status: the cancel is counted).
    watches[0]!.stream.close(http2.constants.NGHTTP2_CANCEL);
    await until(async () => sampleOf(await scrape(t.service.metricsPort), "credit_grpc_streaming_calls") === 1);
    await watch(session(port)).first;
  });
});

/** A Watch that the server answers with a status at once; its grpc-status and ErrorInfo reason. */
async function refusal(s: http2.ClientHttp2Session): Promise<{ status: string; reason: string | undefined }> {
  const stream = s.request({ ":method": "POST", ":path": WATCH, "content-type": "application/grpc", te: "trailers" });
  stream.end(Buffer.alloc(5));
  stream.resume();
  // A status without a message comes as trailers-only: in the response headers.
  const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once("response", resolve));
  const details = headers["grpc-status-details-bin"];
  const reason = typeof details === "string" ? fromBinary(StatusSchema, Buffer.from(details, "base64")).details.map((d) => anyUnpack(d, ErrorInfoSchema)?.reason)[0] : undefined;
  return { status: String(headers["grpc-status"]), reason };
}

describe("an idle connection", () => {
  const svc = service({ GRPC_CONNECTION_IDLE_MS: "300" });

  it("is closed after GRPC_CONNECTION_IDLE_MS without a call; one with an open stream is not idle", async () => {
    const port = svc().service.port;
    // The streaming connection starts first: its idle timer would fire first if streams did not count.
    const streaming = session(port);
    const goaways: string[] = [];
    streaming.on("goaway", () => goaways.push("streaming"));
    const w = watch(streaming);
    await w.first;
    const idle = session(port);
    await new Promise<void>((resolve) => idle.once("close", resolve));

    expect(goaways).toEqual([]);
    expect(streaming.closed).toBe(false);
    // The stream and its connection still work: a unary call on the same connection is answered.
    expect(await unaryCheck(streaming)).toBe("0");
    w.stream.close();
  });
});

describe("a connection past its age", () => {
  const GRACE_MS = 1000;
  const svc = service({ GRPC_CONNECTION_MAX_AGE_MS: "300", GRPC_CONNECTION_AGE_GRACE_MS: String(GRACE_MS) });

  it("is told to go away, its open stream lasting through the grace, then cut; a new connection is served", async () => {
    const port = svc().service.port;
    const s = session(port);
    const w = watch(s);
    await w.first;
    const goaway = new Promise<number>((resolve) => s.once("goaway", () => resolve(performance.now())));
    await w.closed;
    const closedAt = performance.now();
    // The grace is a floor the server keeps (a slow machine only makes it longer): GOAWAY, then the
    // stream stays open for the grace, less what the two frames' trips may differ by.
    expect(closedAt - (await goaway)).toBeGreaterThan(GRACE_MS - 250);
    expect((await healthClient(port).check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });
});

describe("TCP keepalive", () => {
  const svc = service({ GRPC_TCP_KEEPALIVE_MS: "7000" });

  it("is on for every accepted connection, probing after GRPC_TCP_KEEPALIVE_MS of silence", async () => {
    const port = svc().service.port;
    expect((await healthClient(port).check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    // The kernel's view of the server's side of that connection: `ss` shows its keepalive timer.
    const sockets = execFileSync("ss", ["-tnoH", "state", "established", `( sport = :${port} )`], { encoding: "utf8" });
    expect(sockets).toMatch(/timer:\(keepalive,[0-9.]+(sec|ms)?,0\)/);
  });
});
