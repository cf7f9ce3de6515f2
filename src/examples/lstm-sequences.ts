/**
 * Event sequences for the LSTM: per user, in time order, from the real data
 * sets, with a strict time split and per-position targets.
 *
 * Each source has a train part (events before `trainEndMs`) and a test part
 * (events from `trainEndMs` on; Yoochoose instead uses its own test file).
 * Inside the train part, the last 20% of its time is the validation window
 * used for early stopping: training sequences stop before it, validation
 * sequences run up to `trainEndMs` with targets only inside it.
 *
 * Targets at position t (all read from events AFTER t, never used as input):
 * - item / category: of event t+1, when that event's time lies in the
 *   target window and the id is in the vocabulary;
 * - buy: 1 if a PURCHASE follows within PURCHASE_HORIZON_MS of event t's time,
 *   0 if none does; masked when t's horizon runs past the data the sequence
 *   may see (censoring, for both labels) or the source has no purchase signal.
 */
import { readDataset, resolveDataFile } from "../data/datasets.js";
import type { DatasetFormat } from "../data/types.js";
import { LSTM_FIELDS, Vocab, encodeLstmEvent, type LstmEvent } from "../models/lstm-features.js";
import { PURCHASE_HORIZON_MS } from "../models/lstm-spec.js";
import { EventType } from "../wire/proto.js";

export interface SourceSpec {
  format: DatasetFormat;
  /** File relative to the data directory (default: the format's default file). */
  file?: string;
  /** A separate test file (Yoochoose train_valid); otherwise the last `testFraction` of time is the test part. */
  testFile?: string;
  testFraction?: number;
  /** Which heads this source trains. */
  heads: { item: boolean; category: boolean; buy: boolean };
  /** Read at most this many events (tests). */
  limit?: number;
  /** Train on at most the last this-many train-part events of each user (bounds heavy users' weight and the cost). */
  maxEventsPerUser?: number;
}

export const DEFAULT_LSTM_SOURCES: readonly SourceSpec[] = Object.freeze([
  { format: "yoochoose", testFile: "yoochoose-100k/yoochoose-clicks-100k_train_valid.txt.gz", heads: { item: true, category: false, buy: false } },
  { format: "taobao", testFraction: 0.2, heads: { item: true, category: true, buy: true } },
  { format: "rees46", testFraction: 0.2, heads: { item: true, category: true, buy: true } },
]);

/**
 * Online Retail as an LSTM source (not in the defaults: its invoice lines
 * teach only next-basket-line items, which cost a third of an epoch here
 * for little; its purchase behaviour is the churn model's job). Pass it in
 * `sources` to add it; the cap keeps heavy customers from dominating.
 */
export const ONLINE_RETAIL_LSTM_SOURCE: SourceSpec = Object.freeze({
  format: "online-retail", testFraction: 0.2, heads: { item: true, category: false, buy: false }, maxEventsPerUser: 64,
});

export interface UserSequence {
  source: number;
  userId: string;
  events: LstmEvent[];
}

export interface SourceData {
  spec: SourceSpec;
  /** Human-readable split description for the manifest. */
  split: string;
  startMs: number;
  valStartMs: number;
  trainEndMs: number;
  endMs: number;
  /** Per user, events before trainEndMs. */
  train: UserSequence[];
  /** Per user, all events (train prefix as context + test events); targets count from trainEndMs. */
  test: UserSequence[];
  events: number;
}

const VALIDATION_FRACTION = 0.2;

function group(events: Array<LstmEvent & { userId: string }>, source: number): UserSequence[] {
  const by = new Map<string, LstmEvent[]>();
  for (const e of events) {
    let list = by.get(e.userId);
    if (list === undefined) by.set(e.userId, (list = []));
    list.push({ type: e.type, timestampMs: e.timestampMs, itemId: e.itemId, categoryId: e.categoryId, price: e.price });
  }
  // Stable sort: events of the same time keep file order.
  return [...by].map(([userId, evs]) => ({ source, userId, events: evs.sort((a, b) => a.timestampMs - b.timestampMs) }));
}

async function readAll(dataDir: string, format: DatasetFormat, file: string | undefined, limit: number | undefined) {
  const out: Array<LstmEvent & { userId: string }> = [];
  const path = resolveDataFile(dataDir, format, file);
  for await (const e of readDataset(format, path, limit !== undefined ? { limit } : {})) {
    out.push({
      userId: e.userId, type: e.type, timestampMs: e.timestampMs,
      itemId: e.itemId ?? "", categoryId: e.categoryId ?? "", price: e.price ?? 0,
    });
  }
  return out;
}

