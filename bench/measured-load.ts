import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { LoadJob, LoadResult } from "./load.js";
import { PostgresCpuMeter, processCpuMs } from "./proc.js";

const execFileAsync = promisify(execFile);

/** One run of the load generator (bench/load.ts, its own process), with the CPU the server, Redis and Postgres used meanwhile. */
export interface Run {
  readonly result: LoadResult;
  readonly serverCpuMs: number;
  readonly postgresCpuMs: number;
  readonly redisCpuMs: number;
}

/** Processes whose CPU a run is charged: the server and, when there is one, the bench's own Redis. */
export interface Pids {
  readonly server: number;
  readonly redis?: number;
}

/** Runs `job`, charging it the CPU of `pids` and of Postgres' backends on `databases` (PostgresCpuMeter). */
export async function measuredLoad(job: LoadJob, pids: Pids, databases: readonly string[]): Promise<Run> {
  const server0 = processCpuMs(pids.server);
  const redis0 = pids.redis === undefined ? 0 : processCpuMs(pids.redis);
  const meter = new PostgresCpuMeter(databases);
  let stdout: string;
  let postgresCpuMs: number;
  try {
    ({ stdout } = await execFileAsync(process.execPath, ["--import", "tsx", "bench/load.ts", JSON.stringify(job)], { maxBuffer: 1 << 28 }));
  } finally {
    postgresCpuMs = meter.stop();
  }
  const result = JSON.parse(stdout) as LoadResult;
  const redisCpuMs = pids.redis === undefined ? 0 : processCpuMs(pids.redis) - redis0;
  return { result, serverCpuMs: processCpuMs(pids.server) - server0, postgresCpuMs, redisCpuMs };
}
