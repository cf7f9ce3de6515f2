/**
 * Entry file of the benchmark's child processes (bench/harness/ipc.ts forks
 * it with PORTRAIT_BENCH_ROLE set):
 *   engine    an in-process Engine with the bundled models, its metrics read over IPC;
 *   publisher pre-encodes its share of the events (the partitions p with
 *             p % of === index), then publishes them open-loop at a rate;
 *   echo      a trivial request-reply responder (the raw request-reply baseline).
 */
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setFlagsFromString, writeHeapSnapshot } from "node:v8";
import { connect, headers, type Msg, type NatsConnection } from "nats";
import { partitionOf } from "../../src/wire/partition.js";
import { subjects } from "../../src/bus/subjects.js";
import type { EngineOptions } from "../../src/config/engine-options.js";
import { readDataset } from "../../src/data/datasets.js";
import type { DatasetFormat } from "../../src/data/types.js";
import { Engine } from "../../src/engine.js";
import { EventType, pb, type IEvent } from "../../src/wire/proto.js";
import { generateEvents } from "../generator.js";
import { syntheticEvents } from "../synthetic.js";
import { serve, sleep } from "./ipc.js";
import { INGEST_STAGES, QUERY_STAGES, promCounter, promHist, type PromHist } from "./prom.js";

/** Where a publisher's events come from. */
export type EventSource =
  | { kind: "dataset"; format: DatasetFormat; file: string }
  | { kind: "generator"; users: number; seed: number }
  | { kind: "simple"; users: number; seed: number }
  /** Users offset, offset + 1, ... in order, `eventsPerUser` events each (a view, then carts): state for every user, for the scale run. */
  | { kind: "users"; offset: number; eventsPerUser: number };

export interface EngineSnapshot {
  applied: number;
  deadLetters: number;
  /** Applied + dead-lettered. */
  processed: number;
  lagByPartition: Record<string, number>;
  api: Record<string, PromHist>;
  apiCodes: Record<string, number>;
  /** Item events the shards dropped because the recs worker's queue was full (portrait_recs_item_events_dropped_total). */
  recsItemEventsDropped: number;
  /** Item events posted to the recs worker and not observed yet (portrait_recs_item_events_queued). */
  recsItemEventsQueued: number;
  batchMessages: PromHist;
  batchSeconds: PromHist;
  /** The freshness path's stages of each batch's oldest event (portrait_ingest_stage_seconds), by stage. */
  stages: Record<string, PromHist>;
  /** A profile lookup's stages between main and its shard (portrait_query_stage_seconds), by stage. */
  queryStages: Record<string, PromHist>;
  inference: { batchRows: PromHist; queue: PromHist; run: PromHist; request: PromHist; rejected: Record<string, number> };
  /** Main thread event-loop delay since the previous snapshot, ms. */
  loop: { p50: number; p99: number; max: number };
  heapUsedBytes: number;
}

/** Where the engine's memory is, for the soak's breakdown (EngineMemory per sample; RSS itself is read from /proc by the rig). */
export interface EngineMemory {
  /** process.memoryUsage() of the engine's main thread, bytes (rss is the whole process). */
  main: { rss: number; heapTotal: number; heapUsed: number; external: number; arrayBuffers: number };
  /** portrait_thread_heap_bytes: "<thread>/<kind>" (main, shard-<i>, recs; used, total, external, limit) -> bytes. */
  heaps: Record<string, number>;
  /** portrait_shard_actors_cached: shard -> actors. */
  actors: Record<string, number>;
  /** portrait_recs_state_entries: table -> entries. */
  recsTables: Record<string, number>;
  /** Every other gauge of the engine named in MEMORY_GAUGES, by name then label values. */
  gauges: Record<string, Record<string, number>>;
}

/** Gauges of the engine's bounded in-memory state read into EngineMemory.gauges (absent ones are skipped). */
const MEMORY_GAUGES = ["portrait_shard_actor_cache_bytes", "portrait_recs_feedback_replies_kept"];