export async function loadSource(dataDir: string, spec: SourceSpec, index: number): Promise<SourceData> {
  const events = await readAll(dataDir, spec.format, spec.file, spec.limit);
  if (events.length === 0) throw new Error(`${spec.format}: no events`);
  let startMs = Infinity;
  let endMs = -Infinity;
  for (const e of events) {
    if (e.timestampMs < startMs) startMs = e.timestampMs;
    if (e.timestampMs > endMs) endMs = e.timestampMs;
  }
  if (spec.testFile !== undefined) {
    const testEvents = await readAll(dataDir, spec.format, spec.testFile, spec.limit);
    const trainEndMs = endMs + 1;
    let testEnd = endMs;
    for (const e of testEvents) if (e.timestampMs > testEnd) testEnd = e.timestampMs;
    return {
      spec, startMs, trainEndMs, endMs: testEnd,
      valStartMs: startMs + (1 - VALIDATION_FRACTION) * (trainEndMs - startMs),
      split: `${spec.format}: train ${spec.file ?? "default file"} (last ${VALIDATION_FRACTION * 100}% of its time validates), test ${spec.testFile}`,
      train: group(events, index),
      // Test sessions are evaluated on their own events (the file's sessions are new).
      test: group(testEvents, index),
      events: events.length + testEvents.length,
    };
  }
  const frac = spec.testFraction ?? 0.2;
  const trainEndMs = startMs + (1 - frac) * (endMs - startMs);
  const valStartMs = startMs + (1 - VALIDATION_FRACTION) * (trainEndMs - startMs);
  const all = group(events, index);
  const train: UserSequence[] = [];
  for (const s of all) {
    const cut = s.events.findIndex((e) => e.timestampMs >= trainEndMs);
    if (cut !== 0) train.push({ ...s, events: cut < 0 ? s.events : s.events.slice(0, cut) });
  }
  return {
    spec, startMs, valStartMs, trainEndMs, endMs, train,
    test: all.filter((s) => s.events.some((e) => e.timestampMs >= trainEndMs)),
    split: `${spec.format}: time split at ${new Date(trainEndMs).toISOString()} (first ${(1 - frac) * 100}% of time trains, last ${VALIDATION_FRACTION * 100}% of that validates)`,
    events: events.length,
  };
}

/** Vocabularies from the train parts only. */
export function buildVocabs(sources: SourceData[], minCount: number, maxItems: number, maxCategories: number): { items: Vocab; categories: Vocab } {
  const items = new Map<string, number>();
  const cats = new Map<string, number>();
  for (const src of sources) {
    for (const s of src.train) {
      for (const e of s.events) {
        if (src.spec.heads.item) items.set(e.itemId, (items.get(e.itemId) ?? 0) + 1);
        if (src.spec.heads.category) cats.set(e.categoryId, (cats.get(e.categoryId) ?? 0) + 1);
      }
    }
  }
  return { items: Vocab.fromCounts(items, minCount, maxItems), categories: Vocab.fromCounts(cats, minCount, maxCategories) };
}

/** One training window: inputs and targets for positions [0, length). */
export interface Window {
  length: number;
  /** [length, 5] field indices (LSTM_FIELDS order). */
  inputs: Int32Array;
  /** Target indices, 0 = no target. */
  item: Int32Array;
  category: Int32Array;
  /** 1 / 0 labels and their mask (1 = labelled). */
  buy: Float32Array;
  buyMask: Float32Array;
}

export interface WindowOptions {
  /** Targets count only when the target event's time is in [fromMs, toMs). */
  fromMs: number;
  toMs: number;
  /** Events at or after this time are not used at all (input or target). */
  seeUntilMs: number;
  /** Window length and how many leading positions of later windows are context only. */
  length: number;
  burnIn: number;
}

/** Cuts a user's sequence into windows with targets (see the module comment). */
export function windowsOf(seq: UserSequence, heads: SourceSpec["heads"], vocabs: { items: Vocab; categories: Vocab }, o: WindowOptions): Window[] {
  const evs = seq.events;
  let L = evs.length;
  while (L > 0 && evs[L - 1]!.timestampMs >= o.seeUntilMs) L--;
  if (L === 0) return [];
  const F = LSTM_FIELDS.length;
  const inputs = new Int32Array(L * F);
  const item = new Int32Array(L);
  const category = new Int32Array(L);
  const buy = new Float32Array(L);
  const buyMask = new Float32Array(L);
  let nextBuyMs = Infinity; // time of the first purchase after position t
  for (let t = L - 1; t >= 0; t--) {
    const e = evs[t]!;
    encodeLstmEvent(e, t > 0 ? evs[t - 1]!.timestampMs : 0, vocabs.items, vocabs.categories, inputs, t * F);
    if (t + 1 < L) {
      const nx = evs[t + 1]!;
      if (nx.timestampMs >= o.fromMs && nx.timestampMs < o.toMs) {
        const ix = heads.item ? vocabs.items.indexOf(nx.itemId) : 0;
        const cx = heads.category ? vocabs.categories.indexOf(nx.categoryId) : 0;
        item[t] = ix >= 2 ? ix : 0;
        category[t] = cx >= 2 ? cx : 0;
      }
    }
    // Labelled only when the whole horizon is observed: keeping early-found
    // positives near the end of the data would bias the labels towards 1.
    if (heads.buy && e.timestampMs >= o.fromMs && e.timestampMs < o.toMs && e.timestampMs + PURCHASE_HORIZON_MS < o.seeUntilMs) {
      buy[t] = nextBuyMs - e.timestampMs <= PURCHASE_HORIZON_MS ? 1 : 0;
      buyMask[t] = 1;
    }
    if (e.type === EventType.PURCHASE) nextBuyMs = e.timestampMs;
  }
  const out: Window[] = [];
  const step = o.length - o.burnIn;
  for (let start = 0; ; start += step) {
    const from = Math.max(0, start - (start > 0 ? o.burnIn : 0));
    const end = Math.min(L, from + o.length);
    const ctx = start - from; // leading positions that are context only
    const w: Window = {
      length: end - from,
      inputs: inputs.slice(from * F, end * F),
      item: item.slice(from, end),
      category: category.slice(from, end),
      buy: buy.slice(from, end),
      buyMask: buyMask.slice(from, end),
    };
    w.item.fill(0, 0, ctx);
    w.category.fill(0, 0, ctx);
    w.buyMask.fill(0, 0, ctx);
    out.push(w);
    if (end >= L) break;
  }
  return out;
}
