/**
 * Recommendation state memory: heap bytes per item and per session of the
 * recs worker's index (catalog, co-visitation, trending, sessions and the
 * item -> sessions index, sequential rules), one thread, on a synthetic
 * stream of anonymous sessions (each session a new user, as on Yoochoose:
 * the worst case for the per-user tables).
 *
 * The stream: sessions in time order, 1 minute apart (so a session never
 * continues into the next), each of 1 + a geometric number of clicks (mean
 * --session-length), items drawn half from a skewed head (item = N * u^3) and
 * half uniformly from --items items, 1,000 categories.
 *
 * 1. Linear cost. Three fills with every cap raised above the fill (nothing
 *    is evicted): (I, S), (2I, S), (I, 2S) items and sessions. Heap after a
 *    forced GC = a * items + b * sessions + c, solved exactly from the three,
 *    with items and sessions as the tables count them. a and b extrapolate to
 *    1M items and 10M kept sessions.
 * 2. The caps. One fill at the default count caps with --default-sessions
 *    sessions (more than maxSessions) and no byte bound: the heap the count
 *    caps bound, and the table sizes.
 * 3. The byte bound. The same fill with maxStateBytes = --state-mib MiB:
 *    the heap, the tables' own estimate (src/recs/recs-bytes.ts) and its
 *    ratio to the heap. Every fill's row gives estimate / heap.
 *
 *   npx tsx --expose-gc bench/recs-memory.ts [--items 50000] [--sessions 50000] [--session-length 5]
 *       [--default-sessions 400000] [--state-mib 64] [--record]
 */
import { parseArgs } from "node:util";
import { compileRecsOptions, type RecsOptions } from "../src/recs/recs-options.js";
import { createRecsIndex, observeItemEvent, type RecsIndex } from "../src/recs/recs-index.js";
import type { ItemEvent } from "../src/recs/types.js";
import { EventType } from "../src/wire/proto.js";
import { appendResults, printTable } from "./report.js";

const { values: a } = parseArgs({
  options: {
    items: { type: "string", default: "50000" },
    sessions: { type: "string", default: "50000" },
    "session-length": { type: "string", default: "5" },
    "default-sessions": { type: "string", default: "400000" },
    "state-mib": { type: "string", default: "64" },
    record: { type: "boolean", default: false },
  },
});
const ITEMS = Number(a.items);
const SESSIONS = Number(a.sessions);
const MEAN_LEN = Number(a["session-length"]);
const DEFAULT_SESSIONS = Number(a["default-sessions"]);
const STATE_MIB = Number(a["state-mib"]);
/** A byte bound no fill here reaches: the count caps alone. */
const NO_BYTE_BOUND = 2 ** 50;

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --expose-gc (npx tsx --expose-gc bench/recs-memory.ts)");

