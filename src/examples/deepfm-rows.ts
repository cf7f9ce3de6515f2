/**
 * DeepFM training and evaluation rows from a real data set, in time order,
 * with no look-ahead.
 *
 * Protocol (the manifest's `training.protocol` repeats it):
 * - Events are read, stably sorted by time and replayed one by one. Each
 *   user's profile is the pure `applyEvent` state; the item catalog holds only
 *   items seen in earlier events (attributes from their latest event, counts).
 * - An *interaction* is an event with an item id whose type has a positive
 *   affinity weight (EVENT_WEIGHTS: view, click, cart, favorite, purchase,
 *   review, rec click), so Taobao pv/cart/fav/buy, REES46 view/cart/purchase,
 *   Online Retail purchases. Every interaction is one positive row (label 1),
 *   unweighted, except interactions with an item the catalog has not seen yet:
 *   those are skipped (counted in `skippedNewItems`), because negatives can only
 *   come from the catalog, so a never-seen item would be recognisable as the
 *   positive by its zero popularity alone.
 * - Each positive gets up to `negatives` rows (label 0): items drawn uniformly
 *   from the catalog so far, excluding items this user has had any event with
 *   up to and including this one, and no item twice per positive (seeded RNG;
 *   fewer when the catalog has too few candidates).
 * - Features of all these rows use the user's state BEFORE the event, the
 *   catalog before the event, and the LSTM state before the event; then the
 *   event is applied to the user, the catalog and the LSTM state.
 * - Rows are emitted in event time order, so a time split is an index range.
 */
import { applyEvent, EVENT_WEIGHTS, newUserState, type ProfileEvent, type UserState } from "../actors/user-profile.js";
import { compileProfileOptions, type CompiledProfileOptions } from "../actors/profile-options.js";
import { readDataset, resolveDataFile } from "../data/datasets.js";
import type { DatasetEvent, DatasetFormat } from "../data/types.js";
import { ConfigError } from "../errors.js";
import { deepFmUserFeatures, writeDeepFmRow, type DeepFmSchema, type ItemInfo } from "../models/deepfm-features.js";
import { seededRandom } from "../models/seeded-random.js";

/** The slice of the LSTM runtime the row builder needs (src/models/lstm-runtime.ts). */
export interface LstmStepper {
  readonly hidden: number;
  initialState(): Float32Array;
  step(states: Float32Array[], events: ProfileEvent[], prevMs: number[]): void;
}

export interface DeepFmRowsOptions {
  schema: DeepFmSchema;
  /** Negative rows per positive. Default 4. */
  negatives?: number;
  /** Seed of the negative sampler. Default 1. */
  seed?: number;
  /** Profile options of the replayed states. Default: the engine defaults. */
  profile?: CompiledProfileOptions;
  /** LSTM whose hidden state is the dense input; required when schema.denseDim > 0. */
  lstm?: LstmStepper;
  /** Called every 10,000 events with (events done, events total). */
  onProgress?: (done: number, total: number) => void;
}

/** Rows as columns. Row r's ids are ids[r*fields .. r*fields+fields-1]. */
export interface DeepFmRows {
  n: number;
  fields: number;
  denseDim: number;
  ids: Int32Array;
  dense: Float32Array;
  labels: Uint8Array;
  /** Event time of the row's positive, ms. */
  timeMs: Float64Array;
  /** The item's interactions before the row's time (the popularity baseline's score). */
  popularity: Float32Array;
  /** 1 when the row's positive was the user's first event with that item (a new item for the user). */
  firstTime: Uint8Array;
  /** Index of the row's positive event in the events given (the user is that event's). */
  event: Int32Array;
  /** The row's item. */
  itemIds: string[];
  /** Times of all events given, in order (for splits by event count). */
  eventTimesMs: Float64Array;
  /** Events read, positives emitted, positives skipped for a never-seen item. */
  stats: { events: number; positives: number; negatives: number; skippedNewItems: number; users: number; items: number; tMinMs: number; tMaxMs: number };
}

