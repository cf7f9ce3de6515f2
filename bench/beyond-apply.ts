/**
 * `npm run bench:beyond-apply`: the shard side of issue 18's cost in one
 * thread, for allocation and GC counts (which, unlike CPU time, hardly depend
 * on the machine's load). The events of bench/beyond-events.ts are applied by
 * one BatchApplier owning all 8 partitions (as bench/beyond-shards.ts does
 * with a ShardPool, without the workers), with `profile.beyondClicks` on and
 * off alternated (ABBA), each on a fresh LMDB where every user has a profile
 * and no actor is in memory. Social notices ride in the recipient partition's
 * next batch.
 *
 * Per run: CPU of this thread and of the process per shop event, minor and
 * major GCs per 10,000 events, and (with `--alloc`) the bytes allocated per
 * event, all objects counted, collected or not (V8's sampling heap profiler
 * with the collected objects kept), the top allocation sites, and the
 * profile writes per event. `--out DIR` writes each run's allocation sites
 * (bytes per event, JSON) there; `--cpu --out DIR` writes a CPU profile of
 * each run's measured part instead (200 µs sampling).
 *
 *   node dist-bench/bench/beyond-apply.js [--events N] [--users N] [--rounds R] [--no-social] [--no-reviews] [--mix beyond|generator] [--alloc] [--cpu] [--out DIR] [--only on|off] [--datasets DIR]
 */
import { mkdtempSync, readlinkSync, rmSync } from "node:fs";
import { V8Sampling } from "./harness/v8-sampling.js";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { PerformanceObserver, constants as perf } from "node:perf_hooks";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { packBatch } from "../src/bus/event-batch.js";
import { subjects } from "../src/bus/subjects.js";
import { ENGINE_DEFAULTS } from "../src/config/engine-options.js";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { SentimentModel } from "../src/models/sentiment-model.js";
import { ActorCache } from "../src/shard/actor-cache.js";
import { AudienceRunner } from "../src/shard/audience-runner.js";
import { BatchApplier } from "../src/shard/batch-applier.js";
import { CategoryLabels } from "../src/shard/category-labels.js";
import { CLOCK_DEFAULTS, EngineClock } from "../src/shard/engine-clock.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { partitionOf } from "../src/wire/partition.js";
import { EventType, pb } from "../src/wire/proto.js";
import { procTicks } from "./harness/proc-stats.js";
import { makeBeyondEvents, reviewTexts } from "./beyond-events.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "60000" },
    users: { type: "string", default: "12000" },
    rounds: { type: "string", default: "2" },
    datasets: { type: "string", default: "../shared/data" },
    "no-social": { type: "boolean", default: false },
    "no-reviews": { type: "boolean", default: false },
    alloc: { type: "boolean", default: false },
    cpu: { type: "boolean", default: false },
    out: { type: "string", default: "" },
    only: { type: "string", default: "" },
    mix: { type: "string", default: "beyond" },
  },
});
if (a.mix !== "beyond" && a.mix !== "generator") throw new Error("--mix must be beyond or generator");
const EVENTS = Number(a.events);
const USERS = Number(a.users);
const PARTITIONS = 8;
const BATCH = ENGINE_DEFAULTS.maxBatchMessages;
const INTERNAL_KEY = new Uint8Array(32).fill(7);

function threadCpuMs(): number {
  return procTicks(process.pid, Number(readlinkSync("/proc/thread-self").split("/").pop())) * 10;
}

const gc = { minor: 0, major: 0 };
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) {
    const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
    if (kind === perf.NODE_PERFORMANCE_GC_MINOR) gc.minor++;
    else if (kind === perf.NODE_PERFORMANCE_GC_MAJOR) gc.major++;
  }
}).observe({ entryTypes: ["gc"] });

function applier(store: ProfileStore, beyond: boolean, sentiment: SentimentModel): { ap: BatchApplier; audiences: AudienceRunner } {
  const partitions = Array.from({ length: PARTITIONS }, (_, p) => p);
  const profile = compileProfileOptions({ beyondClicks: beyond });
  const actors = new ActorCache(store, 1_000_000);
  const clock = new EngineClock(CLOCK_DEFAULTS);
  const audiences = new AudienceRunner({ shard: 0, partitions, partitionCount: PARTITIONS, store, actors, profile, subjectPrefix: "bench", pseudonymised: false, backfillChunk: 2000, predictor: () => () => undefined });
  const ap = new BatchApplier({
    shard: 0, partitions, store, actors, profile,
    validation: { partitions: PARTITIONS, maxEventBytes: ENGINE_DEFAULTS.maxEventBytes, maxFutureSkewMs: ENGINE_DEFAULTS.maxFutureSkewMs, internalKey: INTERNAL_KEY },
    key: (id) => id, pseudonymised: false, models: { lstm: undefined, sentiment }, itemEvents: undefined, labels: new CategoryLabels(store), clock, audiences,
    subjects: subjects("bench"), partitionCount: PARTITIONS,
  });
  return { ap, audiences };
}

