/**
 * DeepFM features: the schema and the pure row builder shared by training
 * (src/examples/deepfm-rows.ts) and the live engine. One row describes a
 * (user, item, context) triple at a time `asOfMs`; the model (deepfm-spec.ts)
 * scores it.
 *
 * A row is F sparse field values plus D dense floats:
 * - `ids[row * F + f]` = `fields[f].offset + local`, local in [0, fields[f].size).
 *   Local 0 always means "none / missing / unknown".
 * - `dense[row * D ..]` = the user's LSTM hidden state `h` (D = its width) when
 *   the schema has `dense: "lstm-h"`, else D = 0.
 *
 * Encodings (`DeepFmField.encoding`):
 * - `hash`: an id (category, brand, item id) becomes
 *   `1 + fnv1a32(utf8(id)) % (size - 1)`; "" becomes 0. FNV-1a 32-bit, the
 *   same function as the partitioner (src/wire/partition.ts), so any
 *   language can reproduce it. Collisions are accepted: no vocabulary file to
 *   ship or keep in sync, and unseen ids share buckets instead of one OOV slot.
 * - `bucket`: a small integer computed from numbers (bins below).
 *
 * Fields (name: meaning; buckets):
 * User, from the profile state (user-profile.ts) as of `asOfMs`:
 * - u_cat1, u_cat2, u_cat3: the user's top-3 category affinity keys (hash).
 * - u_brand, u_band: top brand (hash) and top price band (1 + PRICE_BANDS index).
 * - u_r, u_f, u_m: RFM scores 1..5 (RFM_BINS), 0 = never purchased.
 * - u_n: activity, 1 + min(14, floor(log2(events applied))), 0 = no events.
 * - u_gap: time since the user's last event, 1 + min(14, floor(log2(1 + seconds))), 0 = no events.
 * - u_funnel: 1 + (has carted ? 1 : 0) + (has purchased ? 2 : 0), 0 = no events.
 * Item, from the catalog (ItemInfo), counting interactions before `asOfMs`:
 * - i_id: hashed item id, only for items with >= I_ID_MIN_POPULARITY (4)
 *   interactions (else 0): a frequency cap, because hashing rare ids only let
 *   the model memorise the training window (validation logloss rose from the
 *   second epoch on Taobao).
 * - i_cat, i_brand: hashed ids; i_band: 1 + price band index, 0 = no price.
 * - i_pop: interactions, 1 + min(14, floor(log2(count))), 0 = none.
 * - i_users: distinct users, same bins.
 * - i_age: time since the item's last interaction by anyone, as u_gap; 0 = unknown.
 * - i_first: time since its first interaction, same bins.
 * - i_rate: interactions per minute since the first, 1 + clamp(floor(log2(rate)) + 8, 0, 14), 0 = unknown.
 * - i_cpop: interactions with the item's category, 1 + min(22, floor(log2(count))), 0 = unknown.
 * Context (UTC): c_hour 0..23, c_wday 0..6 (0 = Sunday).
 * Crosses (user x item):
 * - x_cat, x_brand, x_band: rank of the item's key in the user's affinity table:
 *   0 = the item or the user has no such key, 1 = not in the table, 2/3/4 = rank 1/2/3, 5 = rank 4 or lower.
 * - x_seen: position of the item in the user's recent items: 0 = not there,
 *   1 = the latest, 2 = 2nd-3rd, 3 = 4th-7th, 4 = 8th or older.
 *
 * A schema may use any subset of the fields, in any order (`createDeepFmSchema`;
 * the manifest stores it); `checkDeepFmSchema` checks a stored one against this list.
 */
import { PRICE_BANDS, RFM_BINS, type UserState } from "../actors/user-profile.js";
import { ConfigError } from "../errors.js";
import { EventType } from "../wire/proto.js";
import type { DeepFmArchitecture } from "./deepfm-spec.js";