/** Index ranges [start, end) of the three time windows and their boundaries. */
export interface DeepFmSplit {
  train: [number, number];
  val: [number, number];
  test: [number, number];
  /** Times where validation and test start, ms. */
  valStartMs: number;
  testStartMs: number;
  fractions: readonly [number, number, number];
  by: SplitBy;
}

export const DEFAULT_SPLIT: readonly [number, number, number] = Object.freeze([0.7, 0.1, 0.2] as [number, number, number]);

/**
 * Where the split boundaries fall: `time-range` = at those fractions of the
 * time between the first and the last event (right for a steady stream such
 * as the Taobao slice); `event-count` = at the times of the events at those
 * fractions of the event count (for bursty files such as the REES46 sample,
 * whose last hour holds 93% of the events). Both are time splits.
 */
export type SplitBy = "time-range" | "event-count";

/** Reads a data set (the format's default file under dataDir unless `file`) and sorts it by time, stably. */
export async function loadDeepFmEvents(dataDir: string, format: DatasetFormat = "taobao", file?: string, limit?: number): Promise<DatasetEvent[]> {
  const path = resolveDataFile(dataDir, format, file);
  const events: DatasetEvent[] = [];
  for await (const e of readDataset(format, path, limit === undefined ? {} : { limit })) events.push(e);
  return sortEventsByTime(events);
}

/** A copy sorted by time; events with equal times keep their order. */
export function sortEventsByTime(events: readonly DatasetEvent[]): DatasetEvent[] {
  return events.map((e, i) => [e, i] as const)
    .sort((a, b) => a[0].timestampMs - b[0].timestampMs || a[1] - b[1])
    .map(([e]) => e);
}

/**
 * What the row builder reads of an event: a data set event (readDataset) or a
 * stream event (src/train/training-events.ts, already a UserEvent).
 */
export type RowEvent = Pick<DatasetEvent, "userId" | "timestampMs"> & { type: ProfileEvent["type"] } &
  Partial<Pick<DatasetEvent, "itemId" | "categoryId" | "brand" | "price" | "quantity" | "currency" | "sessionId" | "orderId">>;

export function toProfileEvent(e: RowEvent): ProfileEvent {
  return {
    type: e.type, timestampMs: e.timestampMs, itemId: e.itemId ?? "", categoryId: e.categoryId ?? "",
    brand: e.brand ?? "", price: e.price ?? 0, quantity: e.quantity ?? 0, currency: e.currency ?? "",
    sessionId: e.sessionId ?? "", orderId: e.orderId ?? "",
  };
}


class Columns {
  n = 0;
  ids: Int32Array;
  dense: Float32Array;
  labels: Uint8Array;
  timeMs: Float64Array;
  popularity: Float32Array;
  firstTime: Uint8Array;
  event: Int32Array;
  readonly itemIds: string[] = [];
  constructor(readonly F: number, readonly D: number, cap: number) {
    this.ids = new Int32Array(cap * F);
    this.dense = new Float32Array(cap * D);
    this.labels = new Uint8Array(cap);
    this.timeMs = new Float64Array(cap);
    this.popularity = new Float32Array(cap);
    this.firstTime = new Uint8Array(cap);
    this.event = new Int32Array(cap);
  }
  reserve(k: number): void {
    const need = this.n + k;
    const cap = this.labels.length;
    if (need <= cap) return;
    const next = Math.max(need, cap * 2);
    const grow = <T extends Int32Array | Float32Array | Uint8Array | Float64Array>(a: T, w: number): T => {
      const b = new (a.constructor as new (n: number) => T)(next * w);
      b.set(a);
      return b;
    };
    this.ids = grow(this.ids, this.F);
    this.dense = grow(this.dense, this.D);
    this.labels = grow(this.labels, 1);
    this.timeMs = grow(this.timeMs, 1);
    this.popularity = grow(this.popularity, 1);
    this.firstTime = grow(this.firstTime, 1);
    this.event = grow(this.event, 1);
  }
}

