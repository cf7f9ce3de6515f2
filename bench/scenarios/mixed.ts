/**
 * mixed: ingest at a fraction of the live capacity while profile and
 * recommendation queries and freshness probes run at the same time — the
 * shape of production. soak (bench/scenarios/soak.ts) is the same load held
 * for minutes with the engine's memory sampled.
 */
import { errText, openLoop, pctMs, type PassResult } from "../harness/open-loop.js";
import { bucketQuantile, histDelta, QUERY_STAGES, type PromHist } from "../harness/prom.js";
import type { CpuDelta } from "../harness/proc-stats.js";
import { Rig, type ResourceSample } from "../harness/rig.js";
import { freshnessProbes, generatorSource, knownUsers, liveCapacity, loadState, pcts, sourceFlags, userChooser, type Loaded, type ProbeResult } from "./common.js";
import { f0, f2, num, type Flag, type Scenario, type ScenarioContext } from "./scenario.js";

export const mixedFlags: Record<string, Flag> = {
  warm: { default: "300000", smoke: "3000", help: "events applied before the window" },
  ...sourceFlags,
  partitions: { default: "16", smoke: "4", help: "partitions" },
  "ingest-fraction": { default: "0.5", help: "ingest rate, as a fraction of the live capacity" },
  "profile-rate": { default: "1000", smoke: "100", help: "profile requests per second" },
  "recommend-rate": { default: "100", smoke: "20", help: "recommendation requests per second" },
  "unknown-share": { default: "0.05", help: "share of queries for users the engine never saw" },
};

export interface MixedWindow {
  loaded: Loaded;
  capacity: number;
  ingestRate: number;
  published: { sent: number; seconds: number };
  appliedPerSec: number;
  profile: PassResult;
  recommend: PassResult;
  probes: ProbeResult;
  samples: ResourceSample[];
  /** Everything published was applied afterwards. */
  drained: boolean;
  /** Where the window's profile lookups spent their time in the engine: p50 / p99 ms per stage (from histogram buckets), and the engine's CPU. */
  stages: Record<string, { p50: number; p99: number; count: number }>;
  cpu: CpuDelta;
  /** Main thread event-loop delay over the window, ms. */
  loop: { p50: number; p99: number; max: number };
}

/**
 * Loads state, measures capacity, then holds the mixed load for `seconds`, sampling resources every `sampleMs`
 * (with `o.memory`, the engine's memory breakdown too); `o.during` runs beside the load (the soak's heap snapshots).
 */
export async function mixedWindow(ctx: ScenarioContext, prefix: string, seconds: number, sampleMs: number,
  o: { memory?: boolean; during?: (rig: Rig) => Promise<void> } = {}): Promise<MixedWindow> {
  const fraction = num(ctx, "ingest-fraction", 0.01, 2, false);
  const profileRate = num(ctx, "profile-rate", 1, 50_000);
  const recRate = num(ctx, "recommend-rate", 1, 20_000);
  const unknown = num(ctx, "unknown-share", 0, 1, false);
  const rig = await Rig.start({ partitions: num(ctx, "partitions", 1, 1024), publishers: num(ctx, "publishers", 1, 16), prefix });
  try {
    const warm = num(ctx, "warm", 1, 50_000_000);
    // A bounded pool (memory: ~100 B per prepared event in the publishers), published again round after round under new
    // message ids when a long window needs more: the engine then sees the same users' sessions repeat.
    const pool = Math.min(2_000_000, Math.ceil(800_000 + 150_000 * fraction * seconds));
    const prep = await rig.preparePublishers(generatorSource(ctx), warm + (ctx.smoke ? 40_000 : pool), { cycle: true });
    const loaded = await loadState(rig, { events: warm, users: prep.users }, 900_000);
    const cap = await liveCapacity(rig, ctx.smoke ? 1 : 5, loaded.events);
    const users = await knownUsers(rig, 100_000);
    const profUser = userChooser(users, unknown, 11);
    const recUser = userChooser(users, unknown, 12);
    const ingestRate = Math.round(cap.perSec * fraction);
    const sampler = rig.sampleResources(sampleMs, { memory: o.memory ?? false });
    const s0 = await rig.snapshot();
    const c0 = rig.cpuSample();
    const storedBefore = await rig.streamMessages();
    const t0 = performance.now();
    await rig.startPublishing(ingestRate, Math.round(ingestRate * (seconds + 2)), seconds + 2);
    const [profile, recommend, probes] = await Promise.all([
      openLoop(profileRate, seconds, 1000, 2000, () => rig.client.getProfile(profUser())),
      openLoop(recRate, seconds, 1000, 2000, () => rig.client.recommend(recUser(), { k: 10 })),
      freshnessProbes(rig, seconds, { runId: prefix, concurrency: 4, gapMs: 100 }),
      o.during?.(rig),
    ]);
    const published = await rig.haltPublishing();
    const c1 = rig.cpuSample();
    const s1 = await rig.snapshot();
    const q = (h: PromHist) => ({ p50: bucketQuantile(h, 0.5) * 1000, p99: bucketQuantile(h, 0.99) * 1000, count: h.count });
    const stages: MixedWindow["stages"] = { server: q(histDelta(s0.api.profile!, s1.api.profile!)) };
    for (const st of QUERY_STAGES) stages[st] = q(histDelta(s0.queryStages[st]!, s1.queryStages[st]!));
    const appliedPerSec = (s1.processed - s0.processed) / ((performance.now() - t0) / 1000);
    const samples = await sampler.stop();
    // What the stream stored in the window (the load and the probes; a loaded server drops some unacknowledged publishes).
    const expected = cap.expected + (await rig.waitStored(storedBefore + published.sent + probes.probes + probes.failed, 60_000)) - storedBefore;
    const drained = (await rig.waitProcessed(expected, 300_000)).reached;
    return { loaded, capacity: cap.perSec, ingestRate, published, appliedPerSec, profile, recommend, probes, samples, drained, stages, cpu: rig.cpuDelta(c0, c1), loop: s1.loop };
  } finally {
    await rig.close();
  }
}

