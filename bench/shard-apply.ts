/**
 * `npm run bench:shard-apply`: the CPU a shard spends per event on the
 * max-ingest mix, without the broker, the main thread or the other threads:
 * the calibrated generator's events (bench/generator.ts, as `portrait bench
 * max-ingest` publishes them, protobuf-encoded) are packed into per-partition
 * batches and applied by one BatchApplier as a shard worker applies them
 * (decode, validate, profile, LSTM step, audience observation, LMDB commit),
 * with the bundled LSTM and sentiment models, at most `--window` events in
 * batches not yet committed (the engine's maxShardQueueEvents).
 *
 *   node dist-bench/bench/shard-apply.js [--events N] [--users N] [--partitions P] [--batch B] [--window W] [--rounds R] [--lstm on|off] [--queries N [--reload]] [--alloc | --cpu] [--out DIR]
 *
 * `--digest`: after each round, an FNV-1a digest of every stored value of the
 * LMDB environment (each db's keys and value bytes, as written), printed: two
 * builds that must store the same bytes print the same digest.
 *
 * `--alloc`: allocation sampling of each round's apply (collected objects
 * included), its top sites printed in bytes per event (and all of them
 * written to DIR with `--out`); `--cpu`: a CPU profile of each round's apply
 * written to `--out` DIR (default the working directory).
 *
 * `--queries N`: after each round's apply, N profile lookups (protobuf
 * replies, the bundled LSTM and churn models' predictions, users drawn
 * uniformly from those applied) answered as the shard answers them
 * (ProfileQueries.getProfile), with this thread's CPU µs per lookup. With
 * `--reload` from an empty actor cache: every user read from LMDB (the
 * stored layout's decoding measured, and its replies checked against those
 * from memory).
 *
 * Prints, per round (each on a fresh LMDB), CPU µs per event of this thread
 * and of the process (the rest is V8's GC helper threads and lmdb-js's
 * commits on libuv's pool), the wall time, and the garbage collections of
 * the thread per 10,000 events (their count follows the bytes allocated and
 * promoted, and is nearly independent of the machine's load). Item events for the recommendation worker are not posted (that
 * worker is not here). Run it against two builds in the same minutes to
 * compare them (`node --cpu-prof` for where the time goes).
 */
import { open } from "lmdb";
import { mkdtempSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { procTicks } from "./harness/proc-stats.js";
import { V8Sampling } from "./harness/v8-sampling.js";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { PerformanceObserver, constants as perf } from "node:perf_hooks";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import type { EventBatch } from "../src/bus/event-batch.js";
import { packBatch } from "../src/bus/event-batch.js";
import { subjects } from "../src/bus/subjects.js";
import { LstmRuntime } from "../src/models/lstm-runtime.js";
import { SentimentModel } from "../src/models/sentiment-model.js";
import { ActorCache } from "../src/shard/actor-cache.js";
import { AudienceRunner } from "../src/shard/audience-runner.js";
import { BatchApplier } from "../src/shard/batch-applier.js";
import { CategoryLabels } from "../src/shard/category-labels.js";
import { CLOCK_DEFAULTS, ClockReader, EngineClock } from "../src/shard/engine-clock.js";
import { Predictions } from "../src/shard/predictions.js";
import { ProfileQueries } from "../src/shard/profile-queries.js";
import { ChurnModel } from "../src/models/churn-model.js";
import { createLogger } from "../src/obs/logger.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { partitionOf } from "../src/wire/partition.js";
import { pb } from "../src/wire/proto.js";
import { generateEvents } from "./generator.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "200000" },
    users: { type: "string", default: "200000" },
    seed: { type: "string", default: "7" },
    partitions: { type: "string", default: "16" },
    batch: { type: "string", default: "1024" },
    window: { type: "string", default: "2048" },
    rounds: { type: "string", default: "2" },
    lstm: { type: "string", default: "on" },
    queries: { type: "string", default: "0" },
    reload: { type: "boolean", default: false },
    alloc: { type: "boolean", default: false },
    digest: { type: "boolean", default: false },
    cpu: { type: "boolean", default: false },
    out: { type: "string", default: "" },
  },
});
const EVENTS = Number(a.events);
const PARTITIONS = Number(a.partitions);
const BATCH = Number(a.batch);
const WINDOW = Number(a.window);
const QUERIES = Number(a.queries);
const sampling = a.alloc || a.cpu ? new V8Sampling(a.cpu ? "cpu" : "alloc") : undefined;
/** The users of shard 0's events. */
const users = new Set<string>();
const MODELS = join(import.meta.dirname, "..", "..", "models");

/** CPU ms of the calling thread so far (Linux: /proc/thread-self names it). */
function threadCpuMs(): number {
  return procTicks(process.pid, Number(readlinkSync("/proc/thread-self").split("/").pop())) * 10;
}

