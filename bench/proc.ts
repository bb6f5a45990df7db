import { readdirSync, readFileSync } from "node:fs";

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** CPU milliseconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function processCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
  } catch {
    return 0;
  }
}

interface ProcStat {
  readonly pid: number;
  readonly comm: string;
  readonly ppid: number;
  /** utime + stime, and cutime + cstime (waited-for children), in ms. */
  readonly ownMs: number;
  readonly childrenMs: number;
}

function readStat(pid: number): ProcStat | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { pid, comm, ppid: Number(f[1]), ownMs: (Number(f[11]) + Number(f[12])) * TICK_MS, childrenMs: (Number(f[13]) + Number(f[14])) * TICK_MS };
  } catch {
    return null; // the process ended meanwhile
  }
}

/**
 * Cumulative CPU milliseconds of a whole process tree by command name (the Postgres cluster):
 * the live processes' own time plus, for the tree's root, the time of the children it has
 * already reaped. Backends that exit during a run stay counted, so differences never go negative.
 * A child reaped while the tree is being read would be missed (or counted twice), so the read is
 * repeated until the root's reaped-children time is the same before and after it.
 */
export function commandCpuMs(name: string): number {
  for (let attempt = 0; ; attempt++) {
    const procs = readdirSync("/proc")
      .filter((e) => /^\d+$/.test(e))
      .map((e) => readStat(Number(e)))
      .filter((p): p is ProcStat => p !== null && p.comm === name);
    const pids = new Set(procs.map((p) => p.pid));
    const roots = procs.filter((p) => !pids.has(p.ppid));
    const settled = roots.every((r) => readStat(r.pid)?.childrenMs === r.childrenMs);
    if (settled || attempt >= 10) return procs.reduce((sum, p) => sum + p.ownMs + (pids.has(p.ppid) ? 0 : p.childrenMs), 0);
  }
}

/** Peak resident set size of a process in MB (VmHWM). */
export function peakRssMb(pid: number): number {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
