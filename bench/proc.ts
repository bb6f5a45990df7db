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

/** CPU ms of this process's reaped children (cutime + cstime): a child run alone in between is measured by the difference. */
export function childrenCpuMs(): number {
  return readStat(process.pid)?.childrenMs ?? 0;
}

/** What a Postgres process is, from its title (`postgres: 15/main: user db host(port) state`). */
type PgRole = "backend" | "auxiliary" | "other";

function pgRole(pid: number, databases: readonly string[]): PgRole {
  let title: string;
  try {
    title = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "other";
  }
  if (!title.startsWith("postgres: ")) return "auxiliary"; // the postmaster itself
  // A client backend's title names its user, database and peer; anything else is a cluster process
  // (checkpointer, background writer, walwriter, …), shared by every database.
  const words = title.replace(/^postgres: (\S+: )?/, "").trim().split(/\s+/);
  const isBackend = words.length >= 3 && (/\(\d+\)$/.test(words[2]!) || words[2] === "[local]");
  if (!isBackend) return "auxiliary";
  return databases.includes(words[1]!) ? "backend" : "other";
}

/**
 * Postgres CPU spent for some databases: their client backends' own time plus the cluster's
 * auxiliary processes (the WAL writer, checkpointer, …, which every database's commits use), and
 * no other database's backends — Postgres is shared with other work on this machine, which the
 * whole-cluster figure would count. A backend that exits during the measurement (pgbench's, when it
 * ends) is counted up to its last sample, so the sampling interval is short; the last ≤ 25 ms of
 * an exiting backend is the error, well under 1 % of a 5 s run.
 */
export class PostgresCpuMeter {
  private readonly first = new Map<number, number>();
  private readonly last = new Map<number, number>();
  private readonly roles = new Map<number, PgRole>();
  private readonly timer: NodeJS.Timeout;
  private readonly initial: ReadonlySet<number>;

  constructor(private readonly databases: readonly string[], intervalMs = 25) {
    this.sample();
    this.initial = new Set(this.last.keys());
    for (const [pid, ms] of this.last) this.first.set(pid, ms);
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      if (this.roles.get(pid) === "other") continue;
      const stat = readStat(pid);
      if (!stat) continue;
      let role = this.roles.get(pid);
      if (role === undefined) {
        role = stat.comm === "postgres" ? pgRole(pid, this.databases) : "other";
        // A backend just forked still bears the postmaster's title: "auxiliary" is decided again next time.
        if (role !== "auxiliary") this.roles.set(pid, role);
      }
      if (role === "other") this.last.delete(pid);
      else this.last.set(pid, stat.ownMs);
    }
  }

  /** Stops sampling; the CPU ms used since construction. */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    let total = 0;
    // A process that started after the first sample (a new backend) counts from zero.
    for (const [pid, ms] of this.last) total += ms - (this.initial.has(pid) ? this.first.get(pid)! : 0);
    return total;
  }
}
