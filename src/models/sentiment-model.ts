/**
 * Review sentiment and aspects: the text model the shards run on REVIEW
 * events. This file is the contract between training
 * (src/train/train-sentiment.ts) and the engine, which calls `analyse(text)`
 * once per review that carries text.
 *
 * Sentiment: a logistic regression over hashed features of the text,
 * trained by our own code (labels from the star ratings: 4-5 positive, 1-3
 * negative in training; evaluated on 1-2 against 4-5). Features (`sentimentFeatures`):
 * - the text is lower-cased and split into tokens of letters and digits
 *   (apostrophes dropped: "don't" -> "dont");
 * - unigrams, and bigrams of adjacent tokens (not across punctuation);
 * - a unigram inside a negation scope (the 3 tokens after not, no, never,
 *   dont, ...; ended early by . , ; : ! ?) is a different feature ("!good");
 * - the review's title (the data set's summary; an event's
 *   `attributes.summary`), when there is one, adds its own features again
 *   with the prefix "s:" (a title is short and to the point);
 * - each feature is hashed into `buckets` slots (1 + fnv1a32(utf8(feature)) %
 *   (buckets - 1); slot 0 is the bias), present = 1, and the vector is scaled
 *   to unit L2 norm.
 * Training weighs the classes to balance, so the raw logit is free of the
 * data's prior (most reviews are positive): the review's sentiment is
 * 2 x sigmoid(a x raw logit) - 1 in [-1, 1], 0 = undecided, where a is the
 * Platt slope (its scale, without its prior-carrying intercept). `probability` is the
 * Platt-calibrated P(positive) on the validation window, which carries the
 * prior (a 0.8 there is a rather negative review).
 *
 * Aspects: what a review talks about. Training keeps a vocabulary of noun
 * terms (single nouns and noun-noun pairs, tagged by wink-nlp's part-of-speech
 * tagger over the training reviews) with their inverse document frequency;
 * a review's aspects are its vocabulary terms ranked by tf x idf (a pair
 * hides the single nouns it contains; a plural "s" falls back to the
 * singular when only that is known), at most `MAX_ASPECTS`.
 *
 * Artifact: `models/sentiment/<version>/` with manifest.json (format "json"),
 * `weights.bin` (Float32 little-endian, `buckets` values) and `model.json`
 * (the spec: buckets, calibration, the aspect vocabulary with idf).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, ErrorCode, PortraitError } from "../errors.js";
import { FNV1A32_OFFSET, fnv1a32String, fnv1a32Update } from "../wire/partition.js";
import { EventType } from "../wire/proto.js";
import { readManifest, type ModelManifest } from "./artifacts.js";
import { calibrate, sigmoid, validateCalibration, type Calibration } from "./calibration.js";

/** Aspects returned per review. */
export const MAX_ASPECTS = 3;
/** Tokens after a negator that are negated. */
const NEGATION_SCOPE = 3;
const NEGATORS = new Set([
  "not", "no", "never", "nothing", "none", "nor", "neither", "hardly", "barely", "without",
  "dont", "doesnt", "didnt", "isnt", "wasnt", "arent", "werent", "cant", "cannot", "couldnt", "wont", "wouldnt", "shouldnt", "havent", "hasnt", "hadnt", "aint",
]);

export interface SentimentSpec {
  /** Hash slots including the bias slot 0; a power of two. */
  buckets: number;
  calibration?: Calibration;
  /** Aspect vocabulary: term ("string" or "tuning peg") -> idf = ln(docs / (1 + df)). */
  aspects: Record<string, number>;
}

/** One review analysed. */
export interface ReviewAnalysis {
  /** Calibrated P(positive) (with the training data's prior). */
  probability: number;
  /** 2 x sigmoid(a x raw logit) - 1, in [-1, 1]: balanced, 0 = undecided. */
  sentiment: number;
  /** Up to MAX_ASPECTS aspect terms, strongest first. */
  aspects: string[];
}

/** The tokens of a text and, per token, whether a boundary (punctuation) follows it. */
export interface Tokens {
  tokens: string[];
  stops: boolean[];
}

/**
 * Tokens: runs of [a-z0-9] and characters from U+00C0 on, lower-cased;
 * apostrophes (' and U+2019) are dropped inside a word ("don't" -> "dont");
 * any other character ends a word, and . , ; : ! ? ( ) also mark a boundary
 * after the word before (as does the end of the text). Words are sliced, not
 * built a character at a time (this runs on every review).
 */
