/**
 * The recs index's intake cost (observeItemEvent: catalog, co-visitation,
 * trending, sessions, sequential rules) per item event, in CPU time, on the
 * max-ingest generator mix: the first half of the stream while the tables
 * fill, the second half with every table at its cap (what a long-running
 * engine pays for each event). CPU time (process.cpuUsage), not wall time,
 * so that a shared machine moves it less; compare builds back to back.
 *
 *   npx tsx bench/recs-intake.ts [--events 600000] [--users 400000] [--seed 7]
 *
 * Run with `node --expose-gc` to print the index's heap after the stream too
 * (V8 heap used and array buffers, after a full GC, less what was in use before the index was built).
 */
import { parseArgs } from "node:util";
import { compileRecsOptions } from "../src/recs/recs-options.js";
import { createRecsIndex, observeItemEvent, toItemEvent } from "../src/recs/recs-index.js";
import type { ItemEvent } from "../src/recs/types.js";
import { generateEvents } from "./generator.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "600000" },
    users: { type: "string", default: "400000" },
    seed: { type: "string", default: "7" },
  },
});

const events: ItemEvent[] = [];
for (const e of generateEvents(Number(a.events), { users: Number(a.users), seed: Number(a.seed) })) {
  const ie = toItemEvent(e);
  if (ie !== undefined) events.push(ie);
}
const gc = (globalThis as { gc?: () => void }).gc;
gc?.();
gc?.();
const m0 = process.memoryUsage();
const index = createRecsIndex(compileRecsOptions());
const half = Math.floor(events.length / 2);
const cpuPerEvent = (from: number, to: number): number => {
  const c0 = process.cpuUsage();
  for (let i = from; i < to; i++) observeItemEvent(index, events[i]!);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / Math.max(1, to - from);
};
const filling = cpuPerEvent(0, half);
const full = cpuPerEvent(half, events.length);
console.log(`recs index intake, ${events.length} item events: ${filling.toFixed(2)} µs CPU/event while the tables fill, ` +
  `${full.toFixed(2)} µs with them at their caps (catalog ${index.catalog.size}, co-visitation ${index.covisitation.size}, ` +
  `trending ${index.trending.size}, sessions ${index.sessions.size}, rule items ${index.rules.size})`);
if (gc !== undefined) {
  gc();
  gc();
  const m = process.memoryUsage();
  const mib = (b: number) => (b / 1048576).toFixed(1);
  console.log(`recs index heap after GC: ${mib(m.heapUsed - m0.heapUsed)} MiB V8 heap, ${mib(m.arrayBuffers - m0.arrayBuffers)} MiB array buffers ` +
    `(byte estimate ${mib(index.bytes.total)} MiB)`);
}
