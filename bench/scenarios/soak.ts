/**
 * soak: the mixed load held for minutes (30 when asked, short by default),
 * the engine's RSS sampled every few seconds; memory is flat when the slope
 * over the second half is near zero.
 */
import { MIXED_HEADER, mixedFlags, mixedRows, mixedWindow, summary } from "./mixed.js";
import { pctMs } from "../harness/open-loop.js";
import { slope } from "../harness/proc-stats.js";
import type { ResourceSample, Rig } from "../harness/rig.js";
import { sleep } from "../harness/ipc.js";
import { f0, f2, num, type Scenario } from "./scenario.js";

export const soak: Scenario = {
  name: "soak",
  summary: "the mixed load for --minutes (default 2; 30 for the real soak), engine RSS over time and its slope",
  flags: {
    ...mixedFlags,
    minutes: { default: "2", smoke: "0.1", help: "minutes of load (30 for the soak the issue asks for)" },
    "ingest-fraction": { default: "0.4", help: "ingest rate, as a fraction of the live capacity" },
    "profile-rate": { default: "500", smoke: "100", help: "profile requests per second" },
    "recommend-rate": { default: "50", smoke: "10", help: "recommendation requests per second" },
    "heap-snapshots": { default: "", help: "a directory: heap snapshots of the engine's main thread at the window's middle and end (they stall the engine for seconds)" },
  },
  async run(ctx) {
    const minutes = num(ctx, "minutes", 0.05, 240, false);
    const snapDir = ctx.flags["heap-snapshots"] ?? "";
    const during = snapDir === "" ? undefined : async (rig: Rig) => {
      const t0 = performance.now();
      for (const at of [0.5, 0.95]) {
        await sleep(Math.max(0, at * minutes * 60_000 - (performance.now() - t0)));
        ctx.log(`heap snapshot: ${await rig.heapSnapshot(snapDir)}`);
      }
    };
    const w = await mixedWindow(ctx, "bsoak", minutes * 60, ctx.smoke ? 1000 : 5000, { memory: true, ...(during ? { during } : {}) });
    const parts = memoryParts(w.samples);
    const half = w.samples.filter((s) => s.t >= (minutes * 60) / 2);
    const slopeMiBPerMin = slope(half.map((s) => [s.t / 60, s.rssMiB]));
    const rss = w.samples.map((s) => s.rssMiB);
    const meanHalf = half.reduce((a, s) => a + s.rssMiB, 0) / Math.max(1, half.length);
    // Flat: the second half's trend would add less than 5 % of its mean RSS over an hour.
    const flat = Number.isFinite(slopeMiBPerMin) && Math.abs(slopeMiBPerMin) * 60 < 0.05 * meanHalf;
    return {
      title: `soak, ${minutes} min`,
      header: MIXED_HEADER,
      rows: [
        ...mixedRows(w),
        ["engine RSS", `first ${f0(rss[0] ?? NaN)} / max ${f0(Math.max(...rss))} / last ${f0(rss.at(-1) ?? NaN)} MiB`, "-", "-", "-", "-", "-"],
        ["V8 heap limits", heapLimits(w.samples), "-", "-", "-", "-", "-"],
        ["RSS slope, second half", `${f2(slopeMiBPerMin)} MiB/min (${flat ? "flat" : "NOT flat"}: ${f2(Math.abs(slopeMiBPerMin) * 60)} MiB/h vs 5 % of ${f0(meanHalf)} MiB)`, "-", "-", "-", "-", "-"],
        ...parts.map((p) => {
          const v = w.samples.map(p.of);
          const mid = v[Math.floor(v.length / 2)] ?? NaN;
          const sl = slope(half.map((s) => [s.t / 60, p.of(s)]));
          return [`${p.name}`, `first ${f0(v[0] ?? NaN)} / mid ${f0(mid)} / last ${f0(v.at(-1) ?? NaN)} / max ${f0(Math.max(...v.filter(Number.isFinite)))} ${p.unit}; second half ${f2(sl)} ${p.unit}/min`, "-", "-", "-", "-", "-"];
        }),
      ],
      notes: [
        `Live capacity ${f0(w.capacity)} events/s; ingest at ${ctx.flags["ingest-fraction"]} of it (${w.ingestRate}/s), profile ${ctx.flags["profile-rate"]}/s, recommend ${ctx.flags["recommend-rate"]}/s, 4 freshness probes, for ${minutes} min; RSS sampled every ${ctx.smoke ? 1 : 5} s.`,
        `Freshness p99 over the soak: ${f2(pctMs(w.probes.freshness, 99))} ms. State before: ${w.loaded.events} events (all prepared events cover ${w.loaded.users} users).`,
        `RSS (MiB) per sample: ${w.samples.map((s) => f0(s.rssMiB)).join(" ")}`,
        "Memory rows: RssAnon and RssFile (+RssShmem) from /proc/<pid>/status (file-backed is mostly LMDB's mapped pages: the OS reclaims them, not a leak); V8 heaps from portrait_thread_heap_bytes (used = live objects and garbage not yet collected, total = reserved by V8), main's ArrayBuffers from process.memoryUsage(); \"native rest\" = RssAnon minus every V8 heap total and external (glibc arenas, LMDB and ONNX buffers, the DeepFM inference threads' heaps, code). Every sample in the JSON.",
      ],
      raw: { ...w, profile: summary(w.profile), recommend: summary(w.recommend), probes: { probes: w.probes.probes, failed: w.probes.failed, p99: pctMs(w.probes.freshness, 99) }, slopeMiBPerMin, flat },
      chart: {
        series: [{ name: "engine RSS MiB", points: w.samples.map((s) => [s.t / 60, s.rssMiB]) },
          ...parts.filter((p) => p.unit === "MiB").map((p) => ({ name: p.name, points: w.samples.map((s) => [s.t / 60, p.of(s)] as [number, number]) }))],
        options: { title: `soak: engine RSS over ${minutes} min`, xLabel: "minutes", yLabel: "MiB", logY: false },
      },
    };
  },
};

