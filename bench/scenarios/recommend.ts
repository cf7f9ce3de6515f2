/**
 * recommend: recommendation latency at a sweep of request rates, without and
 * with concurrent ingest at a fraction of the live capacity, beside raw NATS
 * request-reply with the same bytes. State: the Taobao slice (real items,
 * co-visitation, trending), so candidates and DeepFM rows are realistic.
 */
import { resolveDataFile } from "../../src/data/datasets.js";
import { pb } from "../../src/wire/proto.js";
import { rawRequestReply } from "../harness/baselines.js";
import { sleep } from "../harness/ipc.js";
import { errText, pctMs } from "../harness/open-loop.js";
import { bucketQuantile, histDelta, histMean } from "../harness/prom.js";
import { Rig } from "../harness/rig.js";
import { knownUsers, liveCapacity, loadState, pcts, queryPass, userChooser } from "./common.js";
import { f0, f1, f2, num, nums, ratio, type Scenario } from "./scenario.js";

const SLICE = 110_300;

export const recommend: Scenario = {
  name: "recommend",
  summary: "recommendation latency (open loop, HDR) at a sweep of rates, with and without ingest, beside raw request-reply",
  flags: {
    rates: { default: "100,250,500,1000,2000", smoke: "50", help: "request rates, per second" },
    seconds: { default: "5", smoke: "1", help: "seconds per pass" },
    passes: { default: "off,on", help: "ingest conditions per rate: off, on" },
    "ingest-fraction": { default: "0.5", help: "concurrent ingest, as a fraction of the live capacity" },
    warm: { default: String(SLICE), smoke: "3000", help: "events of the Taobao slice applied before the queries" },
    candidates: { default: "200", help: "candidates ranked per request" },
    k: { default: "10", help: "items per reply" },
    "unknown-share": { default: "0.05", help: "share of requests for users the engine never saw" },
    publishers: { default: "1", help: "publisher processes" },
    partitions: { default: "16", smoke: "4", help: "partitions" },
  },
  async run(ctx) {
    const rates = nums(ctx, "rates", 1, 20_000);
    const seconds = num(ctx, "seconds", 1, 600);
    const passes = String(ctx.flags.passes).split(",").map((x) => x.trim());
    if (passes.length === 0 || passes.some((x) => x !== "off" && x !== "on")) throw new Error("bench: --passes must be off, on or off,on");
    const fraction = num(ctx, "ingest-fraction", 0.01, 2, false);
    const candidates = num(ctx, "candidates", 1, 2000);
    const k = num(ctx, "k", 1, 100);
    const warm = num(ctx, "warm", 1, SLICE);
    const file = resolveDataFile(ctx.datasets, "taobao");
    const rig = await Rig.start({ partitions: num(ctx, "partitions", 1, 1024), publishers: num(ctx, "publishers", 1, 16), prefix: "brec" });
    try {
      // The slice, then rounds of it with new ids and later timestamps for the capacity run and the concurrent ingest.
      const poolEvents = warm + Math.min(3_000_000, warm * 20);
      const prep = await rig.preparePublishers({ kind: "dataset", format: "taobao", file }, poolEvents);
      const loaded = await loadState(rig, { events: warm, users: prep.users }, 900_000);
      const cap = await liveCapacity(rig, ctx.smoke ? 1 : 5, loaded.events);
      let expected = cap.expected;
      for (const deadline = Date.now() + 60_000; ;) {
        const r = await rig.client.recommend("bench-nobody", { k: 100, candidates }).catch(() => undefined);
        if (r !== undefined && r.items.length >= Math.min(100, ctx.smoke ? 10 : 100)) break;
        if (Date.now() > deadline) throw new Error("the recs index did not fill");
        await sleep(200);
      }
      const userOf = userChooser(await knownUsers(rig, 100_000), num(ctx, "unknown-share", 0, 1, false), 11);
      const req = () => pb.RecommendRequest.encode({ userId: userOf(), k, candidates }).finish();
      let replyBytes = 0;
      for (let i = 0; i < 100; i++) replyBytes += (await rig.nc.request(rig.s.recommend, req(), { timeout: 5000 })).data.length;
      replyBytes = Math.round(replyBytes / 100);
      const send = () => rig.client.recommend(userOf(), { k, candidates });
      await queryPass(rig, "recommend", Math.min(100, ...rates), 1, send); // warm-up, not recorded
      const ingestRate = Math.round(cap.perSec * fraction);
      const header = ["req/s", "ingest", "achieved", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "raw p99 ms", "p99 / raw", "server mean ms", "server p99 ~ms", "pool queue / run ms", "batch rows", "engine CPU ms/req", "engine cores", "other cores", "applied ev/s"];
      const rows: string[][] = [];
      const out: unknown[] = [];
      for (const rate of rates) {
        for (const withIngest of passes.map((x) => x === "on")) {
          if (withIngest) {
            await rig.startPublishing(ingestRate, ingestRate * (2 * seconds + 10), 2 * seconds + 10);
            await sleep(1000);
          }
          const raw = await rawRequestReply(rig, req(), replyBytes, rate, seconds);
          const q = await queryPass(rig, "recommend", rate, seconds, send);
          if (withIngest) expected += (await rig.haltPublishing()).sent;
          const caught = await rig.waitProcessed(expected, 120_000);
          const lag = expected - caught.processed;
          const inf = q.after.inference;
          const inf0 = q.before.inference;
          const queue = histDelta(inf0.queue, inf.queue);
          const run = histDelta(inf0.run, inf.run);
          const rowsH = histDelta(inf0.batchRows, inf.batchRows);
          const wall = seconds;
          rows.push([
            String(rate), withIngest ? `${ingestRate}/s` : "off", f0(q.pass.achieved), ...pcts(q.pass.lat), f2(q.pass.lat.maxValue / 1000),
            errText(q.pass.errors) + (lag > 0 ? ` (ingest lag ${lag})` : ""), f2(pctMs(raw.lat, 99)), ratio(pctMs(q.pass.lat, 99), pctMs(raw.lat, 99)),
            f2(histMean(q.server) * 1000), f1(bucketQuantile(q.server, 0.99) * 1000), `${f2(histMean(queue) * 1000)} / ${f2(histMean(run) * 1000)}`, f1(histMean(rowsH)),
            withIngest ? "-" : f2((((q.cpu.procs.engine ?? 0) * wall) / Math.max(1, q.server.count)) * 1000), f2(q.cpu.procs.engine ?? NaN), f2(q.cpu.others),
            withIngest ? f0(q.appliedPerSec) : "-",
          ]);
          out.push({ rate, ingest: withIngest ? ingestRate : 0, achieved: q.pass.achieved, errors: q.pass.errors, p: [50, 90, 99, 99.9].map((p) => [p, pctMs(q.pass.lat, p)]), raw: [50, 99].map((p) => [p, pctMs(raw.lat, p)]), cpu: q.cpu, applied: q.appliedPerSec, lag });
          ctx.log(`recommend ${rate}/s ingest ${withIngest ? "on" : "off"}: p50/p99 ${pcts(q.pass.lat, [50, 99]).join("/")} ms, errors ${errText(q.pass.errors)}`);
        }
      }
      const pts = (ingest: boolean, p: number) => (out as Array<{ ingest: number; achieved: number; p: Array<[number, number]> }>)
        .filter((x) => (x.ingest > 0) === ingest).map((x) => [x.achieved, x.p.find(([q]) => q === p)![1]] as [number, number]);
      return {
        title: `recommend, ${candidates} candidates, k ${k}`,
        header,
        rows,
        notes: [
          `State: ${loaded.events} events of the Taobao slice (${loaded.users} users), models ${loaded.engine.models.join(", ") || "none"}, ${loaded.engine.workers} shard workers, inference ${JSON.stringify(loaded.engine.inference)}.`,
          `Live ingest capacity ${f0(cap.perSec)} events/s (the slice again, new ids, later timestamps); concurrent ingest at ${fraction} of it. Mean reply ${replyBytes} B.`,
          "Open loop, latency from the intended send time (HDR); at most 1000 outstanding; timeout 2 s. Raw: same bytes to a trivial responder, same rate, just before each pass. Server: portrait_api_request_seconds{endpoint=recommend}; pool: inference queue wait per request / run per batch.",
        ],
        raw: { loaded, capacity: cap, replyBytes, passes: out },
        chart: {
          series: [
            { name: "p50, no ingest", points: pts(false, 50) }, { name: "p99, no ingest", points: pts(false, 99) },
            { name: "p50, ingest", points: pts(true, 50) }, { name: "p99, ingest", points: pts(true, 99) },
          ],
          options: { title: "recommendation latency vs throughput", xLabel: "answered requests per second", yLabel: "latency, ms" },
        },
      };
    } finally {
      await rig.close();
    }
  },
};
