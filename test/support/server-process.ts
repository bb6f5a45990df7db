import { type ChildProcess, spawn } from "node:child_process";
import { TEST_DATABASE_URL, TEST_REDIS_URL } from "./env.js";

/** Variables a test's shell may have set that would change what the child decides on its own. */
const INHERITED_OUT = ["ENVIRONMENT", "NODE_ENV", "AUTH_TOKENS", "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "GRPC_VERBOSITY", "GRPC_NODE_VERBOSITY", "GRPC_TRACE", "GRPC_NODE_TRACE", "LOG_LEVEL"];

export interface ServerProcess {
  readonly child: ChildProcess;
  /** Everything the process wrote so far, stdout and stderr interleaved as they arrived. */
  output(): string;
  /** Resolves with the port once the ready line is logged; rejects if the process exits first. */
  readonly listening: Promise<number>;
  /** The exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<number | null>;
}

/**
 * `src/main.ts` as its own process, against the test Postgres and Redis, on free ports, with
 * `env` on top; its stdout and stderr are captured whole.
 */
export function spawnServer(env: Record<string, string>): ServerProcess {
  const base: Record<string, string | undefined> = { ...process.env };
  for (const name of INHERITED_OUT) delete base[name];
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    env: {
      ...base,
      DATABASE_URL: TEST_DATABASE_URL,
      REDIS_URL: TEST_REDIS_URL,
      GRPC_HOST: "127.0.0.1",
      GRPC_PORT: "0",
      METRICS_HOST: "127.0.0.1",
      METRICS_PORT: "0",
      DB_MIGRATE: "false",
      SWEEPER_ENABLED: "false",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  let buffered = "";
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const listening = new Promise<number>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      text += chunk.toString("utf8");
      buffered += chunk.toString("utf8");
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        const port = readyPort(line);
        if (port !== null) resolve(port);
      }
    });
    child.stderr!.on("data", (chunk: Buffer) => {
      text += chunk.toString("utf8");
    });
    void exited.then((code) => reject(new Error(`server exited with ${code} before listening:\n${text}`)));
  });
  // A test that expects the process to refuse to start handles the rejection itself.
  listening.catch(() => {});
  return {
    child,
    output: () => text,
    listening,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}

function readyPort(line: string): number | null {
  try {
    const entry = JSON.parse(line) as { msg?: unknown; port?: unknown };
    return entry.msg === "credit service listening" && typeof entry.port === "number" ? entry.port : null;
  } catch {
    return null; // not a JSON log line
  }
}