function currentDir(kind: string): string {
  return join(MODELS, kind, readFileSync(join(MODELS, kind, "CURRENT"), "utf8").trim());
}

/** The events of shard 0 of 2 (partitions p % 2 === 0), encoded, in batches per partition as consumers deliver them (a fetch of BATCH × P/2 events split by partition). */
function batches(): { list: EventBatch[]; events: number } {
  const per = new Map<number, Uint8Array[]>();
  const list: EventBatch[] = [];
  let seq = 0;
  let events = 0;
  const flush = (p: number) => {
    const msgs = per.get(p)!;
    if (msgs.length === 0) return;
    const first = seq;
    list.push(packBatch(p, msgs, (m) => m, (_m, i) => first + i + 1));
    seq += msgs.length;
    per.set(p, []);
  };
  for (const e of generateEvents(EVENTS, { users: Number(a.users), seed: Number(a.seed) })) {
    const p = partitionOf(e.userId!, PARTITIONS);
    if (p % 2 !== 0) continue;
    events++;
    users.add(e.userId!);
    if (!per.has(p)) per.set(p, []);
    per.get(p)!.push(pb.Event.encode(e).finish());
    if (per.get(p)!.length >= BATCH) flush(p);
  }
  for (const p of per.keys()) flush(p);
  // Sequences per partition must grow: the packed ones are global, which is enough.
  return { list, events };
}

/** Garbage collections of this thread (minor = scavenges) and their wall time (with helper threads waited for), since the observer started. */
const gc = { minor: 0, major: 0, ms: 0 };
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) {
    const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
    if (kind === perf.NODE_PERFORMANCE_GC_MINOR) gc.minor++;
    else if (kind === perf.NODE_PERFORMANCE_GC_MAJOR) gc.major++;
    gc.ms += e.duration;
  }
}).observe({ entryTypes: ["gc"] });

/** `n` profile lookups of users drawn from `users` as a shard answers them; this thread's CPU µs per lookup and the mean reply bytes. */
function lookups(n: number, users: string[], actors: ActorCache, store: ProfileStore, clock: EngineClock, lstm: LstmRuntime | undefined): { us: number; bytes: number; sum: number } {
  const churn = ChurnModel.load(currentDir("churn"));
  const predictions = new Predictions({ lstm, lstmDir: lstm !== undefined ? currentDir("lstm") : undefined, churn, propensity: undefined, shopSource: "stream:bench" });
  const q = new ProfileQueries({
    shard: 0, actors, profile: PROFILE_DEFAULTS, key: (id) => id, clock: new ClockReader(clock.buffer, CLOCK_DEFAULTS), labels: new CategoryLabels(store),
    models: { lstm, churn, lstmVersions: new Map(), predictions }, log: createLogger("warn"), aliasOf: () => undefined,
  });
  let x = 12345;
  let bytes = 0;
  /** FNV-1a of every reply's bytes: the same builds answer the same (when the engine clock is not live). */
  let sum = 2166136261;
  const c0 = threadCpuMs();
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const r = q.getProfile(users[x % users.length]!, 0, "protobuf");
    if (r.ok) {
      bytes += r.body.length;
      for (let j = 0; j < r.body.length; j++) sum = Math.imul(sum ^ r.body[j]!, 16777619) >>> 0;
    }
  }
  return { us: ((threadCpuMs() - c0) * 1000) / n, bytes: bytes / n, sum };
}

/** FNV-1a of every db's keys and value bytes in key order, and the number of values: what a round left in LMDB. */
function storedDigest(path: string): string {
  const env = open({ path, readOnly: true });
  let sum = 2166136261;
  let values = 0;
  const fold = (b: Uint8Array) => {
    for (let j = 0; j < b.length; j++) sum = Math.imul(sum ^ b[j]!, 16777619) >>> 0;
  };
  for (const name of ["profiles", "memberships", "meta", "chain", "audiences", "aliases", "merging"]) {
    const db = env.openDB({ name, encoding: "binary", keyEncoding: "binary" });
    for (const { key, value } of db.getRange({})) {
      fold(key as Uint8Array);
      fold(value as Uint8Array);
      values++;
    }
  }
  void env.close();
  return `${sum.toString(16)} (${values} values)`;
}