/** Table rows of a mixed window's traffic. */
export function mixedRows(w: MixedWindow): string[][] {
  const q = (name: string, p: PassResult) => [name, `${f0(p.rate)}/s offered, ${f0(p.achieved)}/s answered`, ...pcts(p.lat), f2(p.lat.maxValue / 1000), errText(p.errors)];
  return [
    ["ingest", `${f0(w.published.sent / Math.max(1e-9, w.published.seconds))}/s published, ${f0(w.appliedPerSec)}/s applied`, "-", "-", "-", "-", w.drained ? "0 (all applied after)" : "NOT DRAINED"],
    q("profile", w.profile),
    q("recommend", w.recommend),
    ["freshness", `${w.probes.probes} probes`, ...pcts(w.probes.freshness), f2(w.probes.freshness.maxValue / 1000), w.probes.failed > 0 ? `${w.probes.failed} not seen in 10 s` : "0"],
  ];
}

export const MIXED_HEADER = ["traffic", "rate", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors"];

export const mixed: Scenario = {
  name: "mixed",
  summary: "ingest + profile + recommend + freshness probes at once",
  flags: { ...mixedFlags, seconds: { default: "30", smoke: "3", help: "seconds of mixed load" } },
  async run(ctx) {
    const w = await mixedWindow(ctx, "bmixed", num(ctx, "seconds", 1, 3600), 1000);
    const rss = w.samples.map((s) => s.rssMiB);
    return {
      title: "mixed load",
      header: MIXED_HEADER,
      rows: mixedRows(w),
      notes: [
        `Live capacity ${f0(w.capacity)} events/s; ingest at ${ctx.flags["ingest-fraction"]} of it (${w.ingestRate}/s) with profile ${ctx.flags["profile-rate"]}/s, recommend ${ctx.flags["recommend-rate"]}/s and 4 freshness probes, for ${ctx.flags.seconds} s. State: ${w.loaded.events} events applied before (all prepared events cover ${w.loaded.users} users); models ${w.loaded.engine.models.join(", ") || "none"}.`,
        `Engine RSS ${f0(Math.min(...rss))}–${f0(Math.max(...rss))} MiB; engine cores mean ${f2(w.samples.reduce((a, s) => a + s.engineCores, 0) / Math.max(1, w.samples.length))}; other processes ${f2(w.samples.reduce((a, s) => a + s.otherCores, 0) / Math.max(1, w.samples.length))} cores.`,
        "Open loop for every stream; latencies from the intended send time (HDR).",
        `Profile lookups in the engine, p50 / p99 ms (from histogram buckets): ${Object.entries(w.stages).map(([k, v]) => `${k} ${f2(v.p50)} / ${f2(v.p99)}`).join(", ")} ` +
          "(server = portrait_api_request_seconds, arrival in the handler to reply; post / run / return = portrait_query_stage_seconds: waiting for the shard, the shard's answer, back to main). " +
          `Main event-loop delay p50 / p99 / max ${f2(w.loop.p50)} / ${f2(w.loop.p99)} / ${f2(w.loop.max)} ms. Engine cores over the window ${f2(w.cpu.procs.engine ?? NaN)} ` +
          `(threads: ${w.cpu.threads.slice(0, 5).map((t) => `${t.main ? "main " : ""}${f2(t.cores)}`).join(", ")}); others ${f2(w.cpu.others)}.`,
      ],
      raw: { ...w, profile: summary(w.profile), recommend: summary(w.recommend), probes: { ...w.probes, freshness: pList(w.probes.freshness) } },
      chart: {
        series: [
          { name: "RSS MiB", points: w.samples.map((s) => [s.t, s.rssMiB]) },
          { name: "lag (events)", points: w.samples.map((s) => [s.t, s.lag]) },
        ],
        options: { title: "mixed load: engine RSS and lag over time", xLabel: "seconds", yLabel: "MiB / events" },
      },
    };
  },
};

const pList = (h: PassResult["lat"]) => [50, 90, 99, 99.9].map((p) => [p, pctMs(h, p)]);
export const summary = (p: PassResult) => ({ rate: p.rate, scheduled: p.scheduled, ok: p.ok, achieved: p.achieved, errors: p.errors, p: pList(p.lat) });