function engineRole(): void {
  let engine: Engine | undefined;
  let tReady = 0;
  const loop = monitorEventLoopDelay({ resolution: 2 });
  const totals = async () => {
    const m = engine!.metrics;
    const applied = await m.total(m.eventsApplied);
    const deadLetters = await m.total(m.deadLetters);
    return { applied, deadLetters, processed: applied + deadLetters };
  };
  serve({
    async start(a: { natsUrl: string; dataDir: string; prefix: string; partitions: number; options?: EngineOptions }) {
      const t0 = performance.now();
      // PORTRAIT_BENCH_ENGINE_OPTIONS='{"maxShardQueueEvents":100000}': engine options of every run's engine (A/B runs of an option).
      const extra = JSON.parse(process.env.PORTRAIT_BENCH_ENGINE_OPTIONS ?? "{}") as EngineOptions;
      // PORTRAIT_BENCH_V8_FLAGS='--trace-gc': V8 flags of the engine process, set before its workers start (they apply to every isolate).
      if (process.env.PORTRAIT_BENCH_V8_FLAGS) setFlagsFromString(process.env.PORTRAIT_BENCH_V8_FLAGS);
      engine = await Engine.start({
        natsUrl: a.natsUrl, embeddedNats: "never", subjectPrefix: a.prefix, partitions: a.partitions, dataDir: a.dataDir, httpPort: -1, logLevel: "warn",
        ...extra, ...(a.options ?? {}),
      });
      tReady = performance.now();
      loop.enable();
      return {
        startMs: tReady - t0,
        processedAtReady: (await totals()).processed,
        workers: engine.config.workers,
        models: (await engine.metrics.modelInfo.get()).values.map((v) => `${v.labels.model}@${v.labels.version}`),
        inference: engine.config.inference,
      };
    },
    /** Waits until `n` events are applied or dead-lettered; ms since ready. */
    async waitProcessed(a: { n: number; timeoutMs: number }) {
      const deadline = performance.now() + a.timeoutMs;
      let n = (await totals()).processed;
      while (n < a.n && performance.now() < deadline) {
        await sleep(5);
        n = (await totals()).processed;
      }
      return { processed: n, msSinceReady: performance.now() - tReady, reached: n >= a.n };
    },
    async snapshot(): Promise<EngineSnapshot> {
      const reg = engine!.metrics.registry;
      const api: Record<string, PromHist> = {};
      // Keyed by the scenarios' names; the values are the engine's endpoint labels.
      for (const [name, endpoint] of [["profile", "profile.get"], ["recommend", "recommend"]] as const) api[name] = await promHist(reg, "portrait_api_request_seconds", { endpoint });
      const s: EngineSnapshot = {
        ...(await totals()),
        lagByPartition: await promCounter(reg, "portrait_ingest_lag_messages"),
        api,
        apiCodes: await promCounter(reg, "portrait_api_requests_total"),
        recsItemEventsDropped: await engine!.metrics.total(engine!.metrics.recsItemEventsDropped),
        recsItemEventsQueued: engine!.metrics.recsQueuedItemEvents() ?? 0,
        batchMessages: await promHist(reg, "portrait_ingest_batch_size_messages"),
        batchSeconds: await promHist(reg, "portrait_ingest_batch_seconds"),
        stages: Object.fromEntries(await Promise.all(INGEST_STAGES.map(async (stage) => [stage, await promHist(reg, "portrait_ingest_stage_seconds", { stage })] as const))),
        queryStages: Object.fromEntries(await Promise.all(QUERY_STAGES.map(async (stage) => [stage, await promHist(reg, "portrait_query_stage_seconds", { stage })] as const))),
        inference: {
          batchRows: await promHist(reg, "portrait_inference_batch_rows"),
          queue: await promHist(reg, "portrait_inference_queue_seconds"),
          run: await promHist(reg, "portrait_inference_run_seconds"),
          request: await promHist(reg, "portrait_inference_request_seconds"),
          rejected: await promCounter(reg, "portrait_inference_rejected_total"),
        },
        loop: { p50: loop.percentile(50) / 1e6, p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 },
        heapUsedBytes: process.memoryUsage().heapUsed,
      };
      loop.reset();
      return s;
    },
    /** The engine's memory by component (the soak samples it). */
    async memory(): Promise<EngineMemory> {
      const reg = engine!.metrics.registry;
      const m = process.memoryUsage();
      const gauges: Record<string, Record<string, number>> = {};
      for (const g of MEMORY_GAUGES) if (reg.getSingleMetric(g) !== undefined) gauges[g] = await promCounter(reg, g);
      return {
        main: { rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers },
        heaps: await promCounter(reg, "portrait_thread_heap_bytes"),
        actors: await promCounter(reg, "portrait_shard_actors_cached"),
        recsTables: await promCounter(reg, "portrait_recs_state_entries"),
        gauges,
      };
    },
    /** Writes a heap snapshot of the engine's main thread into `dir`; its path. */
    heapSnapshot(a: { dir: string }) {
      return writeHeapSnapshot(join(a.dir, `engine-main-${Date.now()}.heapsnapshot`));
    },
    async stop() {
      await engine?.close();
      setImmediate(() => process.exit(0));
      return true;
    },
  });
}

