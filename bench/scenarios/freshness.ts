/**
 * freshness: publish -> change visible in the profile, while the engine
 * ingests at 25/50/75 % of the live capacity measured in the same run.
 */
import { rawRequestReply } from "../harness/baselines.js";
import { pctMs } from "../harness/open-loop.js";
import { Rig } from "../harness/rig.js";
import { bucketQuantile, histDelta, INGEST_STAGES } from "../harness/prom.js";
import { pb } from "../../src/wire/proto.js";
import { covisitProbes, describeSource, freshnessProbes, generatorSource, liveCapacity, loadState, pcts, sourceFlags } from "./common.js";
import { f0, f2, num, nums, ratio, type Scenario } from "./scenario.js";

export const freshness: Scenario = {
  name: "freshness",
  summary: "publish -> visible-in-profile latency (HDR) at fractions of the live ingest capacity",
  flags: {
    warm: { default: "200000", smoke: "2000", help: "events applied before measuring (state to work on)" },
    pool: { default: "3000000", smoke: "40000", help: "events prepared for the capacity run and the load levels (an upper bound)" },
    ...sourceFlags,
    partitions: { default: "16", smoke: "4", help: "partitions" },
    levels: { default: "25,50,75", help: "load levels, percent of the live capacity" },
    seconds: { default: "20", smoke: "2", help: "seconds per level" },
    "capacity-seconds": { default: "6", smoke: "2", help: "seconds of the live-capacity run" },
    probes: { default: "8", smoke: "4", help: "concurrent probe users" },
    "covisit-probes": { default: "2", smoke: "1", help: "concurrent co-visitation probes (a planted pair i -> j; publish -> j recommended to a viewer of i); 0 = none" },
  },
  async run(ctx) {
    const seconds = num(ctx, "seconds", 1, 3600);
    const levels = nums(ctx, "levels", 1, 200);
    const rig = await Rig.start({ partitions: num(ctx, "partitions", 1, 1024), publishers: num(ctx, "publishers", 1, 16), prefix: "bfresh" });
    try {
      const warm = num(ctx, "warm", 1, 50_000_000);
      const prep = await rig.preparePublishers(generatorSource(ctx), warm + num(ctx, "pool", 1, 50_000_000));
      const loaded = await loadState(rig, { events: warm, users: prep.users }, 900_000);
      const cap = await liveCapacity(rig, num(ctx, "capacity-seconds", 1, 120), loaded.events);
      let expected = cap.expected;
      const probeReq = pb.ProfileRequest.encode({ userId: "probe" }).finish();
      const header = ["load", "offered ev/s", "applied ev/s", "freshness p50 ms", "p99 ms", "p99.9 ms", "max ms", "probes (failed)", "polls/probe", "raw req-reply p99 ms", "p99 / raw p99", "engine cores", "max lag", "co-visitation p50 ms", "co-vis. p99 ms", "co-vis. max ms", "co-vis. probes (failed)", "co-vis. polls (answered)", "recs queue start / end"];
      const rows: string[][] = [];
      const levelsRaw: unknown[] = [];
      const stageRows: string[][] = [];
      for (const level of levels) {
        const rate = (cap.perSec * level) / 100;
        const sampler = rig.sampleResources(1000);
        const s0 = await rig.snapshot();
        const c0 = rig.cpuSample();
        await rig.startPublishing(rate, Math.round(rate * (seconds + 1)), seconds + 1);
        const covisitConcurrency = num(ctx, "covisit-probes", 0, 64);
        const [probe, raw, cv] = await Promise.all([
          freshnessProbes(rig, seconds, { runId: `l${level}`, concurrency: num(ctx, "probes", 1, 256) }),
          rawRequestReply(rig, probeReq, 300, 50, seconds),
          covisitConcurrency > 0 ? covisitProbes(rig, seconds, { runId: `l${level}`, concurrency: covisitConcurrency }) : undefined,
        ]);
        const sent = await rig.haltPublishing();
        const c1 = rig.cpuSample();
        const s1 = await rig.snapshot();
        const samples = await sampler.stop();
        expected += sent.sent + probe.probes + probe.failed + 3 * ((cv?.probes ?? 0) + (cv?.failed ?? 0));
        const drained = await rig.waitProcessed(expected, 300_000);
        if (!drained.reached) throw new Error(`level ${level}%: the engine applied ${drained.processed} of ${expected}`);
        const cpu = rig.cpuDelta(c0, c1);
        // Where the batches' oldest events spent their time (portrait_ingest_stage_seconds), p50 / p99 ms per stage.
        const stages = Object.fromEntries(INGEST_STAGES.map((st) => {
          const h = histDelta(s0.stages[st]!, s1.stages[st]!);
          return [st, { p50: bucketQuantile(h, 0.5) * 1000, p99: bucketQuantile(h, 0.99) * 1000, mean: h.count > 0 ? (h.sum / h.count) * 1000 : NaN, batches: h.count }];
        }));
        stageRows.push([`${level} %`, ...INGEST_STAGES.map((st) => `${f2(stages[st]!.p50)} / ${f2(stages[st]!.p99)}`)]);
        ctx.log(`level ${level}%: stages p50/p99 ms ${INGEST_STAGES.map((st) => `${st} ${f2(stages[st]!.p50)}/${f2(stages[st]!.p99)}`).join(", ")}; batches ${stages.total!.batches}`);
        const applied = (s1.processed - s0.processed) / ((c1.t - c0.t) / 1000);
        const p99 = pctMs(probe.freshness, 99);
        rows.push([
          `${level} %`, f0(sent.sent / Math.max(1e-9, sent.seconds)), f0(applied), ...pcts(probe.freshness), f2(probe.freshness.maxValue / 1000),
          `${probe.probes} (${probe.failed})`, probe.pollsPerProbe.toFixed(1), f2(pctMs(raw.lat, 99)), ratio(p99, pctMs(raw.lat, 99)),
          f2(cpu.procs.engine ?? NaN), f0(Math.max(0, ...samples.map((s) => s.maxPartitionLag))),
          ...(cv !== undefined ? [...pcts(cv.freshness, [50, 99]), f2(cv.freshness.maxValue / 1000), `${cv.probes} (${cv.failed})`, `${cv.polls} (${cv.replies})`] : ["—", "—", "—", "—", "—"]),
          `${s0.recsItemEventsQueued} / ${s1.recsItemEventsQueued}`,
        ]);
        levelsRaw.push({ level, offered: rate, published: sent, applied, covisit: cv && { p: [50, 90, 99].map((q) => [q, pctMs(cv.freshness, q)]), probes: cv.probes, failed: cv.failed, pollsPerProbe: cv.pollsPerProbe, polls: cv.polls, replies: cv.replies, errors: cv.errors }, p: [50, 90, 99, 99.9].map((q) => [q, pctMs(probe.freshness, q)]), raw: [50, 99].map((q) => [q, pctMs(raw.lat, q)]), samples, cpu, stages });
        ctx.log(`level ${level}%: offered ${rate.toFixed(0)}/s, freshness p50/p99 ${pcts(probe.freshness, [50, 99]).join("/")} ms` +
          (cv !== undefined ? `; co-visitation ${cv.probes} probes (${cv.failed} failed), p50/p99 ${pcts(cv.freshness, [50, 99]).join("/")} ms, ${cv.polls} polls, ${cv.replies} answered, errors ${JSON.stringify(cv.errors)}` : ""));
      }
      const points = (q: number) => levelsRaw.map((l) => {
        const x = l as { applied: number; p: Array<[number, number]> };
        return [x.applied, x.p.find(([p]) => p === q)![1]] as [number, number];
      });
      return {
        title: "freshness",
        header,
        rows,
        notes: [
          `Live capacity in this run: ${f0(cap.perSec)} events/s (a burst published at full speed while the engine applies, from its first publish to its last event applied); levels are fractions of it. Warm state: ${loaded.events} events (all prepared events cover ${loaded.users} users); models ${loaded.engine.models.join(", ") || "none"}.`,
          "Freshness: a probe publishes one event for its own user, then polls the profile back to back until events_applied shows it; latency from publish to that reply (HDR). Resolution is one profile round trip; the raw request-reply latency to a trivial responder, measured at the same time at 50/s, is the floor.",
          "Co-visitation freshness: a probe publishes a planted pair on two new items (user A views i, then j) and a view of i by user B, then asks recommend(B, k 50) back to back until j is in the reply (co-visitation, sequential rules and session-kNN all lead there); latency from the last publish to that reply (HDR). A failed probe did not see j within 10 s.",
          ...stageRows.map((r) => `Stages at ${r[0]} (portrait_ingest_stage_seconds, each batch's oldest event; p50 / p99 ms from buckets): ${INGEST_STAGES.map((st, i) => `${st} ${r[i + 1]}`).join(", ")}.`),
          `Background load: ${describeSource(ctx)}, open loop (rate schedule, not send-when-returned) from the publisher processes.`,
        ],
        raw: { capacity: cap, loaded, levels: levelsRaw },
        chart: {
          series: [{ name: "freshness p50", points: points(50) }, { name: "freshness p99", points: points(99) }],
          options: { title: "freshness vs ingest throughput", xLabel: "events applied per second", yLabel: "publish -> visible, ms" },
        },
      };
    } finally {
      await rig.close();
    }
  },
};