async function run(beyond: boolean, byPartition: Uint8Array[][], t0: number, sentiment: SentimentModel, session: V8Sampling | undefined) {
  const dir = mkdtempSync(join(tmpdir(), "portrait-bench-beyond-apply-"));
  const seq = new Array<number>(PARTITIONS).fill(0);
  try {
    {
      const store = new ProfileStore({ dataDir: dir });
      const { ap } = applier(store, beyond, sentiment);
      const first: Uint8Array[][] = Array.from({ length: PARTITIONS }, () => []);
      for (let u = 0; u < USERS; u++) first[partitionOf(`u${u}`, PARTITIONS)]!.push(pb.Event.encode({ eventId: `f${u}`, userId: `u${u}`, type: EventType.VIEW, timestampMs: t0, itemId: "i0", categoryId: `c${u % 30}` }).finish());
      for (const [p, xs] of first.entries()) {
        for (let i = 0; i < xs.length; i += BATCH) {
          const chunk = xs.slice(i, i + BATCH);
          const s0 = seq[p]!;
          seq[p] = s0 + chunk.length;
          await ap.apply(packBatch(p, chunk, (b) => b, (_b, j) => s0 + 1 + j));
        }
      }
      await store.close();
    }
    const store = new ProfileStore({ dataDir: dir });
    const { ap, audiences } = applier(store, beyond, sentiment);
    let writes = 0;
    const commitBatch = store.commitBatch.bind(store);
    store.commitBatch = ((...args: Parameters<ProfileStore["commitBatch"]>) => {
      writes += [...args[2]].length;
      return commitBatch(...args);
    }) as ProfileStore["commitBatch"];
    const inbox: Uint8Array[][] = Array.from({ length: PARTITIONS }, () => []);
    const next = new Array<number>(PARTITIONS).fill(0);
    await session?.start();
    const g0 = { ...gc };
    const c0 = threadCpuMs();
    const p0 = process.cpuUsage();
    const w0 = performance.now();
    let batches = 0;
    for (;;) {
      let any = false;
      for (let p = 0; p < PARTITIONS; p++) {
        const xs = byPartition[p]!;
        const notes = inbox[p]!.splice(0, BATCH);
        const i = next[p]!;
        const msgs = [...notes, ...xs.slice(i, i + BATCH - notes.length)];
        next[p] = i + (msgs.length - notes.length);
        if (msgs.length === 0) continue;
        any = true;
        const s0 = seq[p]!;
        seq[p] = s0 + msgs.length;
        batches++;
        const r = await ap.apply(packBatch(p, msgs, (b) => b, (_b, j) => s0 + 1 + j));
        if (r.deadLetters.length > 0) throw new Error(`dead letters: ${r.deadLetters.map((d) => d.reason).join(", ")}`);
        const out = r.outbound ?? [];
        for (const m of out) inbox[Number(m.subject.slice(m.subject.lastIndexOf(".") + 1))]!.push(m.data);
        if (out.length > 0) audiences.published(p, out.map((m) => m.outbox ?? m.msgId));
      }
      if (!any) break;
    }
    const threadUs = ((threadCpuMs() - c0) * 1000) / EVENTS;
    const pu = process.cpuUsage(p0);
    const wallS = (performance.now() - w0) / 1000;
    await new Promise((r) => setImmediate(r));
    const alloc = session !== undefined ? `, ${await session.stop(a.out!, beyond ? "on" : "off", EVENTS)}` : "";
    await store.close();
    return `thread ${threadUs.toFixed(1)} µs/event, process ${((pu.user + pu.system) / EVENTS).toFixed(1)} µs/event, ${wallS.toFixed(1)} s, ${batches} batches, ${(writes / EVENTS).toFixed(3)} profile writes per event, GCs per 10k events ${((gc.minor - g0.minor) * 1e4 / EVENTS).toFixed(1)} minor, ${((gc.major - g0.major) * 1e4 / EVENTS).toFixed(2)} major; load ${loadavg()[0]!.toFixed(1)}${alloc}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const sentiment = SentimentModel.load(resolveModel(BUNDLED_MODELS_DIR, "sentiment").dir);
const texts = await reviewTexts(a.datasets!);
const t0 = Date.now() - 2 * 86_400_000;
const { events } = makeBeyondEvents("ba", texts, t0, { events: EVENTS, users: USERS, noSocial: a["no-social"], noReviews: a["no-reviews"], mix: a.mix as "beyond" | "generator" });
const byPartition: Uint8Array[][] = Array.from({ length: PARTITIONS }, () => []);
for (const e of events) byPartition[partitionOf(e.userId!, PARTITIONS)]!.push(pb.Event.encode(e).finish());
const session = a.alloc || a.cpu ? new V8Sampling(a.cpu ? "cpu" : "alloc") : undefined;
const order: boolean[] = [true];
for (let r = 0; r < Number(a.rounds); r++) order.push(...(r % 2 === 0 ? [true, false] : [false, true]));
if (a.only !== "") order.splice(0, order.length, ...order.map(() => a.only === "on"));
for (const [i, on] of order.entries()) {
  const line = await run(on, byPartition, t0, sentiment, session);
  console.log(`run ${i + 1}${i === 0 ? " (warm-up)" : ""}, beyondClicks ${on ? "on " : "off"}: ${line}`);
}
