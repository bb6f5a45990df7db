/**
 * A throwaway stack for the reliability suite: its own Postgres (initdb in a temporary directory,
 * run as the `postgres` user), its own Redis, and server processes (`node --import tsx src/main.ts`)
 * against them, with kill -9 / stop / restart helpers. Everything is torn down by `stop()`, and
 * by a process exit hook in case a test run dies half-way.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { Health, HealthCheckResponse_ServingStatus } from "../../../src/gen/grpc/health/v1/health_pb.js";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

const cleanups = new Set<() => void>();
process.on("exit", () => {
  for (const c of cleanups) {
    try {
      c();
    } catch {
      /* best effort */
    }
  }
});

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function pgBin(name: string): string {
  const versions = readdirSync("/usr/lib/postgresql").sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const p = `/usr/lib/postgresql/${v}/bin/${name}`;
    if (existsSync(p)) return p;
  }
  throw new Error(`${name} not found under /usr/lib/postgresql/*/bin`);
}

function postgresUid(): { uid: number; gid: number } {
  const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
  const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
  return { uid, gid };
}

/** Runs a command as the postgres user when we are root (initdb and postgres refuse root). */
function asPostgres(cmd: string, args: string[]): string {
  if (process.getuid?.() === 0) return execFileSync("runuser", ["-u", "postgres", "--", cmd, ...args], { stdio: ["ignore", "pipe", "pipe"] }).toString();
  return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
}

/** A private Postgres cluster on a free loopback port. */
export class OwnPostgres {
  readonly dir: string;
  readonly dataDir: string;
  readonly socketDir: string;
  port = 0;
  running = false;

  constructor() {
    this.dir = mkdtempSync(path.join(tmpdir(), "credit-rel-pg-"));
    this.dataDir = path.join(this.dir, "data");
    this.socketDir = path.join(this.dir, "sock");
  }

