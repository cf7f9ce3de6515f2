/**
 * The recs worker's live heap over a soak, one thread, no engine: the soak's
 * stream (the calibrated generator, --users users, a pool of --pool events
 * replayed round after round with the same timestamps, as
 * `portrait bench soak` publishes it) fed to the recommendation index
 * (observeItemEvent) and to the worker's item counts (as recs.worker.ts keeps
 * them). Every --every events: the heap after a forced GC, the array buffers,
 * the index's byte estimate and the tables' sizes; at the end the slope of
 * the heap over the second half, MiB per million events (the soak applies
 * about 0.47 M item events a minute at 7,800 events/s).
 *
 * --scale s multiplies every count cap (catalog, co-visitation, trending,
 * sessions, rules) by s: with --users, --pool, --events and --every scaled
 * alike, the same stream in miniature (the full size takes an hour of CPU on a
 * loaded machine).
 *
 * --snapshots DIR writes a heap snapshot at each sample to DIR.
 *
 *   node --expose-gc dist-bench/bench/recs-soak-memory.js [--users 200000] [--pool 2300000] [--events 14000000] [--every 1000000] [--scale 1] [--snapshots DIR]
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { writeHeapSnapshot } from "node:v8";
import { compileRecsOptions, RECS_DEFAULTS } from "../src/recs/recs-options.js";
import { createRecsIndex, observeItemEvent, toItemEvent } from "../src/recs/recs-index.js";
import type { ItemEvent } from "../src/recs/types.js";
import { EVENT_WEIGHTS } from "../src/actors/user-profile.js";
import { generateEvents } from "./generator.js";

const { values: a } = parseArgs({
  options: {
    users: { type: "string", default: "200000" },
    pool: { type: "string", default: "2300000" },
    events: { type: "string", default: "14000000" },
    every: { type: "string", default: "1000000" },
    seed: { type: "string", default: "7" },
    scale: { type: "string", default: "1" },
    snapshots: { type: "string", default: "" },
  },
});
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with node --expose-gc");
const MiB = 2 ** 20;

const pool: ItemEvent[] = [];
for (const e of generateEvents(Number(a.pool), { users: Number(a.users), items: Math.max(1000, Math.round(1e6 * Number(a.scale))), eventsPerSecond: 1000 * Number(a.scale), seed: Number(a.seed) })) {
  const ie = toItemEvent(e);
  if (ie !== undefined) pool.push(ie);
}
const heap = (): { used: number; buffers: number } => {
  gc!();
  gc!();
  const m = process.memoryUsage();
  return { used: m.heapUsed, buffers: m.arrayBuffers };
};
const m0 = heap();
const scale = Number(a.scale);
const cap = (n: number) => Math.max(1, Math.round(n * scale));
const options = compileRecsOptions({
  catalog: { maxItems: cap(RECS_DEFAULTS.catalog.maxItems), maxUnavailableEvicted: cap(RECS_DEFAULTS.catalog.maxUnavailableEvicted) },
  covisitation: { maxItems: cap(RECS_DEFAULTS.covisitation.maxItems), maxUsers: cap(RECS_DEFAULTS.covisitation.maxUsers) },
  trending: { maxItems: cap(RECS_DEFAULTS.trending.maxItems), maxCategories: cap(RECS_DEFAULTS.trending.maxCategories) },
  sessions: { maxSessions: cap(RECS_DEFAULTS.sessions.maxSessions), maxItems: cap(RECS_DEFAULTS.sessions.maxItems) },
  sequentialRules: { maxItems: cap(RECS_DEFAULTS.sequentialRules.maxItems) },
});
const index = createRecsIndex(options);
/** The worker's DeepFM item counts (recs.worker.ts #counts, #categoryCounts), kept the same way. */
const counts = new Map<string, { popularity: number; users: number; firstMs: number; lastMs: number }>();
const categoryCounts = new Map<string, { n: number }>();
const total = Number(a.events);
const every = Number(a.every);
const points: Array<[number, number]> = [];
console.log(`pool ${pool.length} item events (${a.users} users), replayed to ${total}; heap before ${(m0.used / MiB).toFixed(0)} MiB`);
for (let i = 0; i < total; i++) {
  const e = pool[i % pool.length]!;
  const item = observeItemEvent(index, e);
  if (item !== undefined && (EVENT_WEIGHTS[e.type] ?? 0) > 0) {
    let c = counts.get(item.itemId);
    if (c === undefined) {
      if (counts.size >= Math.min(2 * options.catalog.maxItems, 2 * index.catalog.size + 1024)) {
        for (const id of counts.keys()) if (index.catalog.get(id) === undefined) counts.delete(id);
      }
      c = { popularity: 0, users: 0, firstMs: e.timestampMs, lastMs: e.timestampMs };
      counts.set(item.itemId, c);
    }
    c.popularity++;
    if (item.categoryId !== "") {
      const k = categoryCounts.get(item.categoryId);
      if (k !== undefined) k.n++;
      else categoryCounts.set(item.categoryId, { n: 1 });
    }
  }
  if ((i + 1) % every === 0) {
    const m = heap();
    const used = (m.used - m0.used) / MiB;
    points.push([(i + 1) / 1e6, used]);
    if (a.snapshots !== "") writeHeapSnapshot(join(a.snapshots, `recs-soak-${i + 1}.heapsnapshot`));
    console.log(`${((i + 1) / 1e6).toFixed(1)} M events: heap ${used.toFixed(1)} MiB, array buffers ${((m.buffers - m0.buffers) / MiB).toFixed(1)} MiB, estimate ${(index.bytes.total / MiB).toFixed(1)} MiB; `
      + `catalog ${index.catalog.size}, covisitation ${index.covisitation.size}, trending ${index.trending.size}, sessions ${index.sessions.size}, `
      + `session index ${index.sessions.itemCount}, rules ${index.rules.size}, item ids ${index.itemIds.size}, user ids ${index.userIds.size}, `
      + `counts ${counts.size}, categories ${categoryCounts.size}; estimate by table ${JSON.stringify(index.bytes.byTable())}`);
  }
}
const half = points.filter(([x]) => x >= total / 2e6);
const n = half.length;
const mx = half.reduce((s, [x]) => s + x, 0) / n;
const my = half.reduce((s, [, y]) => s + y, 0) / n;
const slope = half.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0) / half.reduce((s, [x]) => s + (x - mx) ** 2, 0);
console.log(`heap slope over the second half: ${slope.toFixed(2)} MiB per million item events`);