async function round(list: EventBatch[], events: number, lstm: LstmRuntime | undefined, sentiment: SentimentModel): Promise<{ threadUs: number; processUs: number; wallS: number; minor: number; major: number; gcUs: number; alloc: string; digest?: string; lookup?: { us: number; bytes: number; sum: number } }> {
  const dir = mkdtempSync(join(tmpdir(), "portrait-bench-shard-"));
  const partitions = Array.from({ length: PARTITIONS }, (_, p) => p).filter((p) => p % 2 === 0);
  const store = new ProfileStore({ dataDir: dir });
  const actors = new ActorCache(store, 200_000);
  const clock = new EngineClock(CLOCK_DEFAULTS);
  const audiences = new AudienceRunner({ shard: 0, partitions, partitionCount: PARTITIONS, store, actors, profile: PROFILE_DEFAULTS, subjectPrefix: "bench", pseudonymised: false, backfillChunk: 2000, predictor: () => () => undefined });
  const applier = new BatchApplier({
    shard: 0, partitions, store, actors, profile: PROFILE_DEFAULTS,
    validation: { partitions: PARTITIONS, maxEventBytes: 64 * 1024, maxFutureSkewMs: 86_400_000 * 365 * 10 },
    key: (id) => id, pseudonymised: false, models: { lstm, sentiment }, itemEvents: undefined, labels: new CategoryLabels(store), clock, audiences,
    subjects: subjects("bench"), partitionCount: PARTITIONS,
  });
  // Fresh copies: the buffers of a batch are not transferred here, but keep rounds independent anyway.
  const copies = list.map((b) => ({ partition: b.partition, data: b.data.slice(), offsets: b.offsets.slice(), seqs: b.seqs.slice() }));
  await sampling?.start();
  const g0 = { ...gc };
  const t0 = performance.now();
  const c0 = threadCpuMs();
  const p0 = process.cpuUsage();
  let inWindow = 0;
  const waiting: (() => void)[] = [];
  const all: Promise<unknown>[] = [];
  for (const b of copies) {
    const n = b.seqs.length;
    while (inWindow > 0 && inWindow + n > WINDOW) await new Promise<void>((r) => waiting.push(r));
    inWindow += n;
    // A batch arrives as its own message: applied in a macrotask, as a worker takes messages.
    await new Promise((r) => setImmediate(r));
    const r = applier.apply(b).then((res) => {
      clock.observe(res.times);
      inWindow -= n;
      waiting.shift()?.();
    });
    all.push(r);
  }
  await Promise.all(all);
  const threadUs = ((threadCpuMs() - c0) * 1000) / events;
  const pu = process.cpuUsage(p0);
  const wallS = (performance.now() - t0) / 1000;
  await new Promise((r) => setImmediate(r)); // the last GC entries
  const alloc = sampling !== undefined ? await sampling.stop(a.cpu && a.out === "" ? "." : a.out!, "shard-apply", events) : "";
  const gcs = { minor: gc.minor - g0.minor, major: gc.major - g0.major, gcUs: ((gc.ms - g0.ms) * 1000) / events };
  const lookup = QUERIES > 0 ? lookups(QUERIES, [...users], a.reload ? new ActorCache(store, 200_000) : actors, store, clock, lstm) : undefined;
  await store.close();
  const digest = a.digest ? storedDigest(join(dir, "lmdb")) : undefined;
  rmSync(dir, { recursive: true, force: true });
  return { ...(digest !== undefined ? { digest } : {}), threadUs, processUs: (pu.user + pu.system) / events, wallS, ...gcs, alloc, ...(lookup !== undefined ? { lookup } : {}) };
}

const lstm = a.lstm === "off" ? undefined : LstmRuntime.load(currentDir("lstm"));
const sentiment = SentimentModel.load(currentDir("sentiment"));
const { list, events } = batches();
process.stderr.write(`shard-apply: ${events} events of shard 0 in ${list.length} batches; lstm ${lstm?.version ?? "off"}; load ${loadavg().map((x) => x.toFixed(1)).join(" ")}\n`);
for (let r = 0; r < Number(a.rounds); r++) {
  const x = await round(list, events, lstm, sentiment);
  process.stdout.write(`round ${r + 1}: thread ${x.threadUs.toFixed(1)} µs/event, process ${x.processUs.toFixed(1)} µs/event, ${(events / x.wallS).toFixed(0)} events/s wall; ` +
    `GCs per 10k events ${((x.minor * 1e4) / events).toFixed(1)} minor, ${((x.major * 1e4) / events).toFixed(2)} major, GC wall ${x.gcUs.toFixed(1)} µs/event; ` +
    (x.digest !== undefined ? `stored values ${x.digest}; ` : "") + (x.lookup !== undefined ? `profile lookup ${x.lookup.us.toFixed(1)} µs (thread CPU; reply ${x.lookup.bytes.toFixed(0)} B, FNV-1a of the replies ${x.lookup.sum.toString(16)}); ` : "") + `load ${loadavg()[0]!.toFixed(1)}\n` + (x.alloc !== "" ? `  ${x.alloc}\n` : ""));
}