/** What the live catalog knows about an item at the time of scoring. */
export interface ItemInfo {
  itemId: string;
  /** "" = unknown. */
  categoryId: string;
  /** "" = unknown; matched lower-cased, like the profile's brand affinity. */
  brand: string;
  /** 0 = unknown. */
  price: number;
  /** Interactions with the item so far (events whose type has a positive EVENT_WEIGHTS entry). */
  popularity: number;
  /** Time of the item's latest interaction by anyone, ms; 0 or absent = unknown. */
  lastMs?: number;
  /** Interactions with the item's category so far; absent = unknown. */
  categoryPopularity?: number;
  /** Time of the item's first interaction, ms; 0 or absent = unknown. */
  firstMs?: number;
  /** Distinct users who interacted with the item so far; absent = unknown. */
  users?: number;
}

export type DeepFmEncoding = "hash" | "bucket";

export interface DeepFmField {
  name: string;
  /** Local values 0..size-1 (0 = none). */
  size: number;
  /** First row of this field in the shared embedding table. */
  offset: number;
  encoding: DeepFmEncoding;
}

export interface DeepFmSchema {
  /** Version of this module's field definitions the schema was made with. */
  featuresVersion: 1;
  /** The hash of `hash` fields. */
  hash: "fnv1a32-utf8";
  fields: DeepFmField[];
  /** Sum of the field sizes: rows of the embedding table. */
  vocab: number;
  /** Dense input width D: the LSTM hidden size, or 0. */
  denseDim: number;
  /** Where the dense input comes from. */
  dense: "none" | "lstm-h";
  /** The LSTM model version whose state feeds the dense input (dense = "lstm-h"). */
  lstmVersion?: string;
}

export const DEEPFM_FEATURES_VERSION = 1;

/** The user's part of a row, computed once per (user, time) and reused for every candidate item. */
export interface DeepFmUserFeatures {
  /** Affinity keys, strongest first. */
  cats: string[];
  brands: string[];
  bands: string[];
  r: number;
  f: number;
  m: number;
  n: number;
  gap: number;
  funnel: number;
  /** Recent item ids, newest first. */
  recent: readonly string[];
}

type Extract = (u: DeepFmUserFeatures, item: ItemInfo, asOfMs: number) => number | string;

interface FieldDef {
  encoding: DeepFmEncoding;
  /** Default size of hash fields; the fixed size of bucket fields. */
  size: number;
  extract: Extract;
}

const MS_PER_DAY = 86_400_000;
/** Items with fewer interactions than this get i_id 0: too rare to learn from, hashing them only memorises the training window. */
export const I_ID_MIN_POPULARITY = 4;
const BAND_SLOTS = PRICE_BANDS.length + 1;

function log2Bucket(count: number, max: number): number {
  return count <= 0 ? 0 : 1 + Math.min(max, Math.floor(Math.log2(count)));
}

function ageBucket(fromMs: number, toMs: number): number {
  if (!(fromMs > 0)) return 0;
  return 1 + Math.min(14, Math.floor(Math.log2(1 + Math.max(0, toMs - fromMs) / 1000)));
}

function bandOfLabel(label: string | undefined): number {
  if (label === undefined) return 0;
  const i = PRICE_BANDS.findIndex(([, l]) => l === label);
  return i < 0 ? 0 : i + 1;
}

function bandOfPrice(price: number): number {
  if (!(price > 0)) return 0;
  let i = 0;
  for (let b = 0; b < PRICE_BANDS.length; b++) if (price >= PRICE_BANDS[b]![0]) i = b;
  return i + 1;
}

function rankBucket(keys: readonly string[], key: string): number {
  if (key === "" || keys.length === 0) return 0;
  const i = keys.indexOf(key);
  return i < 0 ? 1 : Math.min(5, i + 2);
}

/** Interactions per minute since the first one: 1 + clamp(floor(log2(rate)) + 8, 0, 14), 0 = unknown. */
function rateBucket(count: number, firstMs: number, t: number): number {
  if (!(firstMs > 0) || count <= 0) return 0;
  const rate = count / (1 + Math.max(0, t - firstMs) / 60_000);
  return 1 + Math.max(0, Math.min(14, Math.floor(Math.log2(rate)) + 8));
}

