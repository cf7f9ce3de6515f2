/** profile: profile lookup latency at a sweep of request rates, beside raw NATS request-reply with the same bytes. */
import { pb } from "../../src/wire/proto.js";
import { rawRequestReply } from "../harness/baselines.js";
import { errText, pctMs } from "../harness/open-loop.js";
import { bucketQuantile, histMean } from "../harness/prom.js";
import type { CpuDelta } from "../harness/proc-stats.js";
import { Rig } from "../harness/rig.js";
import { describeSource, generatorSource, knownUsers, loadState, pcts, queryPass, sourceFlags, userChooser } from "./common.js";
import { f0, f2, num, nums, ratio, type Scenario } from "./scenario.js";

/** Engine cores in all and on the main thread over a pass. */
function engineCores(cpu: CpuDelta): { engine: number; main: number } {
  return { engine: cpu.procs.engine ?? NaN, main: cpu.threads.find((t) => t.main)?.cores ?? 0 };
}

/**
 * Engine CPU µs per request over a pass, beyond what the idle engine uses
 * (timers, metrics, heartbeats: measured with no requests just before): all
 * threads, and split into the main thread (the event loop) and the rest
 * (shards, GC helpers, libuv).
 */
function cpuPerRequest(cpu: CpuDelta, idle: { engine: number; main: number }, requests: number): string {
  const us = (cores: number) => (cores * cpu.seconds * 1e6) / Math.max(1, requests);
  const c = engineCores(cpu);
  return `${f0(us(c.engine - idle.engine))} (${f0(us(c.main - idle.main))} + ${f0(us(c.engine - c.main - (idle.engine - idle.main)))})`;
}

export const profile: Scenario = {
  name: "profile",
  summary: "profile lookup latency (open loop, HDR) at a sweep of rates, beside raw request-reply",
  flags: {
    warm: { default: "300000", smoke: "3000", help: "events applied before the queries" },
    ...sourceFlags,
    partitions: { default: "16", smoke: "4", help: "partitions" },
    rates: { default: "500,1000,2000,4000,8000", smoke: "200", help: "request rates, per second" },
    seconds: { default: "5", smoke: "1", help: "seconds per pass" },
    "unknown-share": { default: "0.05", help: "share of requests for users the engine never saw" },
  },
  async run(ctx) {
    const seconds = num(ctx, "seconds", 1, 600);
    const rates = nums(ctx, "rates", 1, 100_000);
    const rig = await Rig.start({ partitions: num(ctx, "partitions", 1, 1024), publishers: num(ctx, "publishers", 1, 16), prefix: "bprof" });
    try {
      const prep = await rig.preparePublishers(generatorSource(ctx), num(ctx, "warm", 1, 50_000_000));
      const loaded = await loadState(rig, prep, 900_000);
      const userOf = userChooser(await knownUsers(rig, 100_000), num(ctx, "unknown-share", 0, 1, false), 11);
      let replyBytes = 0;
      for (let i = 0; i < 100; i++) replyBytes += (await rig.nc.request(rig.s.profileGet, pb.ProfileRequest.encode({ userId: userOf() }).finish(), { timeout: 5000 })).data.length;
      replyBytes = Math.round(replyBytes / 100);
      const send = () => rig.client.getProfile(userOf());
      await queryPass(rig, "profile", Math.min(200, ...rates), 1, send); // warm-up, not recorded
      const i0 = rig.cpuSample();
      await new Promise((r) => setTimeout(r, seconds * 1000));
      const idle = engineCores(rig.cpuDelta(i0, rig.cpuSample()));
      const header = ["req/s", "achieved", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "raw p50 ms", "raw p99 ms", "p99 / raw", "server mean ms", "server p99 ~ms", "engine cores", "engine µs/req beyond idle (main + other threads)", "other cores"];
      const rows: string[][] = [];
      const passes: unknown[] = [];
      for (const rate of rates) {
        const raw = await rawRequestReply(rig, pb.ProfileRequest.encode({ userId: userOf() }).finish(), replyBytes, rate, seconds);
        const q = await queryPass(rig, "profile", rate, seconds, send);
        rows.push([
          String(rate), f0(q.pass.achieved), ...pcts(q.pass.lat), f2(q.pass.lat.maxValue / 1000), errText(q.pass.errors),
          ...pcts(raw.lat, [50, 99]), ratio(pctMs(q.pass.lat, 99), pctMs(raw.lat, 99)),
          f2(histMean(q.server) * 1000), f2(bucketQuantile(q.server, 0.99) * 1000), f2(q.cpu.procs.engine ?? NaN), cpuPerRequest(q.cpu, idle, q.server.count), f2(q.cpu.others),
        ]);
        passes.push({ rate, achieved: q.pass.achieved, errors: q.pass.errors, serverCount: q.server.count, p: [50, 90, 99, 99.9].map((p) => [p, pctMs(q.pass.lat, p)]), raw: [50, 99].map((p) => [p, pctMs(raw.lat, p)]), cpu: q.cpu });
        ctx.log(`profile ${rate}/s: p50/p99 ${pcts(q.pass.lat, [50, 99]).join("/")} ms, errors ${errText(q.pass.errors)}`);
      }
      const pts = (p: number) => (passes as Array<{ achieved: number; p: Array<[number, number]> }>).map((x) => [x.achieved, x.p.find(([q]) => q === p)![1]] as [number, number]);
      return {
        title: "profile lookup",
        header,
        rows,
        notes: [
          `Warm state: ${loaded.events} events of ${loaded.users} users (${describeSource(ctx)}), applied at ${f0(loaded.applyPerSec)}/s; no ingest during the passes. Mean reply ${replyBytes} B.`,
          `The idle engine (${seconds} s without requests before the passes) used ${f2(idle.engine)} cores, ${f2(idle.main)} on its main thread; the µs per request are beyond that.`,
          "Open loop: request i due at start + i/rate; latency from that intended time to the reply (HDR), percentiles over successful replies; at most 1000 outstanding (CLIENT_LIMIT beyond), timeout 2 s.",
          "Raw: the same request bytes to a trivial responder in its own process answering as many bytes, same rate, just before each pass. Server columns: portrait_api_request_seconds{endpoint=\"profile.get\"} (receive to reply inside the engine). UNKNOWN_USER is the typed answer for the unknown share of ids.",
        ],
        raw: { loaded, replyBytes, idle, passes },
        chart: {
          series: [{ name: "p50", points: pts(50) }, { name: "p99", points: pts(99) }, { name: "p99.9", points: pts(99.9) }],
          options: { title: "profile lookup latency vs throughput", xLabel: "answered requests per second", yLabel: "latency, ms" },
        },
      };
    } finally {
      await rig.close();
    }
  },
};
