/**
 * The LSTM's input: each event becomes five small integers, one per field,
 * and each field has its own embedding. Training (src/train) and the live
 * engine (lstm-runtime.ts) encode events with this one module.
 *
 * Fields:
 * - type: the EventType number (0 unused), vocabulary EVENT_TYPE_SLOTS;
 * - category: the category id through the model's vocabulary;
 * - item: the item id through the model's vocabulary;
 * - band: 1 + index of the event's price band (PRICE_BANDS), 0 = no price;
 * - gap: time since the user's previous event, log2 buckets of seconds:
 *   0 = first event, else 1 + min(14, floor(log2(1 + seconds))).
 *
 * Vocabularies map ids to indices: 0 = none (empty id), 1 = out of vocabulary,
 * 2.. = ids seen at least `minCount` times in training, most frequent first.
 */
import { PRICE_BANDS } from "../actors/user-profile.js";
import { EVENT_TYPE_SLOTS } from "../wire/proto.js";

export const GAP_BUCKETS = 16;
export const BAND_SLOTS = PRICE_BANDS.length + 1;
export const TYPE_SLOTS = EVENT_TYPE_SLOTS;
export const VOCAB_NONE = 0;
export const VOCAB_OOV = 1;

/** The fields of an event the LSTM reads. */
export interface LstmEvent {
  type: number;
  timestampMs: number;
  itemId: string;
  categoryId: string;
  price: number;
}

export class Vocab {
  readonly #index: Map<string, number>;
  /** ids[i] is the id of index i (ids[0] = "", ids[1] = "<oov>"). */
  readonly ids: readonly string[];

  constructor(ids: readonly string[]) {
    this.ids = ["", "<oov>", ...ids];
    this.#index = new Map(ids.map((id, i) => [id, i + 2]));
  }

  get size(): number {
    return this.ids.length;
  }

  indexOf(id: string): number {
    if (id === "") return VOCAB_NONE;
    return this.#index.get(id) ?? VOCAB_OOV;
  }

  /** The ids seen at least minCount times, most frequent first (ties by id), at most maxSize of them. */
  static fromCounts(counts: Map<string, number>, minCount: number, maxSize: number): Vocab {
    const ids = [...counts].filter(([id, n]) => id !== "" && n >= minCount)
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, maxSize)
      .map(([id]) => id);
    return new Vocab(ids);
  }
}

export function bandIndex(price: number): number {
  if (!(price > 0)) return 0;
  let i = 0;
  for (let b = 0; b < PRICE_BANDS.length; b++) if (price >= PRICE_BANDS[b]![0]) i = b;
  return i + 1;
}

export function gapBucket(prevMs: number, nowMs: number): number {
  if (prevMs <= 0) return 0;
  const s = Math.max(0, nowMs - prevMs) / 1000;
  return 1 + Math.min(GAP_BUCKETS - 2, Math.floor(Math.log2(1 + s)));
}

/** Writes the five field indices of `e` into out[at..at+4] (type, category, item, band, gap). */
export function encodeLstmEvent(e: LstmEvent, prevMs: number, items: Vocab, cats: Vocab, out: Int32Array, at: number): void {
  out[at] = e.type > 0 && e.type < TYPE_SLOTS ? e.type : 0;
  out[at + 1] = cats.indexOf(e.categoryId);
  out[at + 2] = items.indexOf(e.itemId);
  out[at + 3] = bandIndex(e.price);
  out[at + 4] = gapBucket(prevMs, e.timestampMs);
}

export const LSTM_FIELDS = ["type", "category", "item", "band", "gap"] as const;