const MiB = 2 ** 20;

/** Sums the engine's heap gauge over threads matching `thread` for one kind (used, total, external), MiB. */
function heapMiB(s: ResourceSample, thread: RegExp, kind: string): number {
  const h = s.mem?.engine?.heaps;
  if (h === undefined) return NaN;
  let n = 0;
  for (const [k, v] of Object.entries(h)) {
    const [t, kd] = k.split("/");
    if (kd === kind && thread.test(t!)) n += v;
  }
  return n / MiB;
}

/** Each thread's heap limit (portrait_thread_heap_bytes kind "limit": the worker heap bounds plus the young generation), MiB, as last sampled (a busy worker may miss the first samples). */
function heapLimits(samples: ResourceSample[]): string {
  const limits = new Map<string, number>();
  for (const s of samples) for (const [k, v] of Object.entries(s.mem?.engine?.heaps ?? {})) if (k.endsWith("/limit")) limits.set(k.split("/")[0]!, v);
  return limits.size === 0 ? "not reported" : [...limits].map(([t, v]) => `${t} ${f0(v / MiB)}`).join(" / ") + " MiB";
}

/** The soak's memory breakdown: each component as a function of a sample. */
function memoryParts(samples: ResourceSample[]): Array<{ name: string; unit: string; of: (s: ResourceSample) => number }> {
  const shards = [...new Set(samples.flatMap((s) => Object.keys(s.mem?.engine?.actors ?? {})))].sort((a, b) => Number(a) - Number(b));
  // About the live data: a full collection falls in most minutes, and right after it `used` is the live data (used alone also counts the garbage not yet collected).
  const leastUsed = (s: ResourceSample, thread: RegExp) => {
    const v = samples.filter((x) => x.t <= s.t && x.t > s.t - 60).map((x) => heapMiB(x, thread, "used")).filter(Number.isFinite);
    return v.length === 0 ? NaN : Math.min(...v);
  };
  const v8All = (s: ResourceSample) => heapMiB(s, /.*/, "total") + heapMiB(s, /.*/, "external");
  const gauge = (s: ResourceSample, name: string) => {
    const g = s.mem?.engine?.gauges[name];
    return g === undefined ? NaN : Object.values(g).reduce((a, b) => a + b, 0);
  };
  return [
    { name: "memory: RssAnon", unit: "MiB", of: (s) => s.mem?.anonMiB ?? NaN },
    { name: "memory: RssFile + RssShmem", unit: "MiB", of: (s) => s.mem?.fileMiB ?? NaN },
    { name: "memory: main heap used", unit: "MiB", of: (s) => heapMiB(s, /^main$/, "used") },
    { name: "memory: main heap total", unit: "MiB", of: (s) => heapMiB(s, /^main$/, "total") },
    { name: "memory: main external", unit: "MiB", of: (s) => heapMiB(s, /^main$/, "external") },
    { name: "memory: main ArrayBuffers", unit: "MiB", of: (s) => (s.mem?.engine?.main.arrayBuffers ?? NaN) / MiB },
    { name: "memory: shard heaps used (all shards)", unit: "MiB", of: (s) => heapMiB(s, /^shard-/, "used") },
    { name: "memory: shard heaps total (all shards)", unit: "MiB", of: (s) => heapMiB(s, /^shard-/, "total") },
    { name: "memory: shard externals (all shards)", unit: "MiB", of: (s) => heapMiB(s, /^shard-/, "external") },
    { name: "memory: shard heaps live (least used in the last minute, per shard, summed)", unit: "MiB", of: (s) => shards.reduce((n, sh) => n + leastUsed(s, new RegExp(`^shard-${sh}$`)), 0) },
    { name: "memory: recs heap used", unit: "MiB", of: (s) => heapMiB(s, /^recs$/, "used") },
    { name: "memory: recs heap live (least used in the last minute)", unit: "MiB", of: (s) => leastUsed(s, /^recs$/) },
    { name: "memory: recs heap total", unit: "MiB", of: (s) => heapMiB(s, /^recs$/, "total") },
    { name: "memory: native rest (RssAnon − V8 totals − externals)", unit: "MiB", of: (s) => (s.mem?.anonMiB ?? NaN) - v8All(s) },
    ...shards.map((sh) => ({ name: `actors cached, shard ${sh}`, unit: "actors", of: (s: ResourceSample) => s.mem?.engine?.actors[sh] ?? NaN })),
    { name: "actor caches, estimated bytes (all shards)", unit: "MiB", of: (s) => gauge(s, "portrait_shard_actor_cache_bytes") / MiB },
    { name: "feedback log, replies kept", unit: "replies", of: (s) => gauge(s, "portrait_recs_feedback_replies_kept") },
  ];
}