export function tokenize(text: string): Tokens {
  const tokens: string[] = [];
  const stops: boolean[] = [];
  const lower = text.toLowerCase();
  // The word so far: `head` (its parts before apostrophes) and the run from `start` (-1: none).
  let head = "";
  let start = -1;
  const n = lower.length;
  for (let i = 0; i < n; i++) {
    const c = lower.charCodeAt(i);
    if ((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c >= 0xc0) {
      if (start < 0) start = i;
    } else if (c === 39 || c === 0x2019) {
      if (start >= 0) {
        head += lower.slice(start, i);
        start = -1;
      }
    } else {
      if (start >= 0 || head !== "") {
        tokens.push(start >= 0 ? head + lower.slice(start, i) : head);
        stops.push(false);
        head = "";
        start = -1;
      }
      // . , ; : ! ? ( )
      if ((c === 46 || c === 44 || c === 59 || c === 58 || c === 33 || c === 63 || c === 40 || c === 41) && stops.length > 0) stops[stops.length - 1] = true;
    }
  }
  if (start >= 0 || head !== "") {
    tokens.push(start >= 0 ? head + lower.slice(start) : head);
    stops.push(true);
  }
  return { tokens, stops };
}

/** The feature strings of a review (before hashing): its text's and its title's (see the header). */
export function sentimentFeatures(text: string, title = ""): string[] {
  const out = textFeatures(text, "", []);
  const t = title.trim();
  if (t !== "") {
    textFeatures(t, "", out);
    textFeatures(t, "s:", out);
  }
  return out;
}

function textFeatures(text: string, prefix: string, out: string[]): string[] {
  return tokenFeatures(tokenize(text), prefix, out);
}

function tokenFeatures({ tokens, stops }: Tokens, prefix: string, out: string[]): string[] {
  let negate = 0;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    out.push(negate > 0 ? `${prefix}!${t}` : `${prefix}${t}`);
    if (i + 1 < tokens.length && !stops[i]) out.push(`${prefix}${t} ${tokens[i + 1]}`);
    if (NEGATORS.has(t)) negate = NEGATION_SCOPE;
    else if (negate > 0) negate--;
    if (stops[i]) negate = 0;
  }
  return out;
}

/** Hashed feature slots of a review (distinct, sorted), with the common value 1/sqrt(count) (unit L2 norm); slot 0 (bias) not included. */
export function hashFeatures(text: string, title: string, buckets: number): { slots: Uint32Array; value: number } {
  return hashedSlots(sentimentFeatures(text, title), buckets);
}

function hashedSlots(features: string[], buckets: number): { slots: Uint32Array; value: number } {
  const set = new Set<number>();
  for (const f of features) set.add(1 + (fnv1a32String(f) % (buckets - 1)));
  return sortedSlots(set);
}

function sortedSlots(set: Set<number>): { slots: Uint32Array; value: number } {
  const slots = Uint32Array.from(set).sort();
  return { slots, value: slots.length > 0 ? 1 / Math.sqrt(slots.length) : 0 };
}

/**
 * Hashed slots of the review being analysed (featureSlotsInto, slotsLogit):
 * one buffer per thread, grown when a review needs more, so a review
 * allocates no set of slots.
 */
const slotScratch = { buf: new Uint32Array(1024), n: 0 };

function pushSlot(slot: number): void {
  const s = slotScratch;
  if (s.n === s.buf.length) {
    const grown = new Uint32Array(s.buf.length * 2);
    grown.set(s.buf);
    s.buf = grown;
  }
  s.buf[s.n++] = slot;
}

/**
 * The hashed slots of tokenFeatures(tokens, prefix) appended to slotScratch,
 * without building the feature strings: each feature's FNV-1a is computed
 * part by part (prefix, "!", token, " ", next token), the same hash as of
 * the string. Repeats are removed by slotsLogit.
 */
function featureSlotsInto({ tokens, stops }: Tokens, prefix: string, buckets: number): void {
  const m = buckets - 1;
  const base = fnv1a32Update(FNV1A32_OFFSET, prefix);
  const negated = fnv1a32Update(base, "!");
  let negate = 0;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    const h = fnv1a32Update(base, t);
    pushSlot(1 + ((negate > 0 ? fnv1a32Update(negated, t) : h) >>> 0) % m);
    if (i + 1 < tokens.length && !stops[i]) pushSlot(1 + (fnv1a32Update(fnv1a32Update(h, " "), tokens[i + 1]!) >>> 0) % m);
    if (NEGATORS.has(t)) negate = NEGATION_SCOPE;
    else if (negate > 0) negate--;
    if (stops[i]) negate = 0;
  }
}