/** The events of a source, `count` of them: a data set is replayed in rounds with new ids and later timestamps. */
async function* sourceEvents(src: EventSource, count: number): AsyncGenerator<IEvent> {
  if (src.kind === "generator") return yield* generateEvents(count, { users: src.users, seed: src.seed });
  if (src.kind === "simple") return yield* syntheticEvents(count, { users: src.users, seed: src.seed });
  if (src.kind === "users") {
    const t0 = Date.UTC(2024, 0, 1);
    for (let i = 0; i < count; i++) {
      const u = src.offset + Math.floor(i / src.eventsPerUser);
      const k = i % src.eventsPerUser;
      const item = (Math.imul(u, 2654435761) >>> 0) % 100_000;
      yield {
        eventId: `scale-${u}-${k}`, userId: `su${u}`, type: k === 0 ? EventType.VIEW : EventType.ADD_TO_CART, timestampMs: t0 + u + k,
        itemId: `i${item}`, categoryId: `c${item % 4000}`, price: k === 0 ? 0 : 1 + (item % 500), quantity: 0,
      };
    }
    return;
  }
  const slice: IEvent[] = [];
  let lo = Infinity;
  let hi = -Infinity;
  for await (const e of readDataset(src.format, src.file)) {
    slice.push(e);
    lo = Math.min(lo, e.timestampMs);
    hi = Math.max(hi, e.timestampMs);
    if (slice.length >= count) break;
  }
  const shiftMs = hi - lo + 60_000;
  for (let i = 0; i < count; i++) {
    const round = Math.floor(i / slice.length);
    const e = slice[i % slice.length]!;
    yield round === 0 ? e : { ...e, eventId: `${e.eventId}-r${round}`, timestampMs: (e.timestampMs as number) + round * shiftMs };
  }
}