function seenBucket(recent: readonly string[], itemId: string): number {
  const i = recent.indexOf(itemId);
  if (i < 0) return 0;
  return i === 0 ? 1 : i < 3 ? 2 : i < 7 ? 3 : 4;
}

const FIELD_DEFS: Readonly<Record<string, FieldDef>> = Object.freeze({
  u_cat1: { encoding: "hash", size: 4096, extract: (u) => u.cats[0] ?? "" },
  u_cat2: { encoding: "hash", size: 4096, extract: (u) => u.cats[1] ?? "" },
  u_cat3: { encoding: "hash", size: 4096, extract: (u) => u.cats[2] ?? "" },
  u_brand: { encoding: "hash", size: 1024, extract: (u) => u.brands[0] ?? "" },
  u_band: { encoding: "bucket", size: BAND_SLOTS, extract: (u) => bandOfLabel(u.bands[0]) },
  u_r: { encoding: "bucket", size: 6, extract: (u) => u.r },
  u_f: { encoding: "bucket", size: 6, extract: (u) => u.f },
  u_m: { encoding: "bucket", size: 6, extract: (u) => u.m },
  u_n: { encoding: "bucket", size: 16, extract: (u) => u.n },
  u_gap: { encoding: "bucket", size: 16, extract: (u) => u.gap },
  u_funnel: { encoding: "bucket", size: 5, extract: (u) => u.funnel },
  i_id: { encoding: "hash", size: 8192, extract: (_u, i) => (i.popularity >= I_ID_MIN_POPULARITY ? i.itemId : "") },
  i_cat: { encoding: "hash", size: 4096, extract: (_u, i) => i.categoryId },
  i_brand: { encoding: "hash", size: 1024, extract: (_u, i) => i.brand.toLowerCase() },
  i_band: { encoding: "bucket", size: BAND_SLOTS, extract: (_u, i) => bandOfPrice(i.price) },
  i_pop: { encoding: "bucket", size: 16, extract: (_u, i) => log2Bucket(i.popularity, 14) },
  i_users: { encoding: "bucket", size: 16, extract: (_u, i) => log2Bucket(i.users ?? 0, 14) },
  i_age: { encoding: "bucket", size: 16, extract: (_u, i, t) => ageBucket(i.lastMs ?? 0, t) },
  i_first: { encoding: "bucket", size: 16, extract: (_u, i, t) => ageBucket(i.firstMs ?? 0, t) },
  i_rate: { encoding: "bucket", size: 16, extract: (_u, i, t) => rateBucket(i.popularity, i.firstMs ?? 0, t) },
  i_cpop: { encoding: "bucket", size: 24, extract: (_u, i) => log2Bucket(i.categoryPopularity ?? 0, 22) },
  c_hour: { encoding: "bucket", size: 24, extract: (_u, _i, t) => new Date(t).getUTCHours() },
  c_wday: { encoding: "bucket", size: 7, extract: (_u, _i, t) => new Date(t).getUTCDay() },
  x_cat: { encoding: "bucket", size: 6, extract: (u, i) => rankBucket(u.cats, i.categoryId) },
  x_brand: { encoding: "bucket", size: 6, extract: (u, i) => rankBucket(u.brands, i.brand.toLowerCase()) },
  x_band: { encoding: "bucket", size: 6, extract: (u, i) => rankBucket(u.bands, PRICE_BANDS[bandOfPrice(i.price) - 1]?.[1] ?? "") },
  x_seen: { encoding: "bucket", size: 5, extract: (u, i) => seenBucket(u.recent, i.itemId) },
});

/** Every field this module can build, in the default order. */
export const DEEPFM_FIELD_NAMES: readonly string[] = Object.freeze(Object.keys(FIELD_DEFS));

export interface DeepFmSchemaOptions {
  /** Fields to use, in order. Default: all of DEEPFM_FIELD_NAMES. */
  fields?: readonly string[];
  /** Sizes of hash fields by name (>= 2), overriding the defaults. */
  hashSizes?: Readonly<Record<string, number>>;
  /** LSTM hidden width for the dense input; 0 or absent = no dense input. */
  lstmHidden?: number;
  lstmVersion?: string;
}