/** logitOf over the slots in slotScratch (the same sum, in the same order: distinct slots ascending); empties it. */
function slotsLogit(weights: Float32Array): number {
  const sorted = slotScratch.buf.subarray(0, slotScratch.n).sort();
  slotScratch.n = 0;
  let distinct = 0;
  for (let i = 0; i < sorted.length; i++) if (i === 0 || sorted[i] !== sorted[i - 1]) sorted[distinct++] = sorted[i]!;
  const value = distinct > 0 ? 1 / Math.sqrt(distinct) : 0;
  let z = weights[0]!;
  for (let i = 0; i < distinct; i++) z += weights[sorted[i]!]! * value;
  return z;
}

/** The raw logit of a review under `weights` (slot 0 is the bias). */
export function sentimentLogit(weights: Float32Array, text: string, title = ""): number {
  return logitOf(weights, sentimentFeatures(text, title));
}

function logitOf(weights: Float32Array, features: string[]): number {
  const { slots, value } = hashedSlots(features, weights.length);
  let z = weights[0]!;
  for (const s of slots) z += weights[s]! * value;
  return z;
}

/** A review's aspects under an aspect vocabulary (see the header). */
export function extractAspects(text: string, vocab: Record<string, number>, k = MAX_ASPECTS): string[] {
  return tokenAspects(tokenize(text), vocab, k);
}

/** An aspect vocabulary as read per token: term -> idf in a Map (a lookup of a new string in the object would intern it), and the first words of its two-word terms (a bigram is looked up only after one of them). */
interface AspectIndex {
  idf: Map<string, number>;
  heads: Set<string>;
}
const ASPECT_INDEX = new WeakMap<Record<string, number>, AspectIndex>();

function aspectIndex(vocab: Record<string, number>): AspectIndex {
  let x = ASPECT_INDEX.get(vocab);
  if (x === undefined) {
    x = { idf: new Map(), heads: new Set() };
    for (const term of Object.keys(vocab)) {
      x.idf.set(term, vocab[term]!);
      const sp = term.indexOf(" ");
      if (sp > 0) x.heads.add(term.slice(0, sp));
    }
    ASPECT_INDEX.set(vocab, x);
  }
  return x;
}

/** The vocabulary term a token stands for: itself, else without a plural "s" (longer than 3), else undefined. */
function knownTerm(idf: Map<string, number>, t: string): string | undefined {
  if (idf.has(t)) return t;
  if (t.length > 3 && t.charCodeAt(t.length - 1) === 115) {
    const s = t.slice(0, -1);
    if (idf.has(s)) return s;
  }
  return undefined;
}

function tokenAspects({ tokens, stops }: Tokens, vocab: Record<string, number>, k: number): string[] {
  const { idf, heads } = aspectIndex(vocab);
  let tf: Map<string, number> | undefined;
  let hidden: Set<string> | undefined;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (i + 1 < tokens.length && !stops[i] && heads.has(t)) {
      const next = tokens[i + 1]!;
      const b = knownTerm(idf, `${t} ${next}`);
      if (b !== undefined) {
        tf ??= new Map();
        tf.set(b, (tf.get(b) ?? 0) + 1);
        hidden ??= new Set();
        hidden.add(t);
        hidden.add(next);
        const s = knownTerm(idf, next);
        if (s !== undefined) hidden.add(s);
        continue;
      }
    }
    const u = knownTerm(idf, t);
    if (u !== undefined) (tf ??= new Map()).set(u, (tf.get(u) ?? 0) + 1);
  }
  if (tf === undefined) return [];
  // The k strongest by tf x idf, then by term (a total order: the same as sorting them all).
  const top: string[] = [];
  const score: number[] = [];
  for (const [t, n] of tf) {
    if (hidden?.has(t)) continue;
    const v = n * idf.get(t)!;
    let j = top.length;
    while (j > 0 && (v > score[j - 1]! || (v === score[j - 1]! && t < top[j - 1]!))) j--;
    if (j >= k) continue;
    top.splice(j, 0, t);
    score.splice(j, 0, v);
    if (top.length > k) {
      top.length = k;
      score.length = k;
    }
  }
  return top;
}

