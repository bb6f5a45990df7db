import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";
import { Redis, type RedisOptions } from "ioredis";

/** A `redis-server` child process of the test's own, on a free loopback port. */
export interface RedisServerProcess {
  readonly port: number;
  /** `redis://127.0.0.1:<port>` (plain TCP; a TLS-only server has no plain port). */
  readonly url: string;
  /** SIGSTOP: the process stays, its connections stay open, and nothing answers (a hung Redis). */
  pause(): void;
  /** SIGCONT: it answers again, starting with everything sent to it meanwhile. */
  resume(): void;
  /** Resumes it if paused, kills it and waits for the exit. */
  stop(): Promise<void>;
}

/** A loopback port nobody listens on right now (the bench uses it too). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Every child still alive is killed (after SIGCONT, as a stopped process ignores SIGTERM) if the test process exits first. */
const alive = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of alive) child.kill("SIGKILL");
});

export interface RedisServerOptions {
  /** Added to the command line, e.g. `--requirepass`, TLS certificates. */
  readonly args?: readonly string[];
  /** Listen with TLS only (`--tls-port`, no plain port); `args` must name the certificate files. */
  readonly tls?: boolean;
  /** Resolves once the server is up (given its port); by default a PING over plain TCP. */
  readonly ready?: (port: number) => Promise<unknown>;
}

/** Starts `redis-server` with nothing on disk and resolves once it is ready. */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServerProcess> {
  const port = await freePort();
  const ready = options.ready ?? ((p: number) => pingOnce({ port: p }));
  const portArgs = options.tls ? ["--port", "0", "--tls-port", String(port)] : ["--port", String(port)];
  const child = spawn("redis-server", [...portArgs, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", ...(options.args ?? [])], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  alive.add(child);
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const running = () => child.exitCode === null && child.signalCode === null;
  for (let attempt = 0; ; attempt++) {
    if (!running()) throw new Error(`redis-server exited:\n${output}`);
    if (await ready(port).then(() => true, () => false)) break;
    if (attempt > 200) throw new Error(`redis-server on ${port} did not answer:\n${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pause: () => void child.kill("SIGSTOP"),
    resume: () => void child.kill("SIGCONT"),
    async stop() {
      if (running()) {
        child.kill("SIGCONT");
        child.kill("SIGKILL");
      }
      await exited;
      alive.delete(child);
    },
  };
}

/** One PING on a connection of its own, closed afterwards; rejects if Redis does not answer. */
export async function pingOnce(options: RedisOptions): Promise<string> {
  const client = new Redis({ host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, ...options });
  client.on("error", () => undefined);
  try {
    await client.connect();
    return await client.ping();
  } finally {
    client.disconnect();
  }
}

/**
 * How many times Redis has executed each command since it started (INFO commandstats), e.g.
 * `{ set: 12, get: 3 }` — what the server saw, whoever sent it.
 */
export async function commandCalls(url: string): Promise<Record<string, number>> {
  const client = new Redis(url, { maxRetriesPerRequest: 0 });
  try {
    const info = await client.info("commandstats");
    const calls: Record<string, number> = {};
    for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[match[1]!] = Number(match[2]);
    return calls;
  } finally {
    client.disconnect();
  }
}