export function createDeepFmSchema(o: DeepFmSchemaOptions = {}): DeepFmSchema {
  const names = o.fields ?? DEEPFM_FIELD_NAMES;
  if (names.length === 0) throw new ConfigError("options.fields must name at least one DeepFM field");
  const fields: DeepFmField[] = [];
  let offset = 0;
  for (const name of names) {
    const def = FIELD_DEFS[name];
    if (def === undefined) throw new ConfigError(`unknown DeepFM field ${JSON.stringify(name)}; known: ${DEEPFM_FIELD_NAMES.join(", ")}`);
    if (fields.some((f) => f.name === name)) throw new ConfigError(`DeepFM field ${name} listed twice`);
    let size = def.size;
    const wanted = o.hashSizes?.[name];
    if (wanted !== undefined) {
      if (def.encoding !== "hash") throw new ConfigError(`options.hashSizes.${name}: ${name} is not a hashed field`);
      if (!Number.isInteger(wanted) || wanted < 2) throw new ConfigError(`options.hashSizes.${name} must be an integer >= 2, got ${wanted}`);
      size = wanted;
    }
    fields.push({ name, size, offset, encoding: def.encoding });
    offset += size;
  }
  const hidden = o.lstmHidden ?? 0;
  if (!Number.isInteger(hidden) || hidden < 0) throw new ConfigError(`options.lstmHidden must be a non-negative integer, got ${hidden}`);
  return {
    featuresVersion: DEEPFM_FEATURES_VERSION, hash: "fnv1a32-utf8", fields, vocab: offset,
    denseDim: hidden, dense: hidden > 0 ? "lstm-h" : "none",
    ...(hidden > 0 && o.lstmVersion !== undefined ? { lstmVersion: o.lstmVersion } : {}),
  };
}

/** Checks a schema read from a manifest: known fields, contiguous offsets, encodings and bucket sizes this code builds. */
export function checkDeepFmSchema(s: DeepFmSchema): DeepFmSchema {
  if (s.featuresVersion !== DEEPFM_FEATURES_VERSION) throw new ConfigError(`DeepFM features version ${s.featuresVersion} is not ${DEEPFM_FEATURES_VERSION}`);
  if (s.hash !== "fnv1a32-utf8") throw new ConfigError(`DeepFM hash ${JSON.stringify(s.hash)} is not supported`);
  let offset = 0;
  for (const f of s.fields) {
    const def = FIELD_DEFS[f.name];
    if (def === undefined) throw new ConfigError(`unknown DeepFM field ${JSON.stringify(f.name)} in schema`);
    if (f.encoding !== def.encoding) throw new ConfigError(`DeepFM field ${f.name}: encoding ${f.encoding}, expected ${def.encoding}`);
    if (f.offset !== offset) throw new ConfigError(`DeepFM field ${f.name}: offset ${f.offset}, expected ${offset}`);
    if (def.encoding === "bucket" ? f.size !== def.size : !(Number.isInteger(f.size) && f.size >= 2)) {
      throw new ConfigError(`DeepFM field ${f.name}: bad size ${f.size}`);
    }
    offset += f.size;
  }
  if (s.vocab !== offset) throw new ConfigError(`DeepFM schema vocab ${s.vocab} is not the sum of field sizes ${offset}`);
  if ((s.dense === "none") !== (s.denseDim === 0)) throw new ConfigError(`DeepFM schema: dense ${s.dense} with denseDim ${s.denseDim}`);
  return s;
}

/** The model architecture for a schema. */
export function deepFmArchitecture(s: DeepFmSchema, embDim: number, hidden: number[]): DeepFmArchitecture {
  return { fields: s.fields.length, vocab: s.vocab, embDim, denseDim: s.denseDim, hidden: [...hidden] };
}

const encoder = new TextEncoder();

/** FNV-1a 32-bit over the UTF-8 bytes of `s` (equal to src/wire/partition.ts fnv1a32String). */
export function hashId(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) {
      h = 0x811c9dc5;
      for (const b of encoder.encode(s)) h = Math.imul(h ^ b, 0x01000193);
      return h >>> 0;
    }
    h = Math.imul(h ^ c, 0x01000193);
  }
  return h >>> 0;
}

