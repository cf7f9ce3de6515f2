/**
 * Actor memory: the heap a shard's cached actors take, measured after GC,
 * against the estimate the actor cache's byte bound uses
 * (src/actors/state-bytes.ts, ActorCache). The generator's events (the soak's
 * mix) are decoded and applied as a shard applies them (applyEvent, the
 * audience day buckets, an LSTM state of the bundled model's size), one actor
 * per user in a Map as the cache keeps them; the states are then written to
 * LMDB and read back (the cache holds states loaded from LMDB after an
 * eviction), and measured again.
 *
 *   npx tsx --expose-gc bench/actor-memory.ts [--events 400000] [--users 50000] [--lstm-hidden 32] [--record]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { Actor } from "../src/actors/actor.js";
import { observeAudienceEvent } from "../src/actors/audience-state.js";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { actorBytes } from "../src/shard/actor-cache.js";
import { applyEvent, newUserState } from "../src/actors/user-profile.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { decodeEvent } from "../src/wire/event-validation.js";
import { partitionOf } from "../src/wire/partition.js";
import { pb } from "../src/wire/proto.js";
import { generateEvents } from "./generator.js";
import { appendResults, printTable } from "./report.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "400000" },
    users: { type: "string", default: "50000" },
    "lstm-hidden": { type: "string", default: "32" },
    record: { type: "boolean", default: false },
  },
});
const EVENTS = Number(a.events);
const USERS = Number(a.users);
const HIDDEN = Number(a["lstm-hidden"]);
const PARTITIONS = 16;

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --expose-gc (npx tsx --expose-gc bench/actor-memory.ts)");
const heap = () => {
  gc!();
  gc!();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};

const profile = compileProfileOptions();
const validation = { partitions: PARTITIONS, maxEventBytes: 65_536, maxFutureSkewMs: Number.MAX_SAFE_INTEGER / 2, currency: "EUR" };
const now = Date.now();

let base = heap();
let actors: Map<string, Actor> | undefined = new Map<string, Actor>();
for (const ev of generateEvents(EVENTS, { users: USERS, seed: 7 })) {
  const p = partitionOf(ev.userId!, PARTITIONS);
  const r = decodeEvent(pb.Event.encode(ev).finish(), p, now, validation);
  if (!r.ok) continue;
  const e = r.event;
  let actor = actors.get(e.userId);
  if (actor === undefined) {
    actor = { state: newUserState(), lastBatch: 0, batchTypes: 0, referenced: false, lstm: undefined, bytes: 0, bytesAtN: 0 };
    actors.set(e.userId, actor);
  }
  if (actor.lstm === undefined && HIDDEN > 0) {
    actor.lstm = new Float32Array(2 * HIDDEN);
    actor.state.lstm = new Uint8Array(actor.lstm.buffer);
    actor.state.lstmV = "2026-11-22.2";
  }
  applyEvent(actor.state, e, profile);
  observeAudienceEvent(actor.state, e, p);
}
const measure = (m: Map<string, Actor>) => {
  let est = 0;
  for (const [k, x] of m) est += actorBytes(k, x);
  return est;
};
const builtHeap = heap() - base;
const builtEst = measure(actors);
const n = actors.size;

// The same states through LMDB: what the cache holds after a miss.
const dir = mkdtempSync(join(tmpdir(), "portrait-actor-memory-"));
const store = new ProfileStore({ dataDir: dir });
const keys = [...actors.keys()];
const states = [...actors].map(([k, x]) => [k, x.state] as const);
for (let i = 0; i < states.length; i += 5000) await store.commitBatch(0, i + 1, states.slice(i, i + 5000));
actors = undefined;
states.length = 0;
base = heap();
const loaded = new Map<string, Actor>();
for (const k of keys) loaded.set(k, { state: store.getState(k)!, lastBatch: 0, batchTypes: 0, referenced: false, lstm: undefined, bytes: 0, bytesAtN: 0 });
const loadedHeap = heap() - base;
const loadedEst = measure(loaded);
// The cost of the estimate (the cache takes it for every actor a batch changed).
const c0 = process.cpuUsage();
const rounds = 5;
for (let i = 0; i < rounds; i++) measure(loaded);
const c1 = process.cpuUsage(c0);
const usPerEstimate = (c1.user + c1.system) / (rounds * loaded.size);
await store.close();
rmSync(dir, { recursive: true, force: true });

const kib = (b: number) => (b / n / 1024).toFixed(2);
const rows = [
  ["built by applying events", String(n), kib(builtHeap), kib(builtEst), (builtEst / builtHeap).toFixed(2)],
  ["loaded from LMDB", String(loaded.size), kib(loadedHeap), kib(loadedEst), (loadedEst / loadedHeap).toFixed(2)],
];
const header = ["actors", "count", "measured KiB per actor (heap + ArrayBuffers after GC)", "estimated KiB per actor (actorBytes)", "estimate / measured"];
printTable("actor memory", header, rows);
const notes = [
  `- ${EVENTS} generator events (seed 7) over ${USERS} users, ${(EVENTS / n).toFixed(1)} events per actor; LSTM state of ${HIDDEN} hidden units; no audience definitions (day buckets only).`,
  `- One estimate (actorBytes of a loaded actor) takes ${usPerEstimate.toFixed(2)} µs of CPU.`,
];
for (const l of notes) console.log(l);
if (a.record) appendResults("actor memory: measured against the cache's estimate", `npx tsx --expose-gc bench/actor-memory.ts --events ${EVENTS} --users ${USERS} --lstm-hidden ${HIDDEN} --record`, header, rows, notes);