function publisherRole(): void {
  let nc: NatsConnection | undefined;
  let subjectsOf: string[] = [];
  let arena = new Uint8Array(0);
  let offsets = new Uint32Array(0);
  let parts = new Uint16Array(0);
  let ids: string[] = [];
  let n = 0;
  /** The next prepared event to publish: each is published once, across start() calls. */
  let cursor = 0;
  /** With `cycle`, the prepared events are published again once all were, round after round, under new message ids. */
  let cycle = false;
  let round = 0;
  let withMsgId = true;
  let run: { stop: boolean; sent: number; t0: number; done: Promise<void> } | undefined;
  serve({
    /** Pre-encodes this publisher's share of `count` events of the source. */
    async init(a: { natsUrl: string; prefix: string; partitions: number; source: EventSource; count: number; index: number; of: number; msgId: boolean; idPrefix?: string; cycle?: boolean }) {
      nc = await connect({ servers: a.natsUrl, name: `bench-publisher-${a.index}`, noAsyncTraces: true });
      const s = subjects(a.prefix);
      subjectsOf = Array.from({ length: a.partitions }, (_, p) => s.events(p));
      withMsgId = a.msgId;
      cycle = a.cycle === true;
      round = 0;
      const chunks: Uint8Array[] = [];
      const offs: number[] = [0];
      const ps: number[] = [];
      ids = [];
      const users = new Set<string>();
      let bytes = 0;
      for await (const e of sourceEvents(a.source, a.count)) {
        const p = partitionOf(e.userId!, a.partitions);
        if (p % a.of !== a.index) continue;
        const ev = a.idPrefix !== undefined ? { ...e, eventId: `${a.idPrefix}${e.eventId}` } : e;
        const data = pb.Event.encode(ev).finish();
        chunks.push(data);
        bytes += data.length;
        offs.push(bytes);
        ps.push(p);
        ids.push(ev.eventId!);
        if (a.source.kind !== "users") users.add(ev.userId!);
      }
      arena = new Uint8Array(bytes);
      let o = 0;
      for (const c of chunks) {
        arena.set(c, o);
        o += c.length;
      }
      offsets = Uint32Array.from(offs);
      parts = Uint16Array.from(ps);
      n = ps.length;
      cursor = 0;
      const distinct = a.source.kind === "users" ? new Set(ids.map((id) => id.slice(0, id.lastIndexOf("-")))).size : users.size;
      return { events: n, users: distinct, bytes };
    },
    /** Publishes the next `count` prepared events open-loop at `rate`/s (0 = as fast as possible), for at most maxSeconds. */
    start(a: { rate: number; count: number; maxSeconds: number }) {
      if (run !== undefined) throw new Error("already publishing");
      const count = cycle ? a.count : Math.min(a.count, n - cursor);
      const r = { stop: false, sent: 0, t0: performance.now(), done: Promise.resolve() };
      r.done = (async () => {
        let flushed = 0;
        while (!r.stop && r.sent < count && performance.now() - r.t0 < a.maxSeconds * 1000) {
          const due = a.rate === 0 ? count : Math.min(count, Math.floor(((performance.now() - r.t0) * a.rate) / 1000));
          const upTo = Math.min(due, r.sent + 5000);
          for (; r.sent < upTo; r.sent++) {
            if (cursor === n) {
              if (!cycle || n === 0) break;
              cursor = 0;
              round++;
            }
            const i = cursor++;
            const data = arena.subarray(offsets[i]!, offsets[i + 1]!);
            if (withMsgId) {
              const h = headers();
              h.set("Nats-Msg-Id", round === 0 ? ids[i]! : `${ids[i]!}-r${round}`);
              nc!.publish(subjectsOf[parts[i]!]!, data, { headers: h });
            } else nc!.publish(subjectsOf[parts[i]!]!, data);
          }
          if (r.sent - flushed >= 20_000) {
            flushed = r.sent;
            await nc!.flush();
          }
          if (a.rate === 0) await new Promise((res) => setImmediate(res));
          else await sleep(1);
        }
        await nc!.flush();
      })();
      run = r;
      return true;
    },
    /** Stops publishing (or waits for the run to end by itself with `wait`); what was sent. */
    async halt(a: { wait?: boolean }) {
      if (run === undefined) return { sent: 0, seconds: 0 };
      if (a.wait !== true) run.stop = true;
      await run.done;
      const r = { sent: run.sent, seconds: (performance.now() - run.t0) / 1000 };
      run = undefined;
      return r;
    },
    /** Up to `max` distinct user ids among the prepared events (for queries). */
    users(a: { max: number }) {
      const out = new Set<string>();
      for (let i = 0; i < n && out.size < a.max; i++) out.add(pb.Event.decode(arena.subarray(offsets[i]!, offsets[i + 1]!)).userId);
      return [...out];
    },
    remaining() {
      return n - cursor;
    },
    async stop() {
      if (run !== undefined) run.stop = true;
      await run?.done;
      await nc?.close();
      setImmediate(() => process.exit(0));
      return true;
    },
  });
}

function echoRole(): void {
  let nc: NatsConnection | undefined;
  let payload = new Uint8Array(0);
  serve({
    async start(a: { natsUrl: string; subject: string; replyBytes: number }) {
      nc = await connect({ servers: a.natsUrl, name: "bench-echo", noAsyncTraces: true });
      payload = new Uint8Array(a.replyBytes).fill(0x61);
      nc.subscribe(a.subject, { callback: (err, m: Msg) => (err ? undefined : m.respond(payload)) });
      await nc.flush();
      return true;
    },
    setPayload(a: { bytes: number }) {
      payload = new Uint8Array(a.bytes).fill(0x61);
      return true;
    },
    async stop() {
      await nc?.close();
      setImmediate(() => process.exit(0));
      return true;
    },
  });
}

const role = process.env.PORTRAIT_BENCH_ROLE;
if (role === "engine") engineRole();
else if (role === "publisher") publisherRole();
else if (role === "echo") echoRole();
else throw new Error(`bench/harness/roles: unknown PORTRAIT_BENCH_ROLE ${JSON.stringify(role)}`);