function rankedKeys(keys: readonly string[], scores: readonly number[]): string[] {
  return keys.map((k, i) => [k, scores[i]!] as const)
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([k]) => k);
}

function rfmScore(value: number, bins: readonly number[], lowerIsBetter: boolean): number {
  let passed = 0;
  for (const b of bins) if (lowerIsBetter ? value > b : value >= b) passed++;
  return lowerIsBetter ? 5 - passed : 1 + passed;
}

/**
 * The user's features as of `asOfMs`. Affinity ranks do not depend on the
 * decay (all keys share one reference time), so no profile options are needed.
 */
export function deepFmUserFeatures(s: UserState, asOfMs: number): DeepFmUserFeatures {
  const bought = s.lastPurchaseMs > 0;
  const net = s.purchased - s.refunded;
  const carted = (s.counts[EventType.ADD_TO_CART] ?? 0) > 0;
  return {
    cats: rankedKeys(s.cat.keys, s.cat.scores),
    brands: rankedKeys(s.brand.keys, s.brand.scores),
    bands: rankedKeys(s.band.keys, s.band.scores),
    r: bought ? rfmScore((asOfMs - s.lastPurchaseMs) / MS_PER_DAY, RFM_BINS.recencyDays, true) : 0,
    f: bought ? rfmScore(s.orders, RFM_BINS.frequency, false) : 0,
    m: bought ? rfmScore(net, RFM_BINS.monetary, false) : 0,
    n: log2Bucket(s.n, 14),
    gap: s.n > 0 ? ageBucket(s.lastSeenMs, asOfMs) : 0,
    funnel: s.n > 0 ? 1 + (carted ? 1 : 0) + (bought ? 2 : 0) : 0,
    recent: s.recent.slice(),
  };
}

const compiled = new WeakMap<DeepFmSchema, FieldDef[]>();

function defsOf(s: DeepFmSchema): FieldDef[] {
  let defs = compiled.get(s);
  if (defs === undefined) {
    checkDeepFmSchema(s);
    defs = s.fields.map((f) => FIELD_DEFS[f.name]!);
    compiled.set(s, defs);
  }
  return defs;
}

/**
 * Writes row `row` from precomputed user features: ids into
 * `idsOut[row*F .. row*F+F-1]`, and `lstmH` (length denseDim) into
 * `denseOut[row*D ..]` when the schema has a dense input (zeros when lstmH is
 * undefined: a user the LSTM has not seen).
 */
export function writeDeepFmRow(
  s: DeepFmSchema, u: DeepFmUserFeatures, item: ItemInfo, asOfMs: number,
  lstmH: Float32Array | undefined, idsOut: Int32Array, denseOut: Float32Array, row: number,
): void {
  const defs = defsOf(s);
  const F = defs.length;
  for (let f = 0; f < F; f++) {
    const field = s.fields[f]!;
    const v = defs[f]!.extract(u, item, asOfMs);
    let local: number;
    if (typeof v === "string") local = v === "" ? 0 : 1 + (hashId(v) % (field.size - 1));
    else local = v >= 0 && v < field.size ? v : 0;
    idsOut[row * F + f] = field.offset + local;
  }
  const D = s.denseDim;
  if (D > 0) {
    if (lstmH === undefined) denseOut.fill(0, row * D, row * D + D);
    else {
      if (lstmH.length < D) throw new RangeError(`lstmH has ${lstmH.length} floats, the schema needs ${D}`);
      denseOut.set(lstmH.subarray(0, D), row * D);
    }
  }
}

/** `writeDeepFmRow` for one (user state, item) pair: the user's features are computed from the state as of `asOfMs`. */
export function buildDeepFmRow(
  s: DeepFmSchema, user: UserState, item: ItemInfo, asOfMs: number,
  lstmH: Float32Array | undefined, idsOut: Int32Array, denseOut: Float32Array, row: number,
): void {
  writeDeepFmRow(s, deepFmUserFeatures(user, asOfMs), item, asOfMs, lstmH, idsOut, denseOut, row);
}
