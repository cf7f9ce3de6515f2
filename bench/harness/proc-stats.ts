/** CPU and memory of processes and threads, read from /proc (Linux). */
import { readFileSync, readdirSync } from "node:fs";

const CLK_TCK = 100;

/** utime + stime of a process (or one of its threads), in clock ticks; 0 when it is gone. */
export function procTicks(pid: number, tid?: number): number {
  try {
    const st = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, "utf8");
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]); // utime + stime (fields 14 and 15)
  } catch {
    return 0;
  }
}

/** RSS of a process in MiB and its split: anonymous (heaps, native buffers) and file-backed (mapped LMDB pages, code); zeros when it is gone. */
export function memMiB(pid: number): { rss: number; anon: number; file: number } {
  let st = "";
  try {
    st = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    // gone
  }
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(st)?.[1] ?? 0) / 1024;
  return { rss: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile") + kb("RssShmem") };
}

/** Resident set size of a process in bytes; 0 when it is gone. */
export function rssBytes(pid: number): number {
  return memMiB(pid).rss * 2 ** 20;
}

/** Least-squares slope of y over x (NaN with fewer than two points). */
export function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = points.reduce((a, p) => a + p[1], 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den > 0 ? num / den : NaN;
}

function threadTicks(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) out.set(Number(t), procTicks(pid, Number(t)));
  } catch {
    // gone
  }
  return out;
}

/** Machine-wide busy and steal ticks (all cores). */
function machineTicks(): { busy: number; steal: number; total: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((x, y) => x + y, 0);
  return { busy: total - f[3]! - f[4]!, steal: f[7] ?? 0, total };
}

export interface CpuSample {
  t: number;
  pids: Record<string, number>;
  threads: Map<number, number>;
  machine: ReturnType<typeof machineTicks>;
}

/** A sample of named processes' CPU ticks, the threads of `threadsOf`, and the machine's. */
export function cpuSample(pids: Record<string, number>, threadsOf: number): CpuSample {
  return {
    t: performance.now(),
    pids: Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, procTicks(p)])),
    threads: threadTicks(threadsOf),
    machine: machineTicks(),
  };
}

export interface CpuDelta {
  /** Cores used by each named process. */
  procs: Record<string, number>;
  /** Threads of the sampled process using at least 0.03 cores, busiest first. */
  threads: Array<{ tid: number; main: boolean; cores: number }>;
  machine: number;
  steal: number;
  /** Seconds between the two samples. */
  seconds: number;
  /** Cores used by processes outside the named ones (other users of the machine). */
  others: number;
}

/** Cores used between two samples. */
export function cpuDelta(a: CpuSample, b: CpuSample, mainPid: number): CpuDelta {
  const s = (b.t - a.t) / 1000;
  const cores = (ticks: number) => ticks / CLK_TCK / s;
  const procs = Object.fromEntries(Object.keys(b.pids).map((k) => [k, cores(b.pids[k]! - (a.pids[k] ?? 0))]));
  const threads = [...b.threads].map(([tid, t]) => ({ tid, main: tid === mainPid, cores: cores(t - (a.threads.get(tid) ?? 0)) }))
    .filter((x) => x.cores >= 0.03).sort((x, y) => y.cores - x.cores);
  const machine = cores(b.machine.busy - a.machine.busy);
  const steal = cores(b.machine.steal - a.machine.steal);
  const ours = Object.values(procs).reduce((x, y) => x + y, 0);
  return { procs, threads, machine, steal, seconds: s, others: Math.max(0, machine - ours) };
}

/** CPU µs per event of each named process and of the sampled process's busiest threads between two samples. */
export function cpuPerEvent(a: CpuSample, b: CpuSample, mainPid: number, events: number): { procs: Record<string, number>; threads: Array<[string, number]> } {
  const us = (ticks: number) => (ticks * 1e6) / CLK_TCK / Math.max(1, events); // clock ticks are 10 ms
  const procs = Object.fromEntries(Object.keys(b.pids).map((k) => [k, us(b.pids[k]! - (a.pids[k] ?? 0))]));
  const threads = [...b.threads].map(([tid, t]) => [tid === mainPid ? "main" : `t${tid}`, us(t - (a.threads.get(tid) ?? 0))] as [string, number])
    .filter(([, x]) => x > 0).sort((x, y) => y[1] - x[1]).slice(0, 8);
  return { procs, threads };
}
