/**
 * The recs intake as the engine runs it, without the rest of the engine: this
 * thread plays a shard (builds each batch's item events with pushItemEvent,
 * one owner object per user as the shard's actors, and posts them through an
 * ItemEventSender), and the real recs worker receives and observes them
 * (src/threads/item-event-queue.ts, src/recs/recs.worker.ts). Prints CPU per
 * item event, the first half of the stream (tables filling) and the second,
 * for the whole process (sender, message passing, worker) and for the recs
 * worker's thread alone (from /proc/self/task). Compare builds back to back.
 *
 *   node dist-bench/bench/recs-intake-port.js [--events 300000] [--users 200000] [--seed 7] [--batch 500]
 *
 * The defaults are max-ingest's generator mix (200,000 users, seed 7); its batches hold ≈ 430 messages.
 */
import { readdirSync } from "node:fs";
import { parseArgs } from "node:util";
import { createLogger } from "../src/obs/logger.js";
import { RecsHost } from "../src/recs/recs-host.js";
import { compileRecsOptions } from "../src/recs/recs-options.js";
import { toItemEvent } from "../src/recs/recs-index.js";
import type { ItemEvent } from "../src/recs/types.js";
import { ItemEventSender, newItemEventBatch, pushItemEvent } from "../src/threads/item-event-queue.js";
import { generateEvents } from "./generator.js";
import { procTicks } from "./harness/proc-stats.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "300000" },
    users: { type: "string", default: "200000" },
    seed: { type: "string", default: "7" },
    batch: { type: "string", default: "500" },
  },
});
const batchSize = Number(a.batch);

const events: ItemEvent[] = [];
const owners: object[] = [];
const ownerOf = new Map<string, object>();
for (const e of generateEvents(Number(a.events), { users: Number(a.users), seed: Number(a.seed) })) {
  const ie = toItemEvent(e);
  if (ie === undefined) continue;
  events.push(ie);
  let o = ownerOf.get(ie.userId);
  if (o === undefined) ownerOf.set(ie.userId, (o = { itemEventCode: -1 }));
  owners.push(o);
}

/** CPU ticks (user + system, 1/100 s) of each thread of this process. */
function threadTicks(): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync("/proc/self/task")) out.set(tid, procTicks(process.pid, Number(tid)));
  return out;
}

const log = createLogger("warn", { component: "bench" });
const { host, itemEvents } = await RecsHost.start({ recs: compileRecsOptions(), logLevel: "warn" }, 1, (err) => {
  throw err;
});
const sender = new ItemEventSender({ port: itemEvents.ports[0]!, queued: itemEvents.queued, maxQueued: itemEvents.maxQueued, maxWaitMs: 60_000 }, log);

async function feed(from: number, to: number): Promise<{ all: number; worker: number }> {
  const before = (await host.stats()).itemEvents;
  const t0 = threadTicks();
  const c0 = process.cpuUsage();
  for (let i = from; i < to; i += batchSize) {
    const end = Math.min(to, i + batchSize);
    const b = newItemEventBatch(end - i);
    // The owner (4th argument) is the shard's actor since 2026-12-08; a build before ignores it.
    for (let j = i; j < end; j++) push(b, events[j]!, (j & 3) !== 0, owners[j]!);
    const p = sender.post(b);
    if (p !== undefined) await p;
  }
  while ((await host.stats()).itemEvents < before + (to - from)) await new Promise((r) => setTimeout(r, 5));
  const c = process.cpuUsage(c0);
  const t1 = threadTicks();
  // The recs worker: the thread that took the most CPU in the interval besides this one.
  let worker = 0;
  for (const [tid, ticks] of t1) if (tid !== String(process.pid)) worker = Math.max(worker, ticks - (t0.get(tid) ?? 0));
  const n = Math.max(1, to - from);
  return { all: (c.user + c.system) / n, worker: (worker * 10_000) / n };
}

const push = pushItemEvent as (b: ReturnType<typeof newItemEventBatch>, e: ItemEvent, newToUser: boolean, owner: object) => void;
const half = Math.floor(events.length / 2);
const filling = await feed(0, half);
const full = await feed(half, events.length);
const s = await host.stats();
console.log(`recs intake through the queue, ${events.length} item events, batches of ${batchSize}: µs CPU per event, whole process / recs worker thread: ` +
  `${filling.all.toFixed(2)} / ${filling.worker.toFixed(2)} while the tables fill, ${full.all.toFixed(2)} / ${full.worker.toFixed(2)} after ` +
  `(catalog ${s.items}, co-visitation ${s.covisitationItems}, sessions ${s.sessions}; dropped ${sender.dropped})`);
await host.close();