interface CatalogItem extends ItemInfo {
  lastMs: number;
  firstMs: number;
  users: number;
}

/** Builds the rows of `events` (already in time order) under the protocol above. Pure and deterministic. */
export function buildDeepFmRows(events: readonly RowEvent[], o: DeepFmRowsOptions): DeepFmRows {
  const { schema } = o;
  const negatives = o.negatives ?? 4;
  if (!Number.isInteger(negatives) || negatives < 0) throw new ConfigError(`options.negatives must be a non-negative integer, got ${negatives}`);
  const D = schema.denseDim;
  if (D > 0 && o.lstm === undefined) throw new ConfigError("the DeepFM schema has a dense LSTM input but no LSTM was given");
  if (D > 0 && o.lstm!.hidden !== D) throw new ConfigError(`the LSTM has hidden size ${o.lstm!.hidden}, the schema needs ${D}`);
  const profile = o.profile ?? compileProfileOptions();
  const rng = seededRandom(o.seed ?? 1);
  const F = schema.fields.length;
  const cols = new Columns(F, D, 1 << 16);

  const users = new Map<string, UserState>();
  const seenBy = new Map<string, Set<string>>();
  const catalog = new Map<string, CatalogItem>();
  const catalogIds: string[] = [];
  const catCounts = new Map<string, number>();
  const lstmStates = new Map<string, { state: Float32Array; prevMs: number }>();
  // LSTM steps are batched over consecutive events of distinct users; a user's
  // state is only read after its pending event has been stepped.
  const pending: Array<{ user: string; event: ProfileEvent }> = [];
  const pendingUsers = new Set<string>();
  const flush = (): void => {
    if (pending.length === 0) return;
    const states: Float32Array[] = [];
    const prev: number[] = [];
    for (const p of pending) {
      let s = lstmStates.get(p.user);
      if (s === undefined) {
        s = { state: o.lstm!.initialState(), prevMs: 0 };
        lstmStates.set(p.user, s);
      }
      states.push(s.state);
      prev.push(s.prevMs);
      s.prevMs = p.event.timestampMs;
    }
    o.lstm!.step(states, pending.map((p) => p.event), prev);
    pending.length = 0;
    pendingUsers.clear();
  };

  let positives = 0;
  let negCount = 0;
  let skippedNewItems = 0;
  const chosen = new Set<string>();
  for (let ei = 0; ei < events.length; ei++) {
    if (o.onProgress !== undefined && ei % 10_000 === 0) o.onProgress(ei, events.length);
    const e = events[ei]!;
    const pe = toProfileEvent(e);
    const t = pe.timestampMs;
    let state = users.get(e.userId);
    if (state === undefined) {
      state = newUserState();
      users.set(e.userId, state);
    }
    let seen = seenBy.get(e.userId);
    if (seen === undefined) {
      seen = new Set();
      seenBy.set(e.userId, seen);
    }
    const interaction = pe.itemId !== "" && (EVENT_WEIGHTS[pe.type] ?? 0) > 0;
    const known = interaction ? catalog.get(pe.itemId) : undefined;
    if (interaction && known === undefined) skippedNewItems++;
    if (known !== undefined) {
      if (D > 0 && pendingUsers.has(e.userId)) flush();
      const lstmH = D > 0 ? lstmStates.get(e.userId)?.state.subarray(0, D) : undefined;
      const uf = deepFmUserFeatures(state, t);
      const firstTime = seen.has(pe.itemId) ? 0 : 1;
      const emit = (item: CatalogItem, label: number): void => {
        cols.reserve(1);
        const r = cols.n++;
        item.categoryPopularity = catCounts.get(item.categoryId);
        writeDeepFmRow(schema, uf, item, t, lstmH, cols.ids, cols.dense, r);
        cols.labels[r] = label;
        cols.timeMs[r] = t;
        cols.popularity[r] = item.popularity;
        cols.firstTime[r] = firstTime;
        cols.event[r] = ei;
        cols.itemIds.push(item.itemId);
      };
      emit(known, 1);
      positives++;
      chosen.clear();
      const maxTries = negatives * 20;
      for (let tries = 0; chosen.size < negatives && tries < maxTries; tries++) {
        const id = catalogIds[Math.floor(rng() * catalogIds.length)]!;
        if (id === pe.itemId || seen.has(id) || chosen.has(id)) continue;
        chosen.add(id);
        emit(catalog.get(id)!, 0);
        negCount++;
      }
    }

    applyEvent(state, pe, profile);
    if (interaction) {
      let item = known ?? catalog.get(pe.itemId);
      if (item === undefined) {
        item = { itemId: pe.itemId, categoryId: "", brand: "", price: 0, popularity: 0, lastMs: 0, firstMs: t, users: 0 };
        catalog.set(pe.itemId, item);
        catalogIds.push(pe.itemId);
      }
      item.popularity++;
      if (!seen.has(pe.itemId)) item.users++;
      item.lastMs = Math.max(item.lastMs, t);
      if (pe.categoryId !== "") item.categoryId = pe.categoryId;
      if (pe.brand !== "") item.brand = pe.brand;
      if (pe.price > 0) item.price = pe.price;
      if (item.categoryId !== "") catCounts.set(item.categoryId, (catCounts.get(item.categoryId) ?? 0) + 1);
    }
    if (pe.itemId !== "") seen.add(pe.itemId);
    if (D > 0) {
      if (pendingUsers.has(e.userId)) flush();
      pending.push({ user: e.userId, event: pe });
      pendingUsers.add(e.userId);
      if (pending.length >= 256) flush();
    }
  }
  if (D > 0) flush();
  o.onProgress?.(events.length, events.length);

  const n = cols.n;
  return {
    n, fields: F, denseDim: D,
    ids: cols.ids.slice(0, n * F), dense: cols.dense.slice(0, n * D), labels: cols.labels.slice(0, n),
    timeMs: cols.timeMs.slice(0, n), popularity: cols.popularity.slice(0, n), firstTime: cols.firstTime.slice(0, n),
    event: cols.event.slice(0, n), itemIds: cols.itemIds, eventTimesMs: Float64Array.from(events, (e) => e.timestampMs),
    stats: {
      events: events.length, positives, negatives: negCount, skippedNewItems, users: users.size, items: catalog.size,
      tMinMs: events[0]?.timestampMs ?? 0, tMaxMs: events.at(-1)?.timestampMs ?? 0,
    },
  };
}

