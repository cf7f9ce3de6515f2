/**
 * Recommendation index and candidate generation throughput, one thread, on
 * real events (Taobao time slice, REES46 sample):
 * - events/s into catalog + co-visitation + trending (observeItemEvent), and
 *   each table alone, beside this machine's limit for the simplest per-event
 *   work (one Map counter increment per event, in the same JS engine);
 * - candidate requests/s (200 candidates, default options) for the data set's
 *   active users, built as the engine would from their own events: recent
 *   items, category counts, purchases, and (no LSTM here) the category of
 *   their last event as the one "next category".
 * Bounded: the data sets are read once; each measurement runs whole rounds
 * for about --seconds.
 *
 *   npx tsx --expose-gc bench/candidates.ts [--seconds 1.5] [--datasets ../shared/data] [--record]
 *
 * (--expose-gc lets it measure the index's heap; --record appends the table to bench/RESULTS.md.)
 */
import { parseArgs } from "node:util";
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import type { DatasetFormat } from "../src/data/types.js";
import { generateCandidates, type CandidateContext } from "../src/recs/candidates.js";
import { Catalog } from "../src/recs/catalog.js";
import { Covisitation } from "../src/recs/covisitation.js";
import { compileRecsOptions } from "../src/recs/recs-options.js";
import { createRecsIndex, observeItemEvent, toItemEvent, type RecsIndex } from "../src/recs/recs-index.js";
import { Trending } from "../src/recs/trending.js";
import type { ItemEvent } from "../src/recs/types.js";
import { EventType } from "../src/wire/proto.js";
import { appendResults, printTable, repoRoot } from "./report.js";

const { values: a } = parseArgs({
  options: {
    seconds: { type: "string", default: "1.5" },
    datasets: { type: "string", default: process.env.PORTRAIT_DATASETS ?? `${repoRoot()}/../shared/data` },
    record: { type: "boolean", default: false },
  },
});
const SECONDS = Number(a.seconds);
const O = compileRecsOptions();

/** Runs whole rounds for about SECONDS (at most 10,000 rounds); returns units per second. */
function timed(round: () => number): number {
  round();
  let units = 0;
  let rounds = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < SECONDS * 1000 && rounds++ < 10_000) units += round();
  return units / ((performance.now() - t0) / 1000);
}

async function load(format: DatasetFormat): Promise<ItemEvent[]> {
  const events: ItemEvent[] = [];
  for await (const e of readDataset(format, resolveDataFile(a.datasets!, format))) {
    const ie = toItemEvent(e);
    if (ie !== undefined) events.push(ie);
  }
  return events;
}

function contexts(events: readonly ItemEvent[], index: RecsIndex): CandidateContext[] {
  const byUser = new Map<string, ItemEvent[]>();
  for (const e of events) {
    const h = byUser.get(e.userId);
    if (h) h.push(e);
    else byUser.set(e.userId, [e]);
  }
  const nowMs = events.reduce((m, e) => Math.max(m, e.timestampMs), 0);
  const out: CandidateContext[] = [];
  for (const [userId, h] of byUser) {
    if (h.length < 3) continue;
    const recent = [...new Set(h.map((e) => e.itemId).reverse())].slice(0, 20);
    const cats = new Map<string, number>();
    for (const e of h) {
      const c = e.categoryId || index.catalog.get(e.itemId)?.categoryId || "";
      if (c) cats.set(c, (cats.get(c) ?? 0) + 1);
    }
    const last = h[h.length - 1]!;
    // The user's last session (whatever its age), so session-kNN and the rules do their full work.
    const session = index.sessions.current(userId);
    out.push({
      userId, known: true, recentItems: recent, nowMs, ...(session !== undefined ? { session } : {}),
      topCategories: [...cats].map(([key, score]) => ({ key, score })).sort((x, y) => y.score - x.score).slice(0, 16),
      nextCategories: last.categoryId ? [{ key: last.categoryId, score: 0.5 }] : [],
      purchasedItems: h.filter((e) => e.type === EventType.PURCHASE).map((e) => e.itemId),
      exclude: [],
    });
  }
  return out;
}

/** Heap in use after a full GC, MB; NaN when node runs without --expose-gc. */
function heapMb(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) return Number.NaN;
  gc();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

async function main(): Promise<void> {
  const rows: string[][] = [];
  for (const format of ["taobao", "rees46"] as const) {
    const events = await load(format);
    const n = events.length;
    const limit = timed(() => {
      const m = new Map<string, number>();
      for (const e of events) m.set(e.itemId, (m.get(e.itemId) ?? 0) + 1);
      return n;
    });
    const all = timed(() => {
      const idx = createRecsIndex(O);
      for (const e of events) observeItemEvent(idx, e);
      return n;
    });
    const cat = timed(() => {
      const c = new Catalog(O.catalog);
      for (const e of events) c.observe(e);
      return n;
    });
    const cov = timed(() => {
      const c = new Covisitation(O.covisitation, O.eventWeights);
      for (const e of events) c.observe(e);
      return n;
    });
    const tr = timed(() => {
      const t = new Trending(O.trending, O.eventWeights);
      for (const e of events) t.observe(e);
      return n;
    });
    const before = heapMb();
    const idx = createRecsIndex(O);
    for (const e of events) observeItemEvent(idx, e);
    const heap = heapMb() - before;
    const ctxs = contexts(events, idx);
    let returned = 0;
    let calls = 0;
    const reqs = timed(() => {
      for (const c of ctxs.slice(0, 200)) {
        returned += generateCandidates(c, idx, O.candidates).length;
        calls++;
      }
      return Math.min(200, ctxs.length);
    });
    const f = (x: number) => x.toFixed(0);
    rows.push([
      `${format} (${n} events, ${idx.catalog.size} items)`, f(limit), f(all), f(cat), f(cov), f(tr),
      Number.isNaN(heap) ? "n/a" : heap.toFixed(0), f(reqs), (returned / calls).toFixed(0), (1e6 / reqs).toFixed(0),
    ]);
    process.stderr.write(`${format}: ${f(all)} events/s, ${f(reqs)} requests/s (${ctxs.length} users with >= 3 events)\n`);
  }
  const header = [
    "data set", "limit: Map increment ev/s", "index ev/s", "catalog ev/s", "co-visitation ev/s", "trending ev/s",
    "index heap MB", "requests/s (200 cand.)", "mean candidates", "µs/request",
  ];
  const title = "Recommendation index and candidates, one thread";
  printTable(title, header, rows);
  if (a.record) appendResults(title, "npx tsx --expose-gc bench/candidates.ts", header, rows);
}

await main();