  async init(): Promise<void> {
    execFileSync("mkdir", ["-p", this.dataDir, this.socketDir]);
    chmodSync(this.socketDir, 0o1777);
    if (process.getuid?.() === 0) {
      const { uid, gid } = postgresUid();
      for (const d of [this.dir, this.dataDir, this.socketDir]) chownSync(d, uid, gid);
    }
    asPostgres(pgBin("initdb"), ["-D", this.dataDir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
    this.port = await freePort();
    cleanups.add(this.emergencyStop);
    await this.start();
  }

  private readonly emergencyStop = () => {
    try {
      asPostgres(pgBin("pg_ctl"), ["stop", "-D", this.dataDir, "-m", "immediate", "-w"]);
    } catch {
      /* not running */
    }
    rmSync(this.dir, { recursive: true, force: true });
  };

  async start(): Promise<void> {
    const opts = `-p ${this.port} -k ${this.socketDir} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on`;
    asPostgres(pgBin("pg_ctl"), ["start", "-D", this.dataDir, "-w", "-t", "60", "-l", path.join(this.dir, "postgres.log"), "-o", opts]);
    this.running = true;
  }

  /** `pg_ctl stop -m fast`: disconnects every session, aborts open transactions, shuts down cleanly. */
  async stop(mode: "fast" | "immediate" = "fast"): Promise<void> {
    asPostgres(pgBin("pg_ctl"), ["stop", "-D", this.dataDir, "-m", mode, "-w", "-t", "60"]);
    this.running = false;
  }

  url(database: string): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  async destroy(): Promise<void> {
    cleanups.delete(this.emergencyStop);
    this.emergencyStop();
  }
}

/**
 * Starts a server process and resolves once it accepts connections on `port` (within 10 s); its
 * output is drained so a full pipe never blocks it; one that does not come up is killed.
 */
async function spawnListening(command: string, args: readonly string[], port: number): Promise<ChildProcess> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.resume();
  child.stderr?.resume();
  const deadline = performance.now() + 10_000;
  for (;;) {
    if (await canConnect(port)) return child;
    if (child.exitCode !== null) throw new Error(`${command} exited with ${child.exitCode}`);
    if (performance.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${command} did not start`);
    }
    await sleep(20);
  }
}

/** A private Redis on a free loopback port, a child process that can be killed with SIGKILL. */
export class OwnRedis {
  port = 0;
  private child: ChildProcess | null = null;

  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    cleanups.add(this.emergencyStop);
    this.child = await spawnListening("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"], this.port);
  }

  private readonly emergencyStop = () => {
    this.child?.kill("SIGKILL");
  };

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** kill -9 */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    this.child = null;
  }

  /** SIGSTOP: connections stay open and nothing answers (a hung Redis). */
  pause(): void {
    this.child?.kill("SIGSTOP");
  }

  /** SIGCONT: it answers again, first whatever was sent to it meanwhile. */
  resume(): void {
    this.child?.kill("SIGCONT");
  }

  flushAll(): void {
    execFileSync("redis-cli", ["-p", String(this.port), "flushall"]);
  }

  dbSize(): number {
    return Number(execFileSync("redis-cli", ["-p", String(this.port), "dbsize"]).toString().trim());
  }

  async destroy(): Promise<void> {
    await this.kill();
    cleanups.delete(this.emergencyStop);
  }
}

/**
 * A private NATS server with JetStream (`nats-server -js`) on a free loopback port, its store in a
 * temporary directory that survives restarts: the machine's broker is never touched.
 */
export class OwnNats {
  port = 0;
  readonly storeDir = mkdtempSync(path.join(tmpdir(), "credit-rel-nats-"));
  private child: ChildProcess | null = null;

  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    cleanups.add(this.emergencyStop);
    this.child = await spawnListening("nats-server", ["-a", "127.0.0.1", "-p", String(this.port), "-js", "-sd", this.storeDir], this.port);
  }

  private readonly emergencyStop = () => {
    this.child?.kill("SIGKILL");
    rmSync(this.storeDir, { recursive: true, force: true });
  };

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /**
   * SIGTERM (a clean restart) or SIGKILL (the process crashes; what it acknowledged was already
   * written to its store files, so it survives — a power loss, which needs fsync, is not tested).
   */
  async stop(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
    this.child = null;
  }

  async destroy(): Promise<void> {
    await this.stop("SIGKILL");
    cleanups.delete(this.emergencyStop);
    rmSync(this.storeDir, { recursive: true, force: true });
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export interface ServerOptions {
  readonly databaseUrl: string;
  readonly redisUrl: string;
  readonly env?: Record<string, string>;
}

/** One `node --import tsx src/main.ts` process on a fixed port, so clients find it again after a restart. */
export class ServerProcess {
  port = 0;
  private child: ChildProcess | null = null;
  /** The last log lines (for a failure message). */
  readonly tail: string[] = [];
  readonly exits: (number | string | null)[] = [];
  /** Unexpected exits (not caused by kill()). */
  crashes = 0;
  private killing = false;

  constructor(private readonly options: ServerOptions) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The operating system's process id of the running server (undefined between lives). */
  get pid(): number | undefined {
    return this.alive ? this.child?.pid : undefined;
  }

  get alive(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Spawns the server and resolves once it logged "credit service listening" (ms it took). */
  async start(): Promise<number> {
    if (this.port === 0) this.port = await freePort();
    const started = performance.now();
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
      cwd: REPO_ROOT,
      env: {
        PATH: process.env["PATH"] ?? "",
        HOME: process.env["HOME"] ?? "/tmp",
        DATABASE_URL: this.options.databaseUrl,
        REDIS_URL: this.options.redisUrl,
        GRPC_HOST: "127.0.0.1",
        GRPC_PORT: String(this.port),
        METRICS_HOST: "127.0.0.1",
        METRICS_PORT: "0",
        HEALTH_PROBE_INTERVAL_MS: "200",
        SHUTDOWN_GRACE_MS: "2000",
        LOG_LEVEL: "info",
        ...this.options.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    this.killing = false;
    const stop = () => child.kill("SIGKILL");
    cleanups.add(stop);
    child.on("exit", (code, signal) => {
      cleanups.delete(stop);
      this.exits.push(code ?? signal);
      if (!this.killing) this.crashes += 1;
    });
    const keep = (line: string) => {
      this.tail.push(line);
      if (this.tail.length > 200) this.tail.shift();
    };
    createInterface({ input: child.stderr! }).on("line", keep);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start in 60 s:\n${this.tail.slice(-20).join("\n")}`)), 60_000);
      createInterface({ input: child.stdout! }).on("line", (line) => {
        keep(line);
        if (line.includes('"credit service listening"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`server exited with ${code ?? signal} before listening:\n${this.tail.slice(-20).join("\n")}`));
      });
    });
    return performance.now() - started;
  }

  /** kill -9: no graceful shutdown, in-flight calls die with the process. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    this.killing = true;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    this.killing = true;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }
}

export type HealthStatus = "SERVING" | "NOT_SERVING" | "DOWN";

/** grpc.health.v1 client (generated with protobuf-es, over connect-node); `service` "" is the server itself. */
export function healthClient(url: string) {
  const client = createClient(Health, createGrpcTransport({ baseUrl: url }));
  return {
    async status(timeoutMs = 1000, service = ""): Promise<HealthStatus> {
      try {
        const r = await client.check({ service }, { timeoutMs });
        return r.status === HealthCheckResponse_ServingStatus.SERVING ? "SERVING" : "NOT_SERVING";
      } catch {
        return "DOWN";
      }
    },
  };
}

/** Polls health until SERVING; resolves with the ms it took. */
export async function untilServing(url: string, timeoutMs = 60_000): Promise<number> {
  const h = healthClient(url);
  const t0 = performance.now();
  for (;;) {
    if ((await h.status(500)) === "SERVING") return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`not SERVING after ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** Postgres + Redis + servers, started together and torn down together. */
export class Stack {
  readonly pg = new OwnPostgres();
  readonly redis = new OwnRedis();
  readonly servers: ServerProcess[] = [];
  db!: pg.Pool;
  readonly database = "credit_rel";

  async start(serverCount: number, env: Record<string, string> = {}): Promise<this> {
    await this.pg.init();
    await this.redis.start();
    for (let i = 0; i < serverCount; i++) {
      this.servers.push(new ServerProcess({ databaseUrl: this.databaseUrl, redisUrl: this.redis.url, env }));
    }
    // The first server creates and migrates the database; the others then start alongside.
    if (this.servers[0]) await this.servers[0].start();
    await Promise.all(this.servers.slice(1).map((s) => s.start()));
    this.db = new pg.Pool({ connectionString: this.databaseUrl, max: 4 });
    this.db.on("error", () => {});
    return this;
  }

  get databaseUrl(): string {
    return this.pg.url(this.database);
  }

  async stop(): Promise<void> {
    for (const s of this.servers) await s.stop().catch(() => {});
    await this.db?.end().catch(() => {});
    await this.redis.destroy();
    await this.pg.destroy();
  }
}