/**
 * What the shard adds to an event before applying it (ProfileEvent.review):
 * a REVIEW with text, analysed from its text and its title
 * (attributes["summary"]); undefined for anything else or without a model.
 */
export function analyseReviewEvent(
  model: SentimentModel | undefined,
  e: { type: number; reviewText: string; attributes: { [k: string]: string } },
): { sentiment: number; aspects: string[] } | undefined {
  if (model === undefined || e.type !== EventType.REVIEW || e.reviewText === "") return undefined;
  const a = model.analyse(e.reviewText, e.attributes["summary"] ?? "");
  return { sentiment: a.sentiment, aspects: a.aspects };
}

/** A loaded sentiment model. */
export class SentimentModel {
  readonly version: string;
  readonly spec: SentimentSpec;
  readonly weights: Float32Array;
  readonly manifest: ModelManifest | undefined;

  constructor(spec: SentimentSpec, weights: Float32Array, version: string, manifest?: ModelManifest) {
    if (!(Number.isInteger(spec.buckets) && spec.buckets >= 2) || weights.length !== spec.buckets) {
      throw new ConfigError(`sentiment model ${version}: ${weights.length} weights for ${spec.buckets} buckets`);
    }
    try {
      validateCalibration(spec.calibration);
    } catch (err) {
      throw new ConfigError(`sentiment model ${version}: ${(err as Error).message}`);
    }
    if (typeof spec.aspects !== "object" || spec.aspects === null) throw new ConfigError(`sentiment model ${version}: no aspect vocabulary`);
    this.spec = spec;
    this.weights = weights;
    this.version = version;
    this.manifest = manifest;
  }

  /** Loads `dir/manifest.json` (name "sentiment", format "json"), `files.model` and `files.weights`. */
  static load(dir: string): SentimentModel {
    if (!existsSync(join(dir, "manifest.json"))) throw new ConfigError(`no sentiment model manifest at ${join(dir, "manifest.json")}`);
    const manifest = readManifest(dir);
    if (manifest.name !== "sentiment") throw new ConfigError(`${dir} holds model "${manifest.name}", not "sentiment"`);
    const modelFile = manifest.files?.model;
    const weightsFile = manifest.files?.weights;
    if (typeof modelFile !== "string" || typeof weightsFile !== "string") throw new ConfigError(`sentiment manifest in ${dir} must name files.model and files.weights`);
    let spec: SentimentSpec;
    let bytes: Buffer;
    try {
      spec = JSON.parse(readFileSync(join(dir, modelFile), "utf8")) as SentimentSpec;
      bytes = readFileSync(join(dir, weightsFile));
    } catch (err) {
      throw new PortraitError(ErrorCode.MODEL_CORRUPT, `cannot read sentiment model in ${dir}: ${(err as Error).message}`, { cause: err });
    }
    if (bytes.length !== spec.buckets * 4) throw new PortraitError(ErrorCode.MODEL_CORRUPT, `sentiment weights ${join(dir, weightsFile)}: ${bytes.length} bytes, expected ${spec.buckets * 4}`);
    const weights = new Float32Array(spec.buckets);
    for (let i = 0; i < spec.buckets; i++) weights[i] = bytes.readFloatLE(i * 4);
    return new SentimentModel(spec, weights, manifest.version, manifest);
  }

  /** Calibrated P(positive) of a review. */
  probability(text: string, title = ""): number {
    return calibrate(this.spec.calibration, sentimentLogit(this.weights, text, title));
  }

  /** Sentiment and aspects of a review (aspects from its text and title). */
  analyse(text: string, title = ""): ReviewAnalysis {
    let z: number;
    let aspects: string[];
    // The features' slots are hashed without building the feature strings (featureSlotsInto): the same logit as sentimentLogit.
    const tk = tokenize(text);
    featureSlotsInto(tk, "", this.weights.length);
    const t = title.trim();
    if (t === "") {
      // Without a title the features and the aspects read the same tokens: the text is tokenized once.
      aspects = tokenAspects(tk, this.spec.aspects, MAX_ASPECTS);
    } else {
      const tt = tokenize(t);
      featureSlotsInto(tt, "", this.weights.length);
      featureSlotsInto(tt, "s:", this.weights.length);
      aspects = extractAspects(`${title}.\n${text}`, this.spec.aspects);
    }
    z = slotsLogit(this.weights);
    const a = this.spec.calibration?.a ?? 1;
    return { probability: calibrate(this.spec.calibration, z), sentiment: 2 * sigmoid(a * z) - 1, aspects };
  }
}
