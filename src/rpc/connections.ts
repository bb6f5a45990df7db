import net from "node:net";
import tls from "node:tls";

/** The client's connection preface (RFC 9113 §3.4) is 24 octets, sent before anything else. */
const PREFACE_BYTES = 24;
/** Unanswered TCP keepalive probes before the kernel drops a connection. */
const KEEPALIVE_PROBES = 3;

export interface ListenerOptions {
  readonly host: string;
  readonly port: number;
  /** null: plaintext HTTP/2. */
  readonly tls: tls.TlsOptions | null;
  readonly maxConnections: number;
  /** For the TLS handshake, for the HTTP/2 preface, and for a peer to close a connection the server closed. */
  readonly handshakeTimeoutMs: number;
  /** TCP keepalive: probes after `idleMs` of silence, the connection dropped after `timeoutMs` of unanswered probes; null: off. */
  readonly tcpKeepalive: { readonly idleMs: number; readonly timeoutMs: number } | null;
  /** Takes an accepted connection (decrypted, with TLS) and serves gRPC on it. */
  readonly serve: (socket: net.Socket) => void;
  /** A connection over the cap was closed as soon as it was accepted. */
  readonly onRefused: () => void;
}

export interface Listener {
  readonly port: number;
  /** Connections open now, from accept to close, whatever their state. */
  readonly connections: number;
  /** Stops accepting; open connections stay. Resolves once every connection has closed. */
  close(): Promise<void>;
  /** Cuts every connection still open. */
  destroyAll(): void;
}

/**
 * The listening socket, owned here rather than by grpc-js, which has no connection cap and no
 * handshake timeout: Node's own `maxConnections` refuses connections over the cap, TLS's own
 * `handshakeTimeout` bounds the handshake, the kernel's TCP keepalive finds dead peers, and each
 * accepted connection gets two deadlines of `handshakeTimeoutMs` before gRPC sees it (guard).
 */
export async function listen(options: ListenerOptions): Promise<Listener> {
  const open = new Set<net.Socket>();
  const accept = (socket: net.Socket) => {
    guard(socket, options.handshakeTimeoutMs);
    options.serve(socket);
  };
  const server = options.tls ? tls.createServer({ ...options.tls, handshakeTimeout: options.handshakeTimeoutMs }, accept) : net.createServer(accept);
  // The raw TCP socket, before TLS: what the cap counts, and what a forced stop cuts.
  server.on("connection", (socket: net.Socket) => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
    // Its errors (a reset peer) end in 'close'; whoever reads it (TLS, HTTP/2) reports them.
    socket.on("error", () => {});
    // A peer that vanished (host gone, cable cut) is found by the kernel and its socket closed.
    const keepalive = options.tcpKeepalive;
    if (keepalive) socket.setKeepAlive(true, keepalive.idleMs, Math.max(1000, keepalive.timeoutMs / KEEPALIVE_PROBES), KEEPALIVE_PROBES);
  });
  // A failed handshake (a timeout, a refused client certificate, a plaintext client) only reports
  // itself: the socket is ours to close (Node's HTTP/2 server did this when grpc-js owned TLS).
  server.on("tlsClientError", (_err: Error, socket: tls.TLSSocket) => socket.destroy());
  server.maxConnections = options.maxConnections;
  server.on("drop", () => options.onRefused());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    get connections() {
      return open.size;
    },
    close() {
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
    destroyAll() {
      for (const socket of open) socket.destroy();
    },
  };
}

/**
 * Two deadlines grpc-js does not keep. A connection that has not sent the 24 bytes of the HTTP/2
 * preface within `timeoutMs` is cut: a socket that sends nothing would otherwise hold a file
 * descriptor for ever (what it sends instead of a preface makes HTTP/2 close it at once, so
 * having read 24 bytes and still being open means the preface came). And once the server has
 * closed its side (after GOAWAY: idle, age, shutdown), the peer gets `timeoutMs` to close its own
 * before the socket is cut: grpc-js closes gracefully and would wait for a peer that never does.
 */
function guard(socket: net.Socket, timeoutMs: number): void {
  const preface = setTimeout(() => {
    if (socket.bytesRead < PREFACE_BYTES) socket.destroy();
  }, timeoutMs).unref();
  let linger: NodeJS.Timeout | undefined;
  socket.once("finish", () => {
    linger = setTimeout(() => socket.destroy(), timeoutMs).unref();
  });
  socket.once("close", () => {
    clearTimeout(preface);
    clearTimeout(linger);
  });
}