/** Splits rows by time into train, validation and test windows (fractions and `by` as described at SplitBy). */
export function splitDeepFmRows(rows: DeepFmRows, fractions: readonly [number, number, number] = DEFAULT_SPLIT, by: SplitBy = "time-range"): DeepFmSplit {
  const [a, b, c] = fractions;
  if (!(a > 0 && b > 0 && c > 0) || Math.abs(a + b + c - 1) > 1e-9) throw new ConfigError(`split fractions must be positive and sum to 1, got ${fractions.join(", ")}`);
  if (by !== "time-range" && by !== "event-count") throw new ConfigError(`split by must be "time-range" or "event-count", got ${JSON.stringify(by)}`);
  const { tMinMs, tMaxMs } = rows.stats;
  const times = rows.eventTimesMs;
  const at = (f: number): number => by === "time-range"
    ? tMinMs + f * (tMaxMs - tMinMs)
    : times[Math.min(times.length - 1, Math.floor(f * times.length))] ?? tMinMs;
  const valStartMs = at(a);
  const testStartMs = at(a + b);
  const firstAtOrAfter = (ms: number): number => {
    let lo = 0;
    let hi = rows.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (rows.timeMs[mid]! < ms) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const v = firstAtOrAfter(valStartMs);
  const t = firstAtOrAfter(testStartMs);
  return { train: [0, v], val: [v, t], test: [t, rows.n], valStartMs, testStartMs, fractions, by };
}
