/**
 * `node dist-bench/bench/worker-heap.js [--heap-mib N] [--young-mib N] [--seconds S] [--users U]`:
 * what V8 reserves for one worker thread's heap under a steady load, with and
 * without a bound on its old generation (Worker `resourceLimits`, as the
 * engine options maxShardHeapBytes and recs.maxHeapBytes set it). The worker
 * keeps a fixed population of per-user states (a Map of U users, each a list
 * of up to 50 recent items and counts over 50 categories, as an actor's
 * history) and applies events to them as fast as it can: every event makes
 * short-lived garbage, and one in eight replaces a user's list (the old one,
 * already promoted, becomes old-generation garbage). Every user exists from
 * the start, so the live data is about flat; whatever the heap's total grows
 * beyond it is V8's reservation. Prints, every 10 s, the heap's used and total (reserved),
 * the least used seen in that interval (about the live data), the full
 * collections and the process's CPU per event (GC helper threads included).
 * Run it with and without --heap-mib at the same time to compare them.
 */
import { parseArgs } from "node:util";
import { loadavg } from "node:os";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

interface Tick { t: number; used: number; total: number; minUsed: number; events: number; majors: number }

if (isMainThread) {
  const { values: a } = parseArgs({ options: { "heap-mib": { type: "string", default: "0" }, "young-mib": { type: "string", default: "0" }, seconds: { type: "string", default: "180" }, users: { type: "string", default: "60000" } } });
  const heapMib = Number(a["heap-mib"]);
  const youngMib = Number(a["young-mib"]);
  const w = new Worker(new URL(import.meta.url), {
    workerData: { seconds: Number(a.seconds), users: Number(a.users) },
    resourceLimits: { ...(heapMib > 0 ? { maxOldGenerationSizeMb: heapMib } : {}), ...(youngMib > 0 ? { maxYoungGenerationSizeMb: youngMib } : {}) },
  });
  const cpu0 = process.cpuUsage();
  let last = { events: 0, cpu: 0 };
  const MiB = 2 ** 20;
  console.log(`worker heap bound: ${heapMib > 0 ? `${heapMib} MiB` : "V8's default"}, young generation ${youngMib > 0 ? `${youngMib} MiB` : "V8's default"}; load ${loadavg().map((x) => x.toFixed(1)).join(" ")}`);
  w.on("message", (m: Tick) => {
    const c = process.cpuUsage(cpu0);
    const cpu = (c.user + c.system) / 1000;
    const perEvent = (cpu - last.cpu) / Math.max(1, m.events - last.events) * 1000;
    last = { events: m.events, cpu };
    console.log(`t=${m.t.toFixed(0)}s used ${(m.used / MiB).toFixed(0)} total ${(m.total / MiB).toFixed(0)} least used ${(m.minUsed / MiB).toFixed(0)} MiB; events ${m.events}, full GCs ${m.majors}, CPU ${perEvent.toFixed(2)} µs/event`);
  });
  w.on("error", (e) => console.log(`worker failed: ${e.message}`));
  w.on("exit", () => console.log(`done; load ${loadavg().map((x) => x.toFixed(1)).join(" ")}`));
} else {
  const { PerformanceObserver, constants } = await import("node:perf_hooks");
  const { getHeapStatistics } = await import("node:v8");
  const { seconds, users } = workerData as { seconds: number; users: number };
  let majors = 0;
  new PerformanceObserver((l) => {
    for (const e of l.getEntries()) if (((e as unknown as { detail?: { kind?: number } }).detail)?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
  }).observe({ entryTypes: ["gc"] });
  interface State { recent: string[]; counts: Record<string, number>; n: number }
  const states = new Map<string, State>();
  let seed = 7;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  // Every user exists from the start, with a full list: the live data is flat from the first tick.
  for (let u = 0; u < users; u++) {
    const counts: Record<string, number> = {};
    for (let c = 0; c < 20; c++) counts[`c${c}`] = 1;
    states.set(`user-${u}`, { recent: Array.from({ length: 45 }, (_, i) => `item-${u * 45 + i}`), counts, n: 45 });
  }
  const t0 = performance.now();
  let events = 0;
  let minUsed = Infinity;
  let nextTick = 10_000;
  for (;;) {
    for (let i = 0; i < 2000; i++) {
      const u = `user-${Math.floor(rand() ** 2 * users)}`;
      const ev = { user: u, item: `item-${Math.floor(rand() * 1e6)}`, category: `c${Math.floor(rand() * 50)}`, t: Date.now() };
      let s = states.get(u);
      if (s === undefined) states.set(u, (s = { recent: [], counts: {}, n: 0 }));
      s.n++;
      if (s.recent.length >= 50 || (s.n & 7) === 0) s.recent = s.recent.slice(-40);
      s.recent.push(ev.item);
      s.counts[ev.category] = (s.counts[ev.category] ?? 0) + 1;
      events++;
    }
    await new Promise<void>((r) => setImmediate(r));
    const h = getHeapStatistics();
    minUsed = Math.min(minUsed, h.used_heap_size);
    const t = performance.now() - t0;
    if (t >= nextTick) {
      parentPort!.postMessage({ t: t / 1000, used: h.used_heap_size, total: h.total_heap_size, minUsed, events, majors } satisfies Tick);
      minUsed = Infinity;
      nextTick += 10_000;
      if (t >= seconds * 1000) break;
    }
  }
}