function heapBytes(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const T0 = Date.UTC(2026, 0, 1);

/** Feeds `sessions` sessions over `items` items into idx; returns the events fed. */
function fill(idx: RecsIndex, items: number, sessions: number, seed: number): number {
  const r = rng(seed);
  const p = 1 / MEAN_LEN;
  let events = 0;
  for (let s = 0; s < sessions; s++) {
    const userId = `u${seed}-${s}`;
    let len = 1;
    while (r() > p && len < 200) len++;
    for (let k = 0; k < len; k++) {
      const item = r() < 0.5 ? Math.floor(items * r() ** 3) : Math.floor(items * r());
      const e: ItemEvent = {
        userId, itemId: `i${item}`, type: EventType.VIEW, timestampMs: T0 + s * 60_000 + k * 1000,
        categoryId: `c${item % 1000}`, categoryPath: "", brand: "", price: 10, currency: "", title: "",
      };
      observeItemEvent(idx, e);
      events++;
    }
  }
  return events;
}

interface Point { items: number; sessions: number; events: number; bytes: number; estimate: number; seconds: number; sizes: Record<string, number> }

function sizes(idx: RecsIndex): Record<string, number> {
  return {
    catalog: idx.catalog.size, covisitation: idx.covisitation.size, trending: idx.trending.size,
    sessions: idx.sessions.size, "session index items": idx.sessions.itemCount, rules: idx.rules.size,
  };
}

function measure(options: RecsOptions, items: number, sessions: number, seed: number): Point {
  const before = heapBytes();
  const t0 = performance.now();
  const idx = createRecsIndex(compileRecsOptions(options));
  const events = fill(idx, items, sessions, seed);
  const seconds = (performance.now() - t0) / 1000;
  const bytes = heapBytes() - before;
  const s = sizes(idx);
  const estimate = idx.bytes.total;
  const p = { items: idx.catalog.size, sessions: idx.sessions.size, events, bytes, estimate, seconds, sizes: s };
  process.stderr.write(`fill ${items} items x ${sessions} sessions: ${events} events in ${seconds.toFixed(1)} s, ${(bytes / 2 ** 20).toFixed(1)} MiB`
    + ` (estimate ${(estimate / 2 ** 20).toFixed(1)} MiB, ${idx.bytes.evictions} evicted by bytes); ${JSON.stringify(s)}; ${JSON.stringify(idx.bytes.byTable())}\n`);
  return p;
}

/** Every cap above what `items` x `sessions` can fill. */
function uncapped(items: number, sessions: number): RecsOptions {
  const n = Math.max(items, sessions) * 2;
  return {
    maxStateBytes: NO_BYTE_BOUND,
    catalog: { maxItems: n },
    covisitation: { maxItems: n, maxUsers: n },
    trending: { maxItems: n },
    sessions: { maxSessions: n, maxItems: n },
    sequentialRules: { maxItems: n },
  };
}

function solve3(p: Point[]): { a: number; b: number; c: number } {
  // bytes = a*items + b*sessions + c, three equations (Cramer's rule).
  const [x, y, z] = p as [Point, Point, Point];
  const det = (m: number[][]) => m[0]![0]! * (m[1]![1]! * m[2]![2]! - m[1]![2]! * m[2]![1]!) - m[0]![1]! * (m[1]![0]! * m[2]![2]! - m[1]![2]! * m[2]![0]!) + m[0]![2]! * (m[1]![0]! * m[2]![1]! - m[1]![1]! * m[2]![0]!);
  const A = [[x.items, x.sessions, 1], [y.items, y.sessions, 1], [z.items, z.sessions, 1]];
  const B = [x.bytes, y.bytes, z.bytes];
  const d = det(A);
  const col = (j: number) => det(A.map((row, i) => row.map((v, k) => (k === j ? B[i]! : v))));
  return { a: col(0) / d, b: col(1) / d, c: col(2) / d };
}

function main(): void {
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  const pts = [
    measure(uncapped(2 * ITEMS, 2 * SESSIONS), ITEMS, SESSIONS, 1),
    measure(uncapped(2 * ITEMS, 2 * SESSIONS), 2 * ITEMS, SESSIONS, 2),
    measure(uncapped(2 * ITEMS, 2 * SESSIONS), ITEMS, 2 * SESSIONS, 3),
  ];
  const { a: perItem, b: perSession, c } = solve3(pts);
  const at = (items: number, sessions: number) => perItem * items + perSession * sessions;
  const capped = measure({ maxStateBytes: NO_BYTE_BOUND }, 2 * ITEMS, DEFAULT_SESSIONS, 4);
  const bounded = measure({ maxStateBytes: STATE_MIB * 2 ** 20 }, 2 * ITEMS, DEFAULT_SESSIONS, 4);
  const est = (p: Point) => `${mib(p.estimate)} (${(p.estimate / p.bytes).toFixed(2)}×)`;
  const rows = [
    ...pts.map((p) => [`caps raised: ${p.items} items, ${p.sessions} sessions`, String(p.events), mib(p.bytes), est(p), "", "", (p.events / p.seconds).toFixed(0)]),
    ["fit: bytes = a·items + b·sessions + c", "", `c = ${mib(c)}`, "", perItem.toFixed(0), perSession.toFixed(0), ""],
    ["extrapolated: 1M items, 10M kept sessions", "", mib(at(1e6, 10e6)), "", "", "", ""],
    ["extrapolated: 1M items, default caps (200,000 sessions)", "", mib(at(1e6, 200_000)), "", "", "", ""],
    [`default count caps, no byte bound: ${DEFAULT_SESSIONS} sessions streamed; kept ${capped.sizes.sessions} sessions, ${capped.items} items`, String(capped.events), mib(capped.bytes), est(capped), "", "", (capped.events / capped.seconds).toFixed(0)],
    [`maxStateBytes ${STATE_MIB} MiB: the same stream; kept ${bounded.sizes.sessions} sessions, ${bounded.items} items`, String(bounded.events), mib(bounded.bytes), est(bounded), "", "", (bounded.events / bounded.seconds).toFixed(0)],
  ];
  const header = ["fill (synthetic anonymous sessions, mean length " + MEAN_LEN + ")", "events", "heap MiB", "estimate MiB (÷ heap)", "bytes/item", "bytes/session", "events/s"];
  const title = "Recommendation state memory, one thread";
  printTable(title, header, rows);
  process.stderr.write(`default caps sizes: ${JSON.stringify(capped.sizes)}\n`);
  if (a.record) {
    appendResults(title, `npx tsx --expose-gc bench/recs-memory.ts --items ${ITEMS} --sessions ${SESSIONS} --session-length ${MEAN_LEN} --default-sessions ${DEFAULT_SESSIONS} --state-mib ${STATE_MIB}`, header, rows);
  }
}

main();
