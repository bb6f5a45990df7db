import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const HOST = "127.0.0.1";
/** Redis Cluster nodes also listen on port + 10000 (the cluster bus). */
const BUS_OFFSET = 10_000;

/** A real Redis Cluster of `redis-server` processes on loopback ports, in a temporary directory. */
export interface RedisClusterProcess {
  /** The client ports of the nodes, all masters (no replicas). */
  readonly ports: readonly number[];
  /** `127.0.0.1:p1,127.0.0.1:p2,…`, the form REDIS_CLUSTER_NODES takes. */
  readonly nodesEnv: string;
  /** Seed nodes for an ioredis Cluster client. */
  readonly startupNodes: readonly { host: string; port: number }[];
  /** Kills one node at once (SIGKILL), as a crash would; the others keep running. */
  kill(port: number): Promise<void>;
  /** SIGSTOP / SIGCONT one node: it stays connected and answers nothing (hung), then carries on. */
  pause(port: number): void;
  resume(port: number): void;
  /** Stops every node still running and removes the temporary directory. */
  stop(): Promise<void>;
}

interface Node {
  readonly port: number;
  readonly child: ChildProcess;
  readonly output: () => string;
  readonly exited: Promise<void>;
}

function listen(port: number): Promise<Server | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(null));
    server.listen(port, HOST, () => resolve(server));
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * `count` ports that are free now, each with its cluster bus port (port + 10000) free too: the
 * kernel picks a port (bind to 0), and we keep it only if its bus port can be bound as well.
 */
async function freePorts(count: number): Promise<number[]> {
  const held: Server[] = [];
  const ports: number[] = [];
  try {
    for (let attempt = 0; ports.length < count && attempt < 200; attempt++) {
      const server = await listen(0);
      if (!server) continue;
      held.push(server);
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      if (port === 0 || port + BUS_OFFSET > 65535) continue;
      const bus = await listen(port + BUS_OFFSET);
      if (!bus) continue;
      held.push(bus);
      ports.push(port);
    }
  } finally {
    await Promise.all(held.map(close));
  }
  if (ports.length < count) throw new Error(`found only ${ports.length} of ${count} free port pairs`);
  return ports;
}

/**
 * How the nodes are started beyond the defaults: `serverArgs` are added to every node's command
 * line (e.g. `--requirepass`); with `tls` the client port is TLS only (`--port 0 --tls-port`)
 * and `serverArgs` must name the certificates; `cliArgs` let redis-cli in (`-a`, `--tls --cacert`).
 */
export interface RedisClusterOptions {
  readonly serverArgs?: readonly string[];
  readonly tls?: boolean;
  readonly cliArgs?: readonly string[];
}

async function redisCli(options: RedisClusterOptions, port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run("redis-cli", ["-h", HOST, "-p", String(port), ...(options.cliArgs ?? []), ...args], { timeout: 5000 });
  return stdout;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function startNode(dir: string, port: number, options: RedisClusterOptions): Node {
  const child = spawn(
    "redis-server",
    [
      ...(options.tls ? ["--port", "0", "--tls-port", String(port), "--tls-cluster", "yes"] : ["--port", String(port)]),
      "--bind", HOST,
      "--cluster-enabled", "yes",
      "--cluster-config-file", join(dir, `nodes-${port}.conf`),
      "--save", "",
      "--appendonly", "no",
      "--dir", dir,
      ...(options.serverArgs ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  const keep = (chunk: Buffer) => {
    log = (log + chunk.toString()).slice(-4000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("exit", () => resolve());
  });
  child.once("error", (err) => keep(Buffer.from(`spawn failed: ${err.message}\n`)));
  return { port, child, output: () => log, exited };
}

function running(node: Node): boolean {
  return node.child.exitCode === null && node.child.signalCode === null;
}

/** Resolves once the node answers PING; throws (with its log) if it exits or stays silent. */
async function untilAnswering(node: Node, timeoutMs: number, options: RedisClusterOptions): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!running(node)) throw new Error(`redis-server on port ${node.port} exited:\n${node.output()}`);
    const pong = await redisCli(options, node.port, "ping").catch(() => "");
    if (pong.trim() === "PONG") return;
    if (Date.now() > deadline) throw new Error(`redis-server on port ${node.port} did not answer:\n${node.output()}`);
    await sleep(50);
  }
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function killNode(node: Node, signal: NodeJS.Signals): Promise<void> {
  if (running(node)) {
    node.child.kill("SIGCONT"); // a paused node would not act on SIGTERM
    node.child.kill(signal);
  }
  await node.exited;
}

/** Every node process still alive is killed if the test process exits without stop(). */
const alive = new Set<ChildProcess>();
let exitHookInstalled = false;
function killLeftoversOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of alive) child.kill("SIGKILL");
  });
}

async function startNodes(dir: string, size: number, options: RedisClusterOptions): Promise<Node[]> {
  // A port found free can be taken before redis-server binds it; then try with new ports.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const nodes = (await freePorts(size)).map((port) => startNode(dir, port, options));
    for (const node of nodes) alive.add(node.child);
    try {
      await Promise.all(nodes.map((node) => untilAnswering(node, 10_000, options)));
      return nodes;
    } catch (err) {
      lastError = err;
      await Promise.all(nodes.map((node) => killNode(node, "SIGKILL").then(() => alive.delete(node.child))));
    }
  }
  throw lastError;
}

/**
 * Starts `size` (default 3) masters on free loopback ports, joins them with
 * `redis-cli --cluster create … --cluster-replicas 0`, and resolves once CLUSTER INFO reports
 * cluster_state:ok on every node.
 */
export async function startRedisCluster(size = 3, options: RedisClusterOptions = {}): Promise<RedisClusterProcess> {
  killLeftoversOnExit();
  const dir = await mkdtemp(join(tmpdir(), "credit-redis-cluster-"));
  let nodes: Node[] = [];
  const stopAll = async () => {
    await Promise.all(
      nodes.map(async (node) => {
        if (running(node)) {
          node.child.kill("SIGCONT");
          node.child.kill("SIGTERM");
          const timer = setTimeout(() => node.child.kill("SIGKILL"), 2000);
          await node.exited;
          clearTimeout(timer);
        }
        alive.delete(node.child);
      }),
    );
    await rm(dir, { recursive: true, force: true });
  };
  try {
    nodes = await startNodes(dir, size, options);
    const addresses = nodes.map((n) => `${HOST}:${n.port}`);
    await run("redis-cli", [...(options.cliArgs ?? []), "--cluster", "create", ...addresses, "--cluster-replicas", "0", "--cluster-yes"], { timeout: 30_000 });
    for (const node of nodes) {
      await until(`cluster_state:ok on port ${node.port}`, async () => /cluster_state:ok/.test(await redisCli(options, node.port, "cluster", "info")), 20_000);
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  const ports = nodes.map((n) => n.port);
  const nodeOn = (port: number): Node => {
    const node = nodes.find((n) => n.port === port);
    if (!node) throw new Error(`no cluster node on port ${port}`);
    return node;
  };
  return {
    ports,
    nodesEnv: ports.map((p) => `${HOST}:${p}`).join(","),
    startupNodes: ports.map((port) => ({ host: HOST, port })),
    async kill(port) {
      const node = nodeOn(port);
      await killNode(node, "SIGKILL");
      alive.delete(node.child);
    },
    pause: (port) => void nodeOn(port).child.kill("SIGSTOP"),
    resume: (port) => void nodeOn(port).child.kill("SIGCONT"),
    stop: stopAll,
  };
}
