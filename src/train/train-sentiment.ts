/**
 * Trains the review sentiment model (src/models/sentiment-model.ts) on the
 * Amazon reviews with a strict time split, scores it beside a lexicon
 * baseline, and writes `models/sentiment/<version>/`.
 *
 * Protocol:
 * 1. Reviews with text, sorted by time; labels from the stars: 4-5 -> 1,
 *    1-2 -> 0. 3-star reviews are negatives in training (mixed reviews carry
 *    the complaints a 4-5-star review lacks, and there are few 1-2-star
 *    reviews: 152 in the training window) and left out of validation and
 *    test, which score 1-2 against 4-5.
 * 2. Time split by review time: the first 70% of the labelled reviews train,
 *    the next 10% validate, the last 20% test (a review time on a cut
 *    belongs to the later window, so no day is in two windows).
 * 3. Logistic regression over the hashed features, by our own code: AdaGrad
 *    on the logloss with L2, classes weighted to balance, examples in a
 *    seeded order. The L2 strength and the epochs are chosen by validation
 *    AUC; Platt calibration is fitted on the validation window.
 * 4. The test window is scored once: our model, and the lexicon baselines
 *    wink-nlp (its English lite model's document sentiment, an AFINN-style
 *    lexicon with negation and emphasis handling) and the star-free rate
 *    (constant: AUC 0.5).
 * 5. Aspects: wink-nlp tags the training reviews' parts of speech; nouns and
 *    noun-noun pairs (NOUN or PROPN; normalised, lower-case) tagged so in at least
 *    MIN_NOUN_SHARE of their occurrences, found in at least MIN_ASPECT_DF
 *    training reviews and in at most MAX_ASPECT_SHARE of them, form the
 *    vocabulary, with idf = ln(N / (1 + df)).
 */
import { writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import type { ItemToken } from "wink-nlp";
import { BadRequestError } from "../errors.js";
import { readAmazonReviews } from "../data/amazon-reviews.js";
import { nextVersion, versionDir, writeManifest, type ModelManifest } from "../models/artifacts.js";
import { fitPlatt, sigmoid } from "../models/calibration.js";
import { hashFeatures, SentimentModel, type SentimentSpec } from "../models/sentiment-model.js";
import { seededRandom } from "../models/seeded-random.js";
import { auc, logloss } from "../metrics/classification.js";
import { VERSION } from "../version.js";

export const SENTIMENT_DATA_FILE = "amazon-reviews/Musical_instruments_reviews_partial.csv.gz";
export const SENTIMENT_BUCKETS = 1 << 16;
export const SENTIMENT_L2_GRID = [0.01, 0.03, 0.1] as const;
export const SENTIMENT_MAX_EPOCHS = 8;
const LEARNING_RATE = 0.5;
const MIN_ASPECT_DF = 5;
const MAX_ASPECT_SHARE = 0.25;
/** A term is an aspect only when the tagger calls it a noun (a pair: two nouns) in this share of its occurrences. */
const MIN_NOUN_SHARE = 0.7;
/** The tagger's noun tags (brand and model names are often tagged proper nouns). */
const NOUNS = new Set(["NOUN", "PROPN"]);
/** Common nouns that are not aspects of a product. */
const NOT_ASPECTS = new Set([
  "thing", "things", "lot", "bit", "way", "time", "times", "product", "item", "one", "ones", "review", "reviews", "star", "stars",
  "year", "years", "day", "days", "week", "weeks", "month", "months", "hour", "hours", "minute", "minutes", "price", "money", "amazon", "use", "problem", "problems", "issue", "issues", "stuff", "kind", "something", "anything",
]);

/** A labelled review: the model's inputs and its label. */
export interface SentimentExample {
  timestampMs: number;
  text: string;
  /** The review's title (summary), "" when none. */
  title: string;
  /** 1 positive (4-5 stars), 0 negative (1-2 stars). */
  label: number;
  rating: number;
}

/** Reads the labelled reviews with text in time order (3 stars included: label 0, `rating` 3). */
export async function loadSentimentExamples(file: string, limit?: number): Promise<SentimentExample[]> {
  const out: SentimentExample[] = [];
  for await (const e of readAmazonReviews(file, limit !== undefined ? { limit } : {})) {
    const rating = e.rating ?? 0;
    const text = e.reviewText ?? "";
    if (rating === 0 || text.trim() === "") continue;
    out.push({ timestampMs: e.timestampMs, text, title: e.attributes?.summary ?? "", label: rating >= 4 ? 1 : 0, rating });
  }
  // A stable sort: reviews of the same day keep file order.
  return out.sort((a, b) => a.timestampMs - b.timestampMs);
}

/** Index of the first example at or after the time at `share` of the examples (a time cut: equal times stay together). */
function timeCut(ex: SentimentExample[], share: number): number {
  let i = Math.floor(ex.length * share);
  const t = ex[i]!.timestampMs;
  while (i > 0 && ex[i - 1]!.timestampMs === t) i--;
  return i;
}

export interface SentimentSplit {
  train: SentimentExample[];
  validation: SentimentExample[];
  test: SentimentExample[];
}

export function splitSentiment(ex: SentimentExample[]): SentimentSplit {
  const a = timeCut(ex, 0.7);
  const b = timeCut(ex, 0.8);
  const scored = (w: SentimentExample[]) => w.filter((e) => e.rating !== 3);
  const split = { train: ex.slice(0, a), validation: scored(ex.slice(a, b)), test: scored(ex.slice(b)) };
  for (const [k, v] of Object.entries(split)) {
    if (!v.some((e) => e.label === 1) || !v.some((e) => e.label === 0)) throw new BadRequestError(`too few reviews for a sentiment split: the ${k} window lacks a label`);
  }
  return split;
}

type Hashed = { slots: Uint32Array; value: number; label: number }[];

function hashAll(ex: SentimentExample[], buckets: number): Hashed {
  return ex.map((e) => ({ ...hashFeatures(e.text, e.title, buckets), label: e.label }));
}

function logit(w: Float32Array, h: { slots: Uint32Array; value: number }): number {
  let z = w[0]!;
  for (const s of h.slots) z += w[s]! * h.value;
  return z;
}

/** AdaGrad logistic regression; returns the weights after each epoch via `onEpoch`. */
function fit(rows: Hashed, buckets: number, l2: number, epochs: number, seed: number, onEpoch: (epoch: number, w: Float32Array) => void): void {
  const w = new Float32Array(buckets);
  const g2 = new Float64Array(buckets).fill(1e-8);
  const pos = rows.filter((r) => r.label === 1).length;
  const wPos = rows.length / (2 * pos);
  const wNeg = rows.length / (2 * (rows.length - pos));
  const order = rows.map((_, i) => i);
  const rand = seededRandom(seed);
  for (let ep = 1; ep <= epochs; ep++) {
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (const i of order) {
      const r = rows[i]!;
      const err = (sigmoid(logit(w, r)) - r.label) * (r.label === 1 ? wPos : wNeg);
      g2[0]! += err * err;
      w[0]! -= (LEARNING_RATE * err) / Math.sqrt(g2[0]!);
      for (const s of r.slots) {
        const g = err * r.value + l2 * w[s]!;
        g2[s]! += g * g;
        w[s]! -= (LEARNING_RATE * g) / Math.sqrt(g2[s]!);
      }
    }
    onEpoch(ep, w);
  }
}

/** wink-nlp with its English lite model, loaded on first use (training only: the engine and the CLI's other commands never load it). */
async function wink() {
  const [{ default: winkNLP }, { default: winkModel }] = await Promise.all([import("wink-nlp"), import("wink-eng-lite-web-model")]);
  return winkNLP(winkModel);
}

/** The wink-nlp document sentiment of each text (the lexicon baseline). */
export async function lexiconScores(texts: string[]): Promise<Float64Array> {
  const nlp = await wink();
  const out = new Float64Array(texts.length);
  texts.forEach((t, i) => (out[i] = nlp.readDoc(t).out(nlp.its.sentiment) as unknown as number));
  return out;
}

/** The aspect vocabulary of the training reviews (see the header). */
export async function aspectVocabulary(texts: string[]): Promise<Record<string, number>> {
  const nlp = await wink();
  const its = nlp.its;
  const df = new Map<string, number>();
  // Occurrences of a term, and those tagged as nouns (a pair: both tokens nouns).
  const seenAll = new Map<string, number>();
  const seenNoun = new Map<string, number>();
  const word = /^[a-z][a-z0-9]+$/;
  const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  for (const text of texts) {
    const docTerms = new Set<string>();
    const toks: { pos: string; t: string }[] = [];
    nlp.readDoc(text).tokens().each((tok: ItemToken) => {
      toks.push({ pos: tok.out(its.pos) as string, t: (tok.out(its.normal) as string).replace(/['\u2019]/g, "") });
    });
    for (let i = 0; i < toks.length; i++) {
      const a = toks[i]!;
      if (!word.test(a.t) || NOT_ASPECTS.has(a.t)) continue;
      bump(seenAll, a.t);
      const aNoun = NOUNS.has(a.pos);
      if (aNoun) {
        bump(seenNoun, a.t);
        docTerms.add(a.t);
      }
      const b = toks[i + 1];
      if (b === undefined || !word.test(b.t) || NOT_ASPECTS.has(b.t)) continue;
      const pair = `${a.t} ${b.t}`;
      bump(seenAll, pair);
      if (aNoun && NOUNS.has(b.pos)) {
        bump(seenNoun, pair);
        docTerms.add(pair);
      }
    }
    for (const s of docTerms) bump(df, s);
  }
  const n = texts.length;
  const vocab: Record<string, number> = {};
  for (const [t, d] of [...df].sort((x, y) => (x[0] < y[0] ? -1 : 1))) {
    const nounShare = (seenNoun.get(t) ?? 0) / (seenAll.get(t) ?? 1);
    if (d >= MIN_ASPECT_DF && d / n <= MAX_ASPECT_SHARE && nounShare >= MIN_NOUN_SHARE) vocab[t] = Math.log(n / (1 + d));
  }
  return vocab;
}

export interface TrainSentimentOptions {
  /** Directory of the data sets (../shared/data). */
  dataDir: string;
  /** Reviews file relative to dataDir. Default SENTIMENT_DATA_FILE. */
  file?: string;
  modelsDir: string;
  seed?: number;
  makeCurrent?: boolean;
  /** Read only the first `limit` reviews (tests). */
  limit?: number;
  onProgress?: (done: number, total: number, note: string) => void;
}

export interface SentimentResult {
  dir: string;
  manifest: ModelManifest;
  /** Test-window figures: ours and the lexicon's. */
  test: { n: number; positives: number; auc: number; accuracy: number; logloss: number; lexiconAuc: number; lexiconAccuracy: number };
}

function accuracy(scores: ArrayLike<number>, labels: number[], threshold: number): number {
  let ok = 0;
  for (let i = 0; i < labels.length; i++) if ((scores[i]! >= threshold ? 1 : 0) === labels[i]) ok++;
  return ok / labels.length;
}

export async function trainSentiment(o: TrainSentimentOptions): Promise<SentimentResult> {
  const t0 = performance.now();
  const seed = o.seed ?? 42;
  const file = join(o.dataDir, o.file ?? SENTIMENT_DATA_FILE);
  const note = o.onProgress ?? (() => {});
  const all = await loadSentimentExamples(file, o.limit);
  const split = splitSentiment(all);
  const buckets = SENTIMENT_BUCKETS;
  const train = hashAll(split.train, buckets);
  const val = hashAll(split.validation, buckets);
  const valLabels = split.validation.map((e) => e.label);
  note(0, SENTIMENT_L2_GRID.length, `${split.train.length} train, ${split.validation.length} validation, ${split.test.length} test reviews`);
  let best = { auc: -1, l2: 0, epochs: 0, w: new Float32Array(0) };
  for (const [k, l2] of SENTIMENT_L2_GRID.entries()) {
    fit(train, buckets, l2, SENTIMENT_MAX_EPOCHS, seed, (ep, w) => {
      const a = auc(val.map((r) => logit(w, r)), valLabels);
      if (a > best.auc + 1e-9) best = { auc: a, l2, epochs: ep, w: Float32Array.from(w) };
    });
    note(k + 1, SENTIMENT_L2_GRID.length, `l2 ${l2}: best validation AUC so far ${best.auc.toFixed(4)} (l2 ${best.l2}, ${best.epochs} epochs)`);
  }
  const calibration = fitPlatt(val.map((r) => logit(best.w, r)), valLabels);
  note(0, 0, "aspect vocabulary (wink-nlp part-of-speech tags over the training reviews)");
  const lexInput = (e: SentimentExample) => (e.title === "" ? e.text : `${e.title}.\n${e.text}`);
  const aspects = await aspectVocabulary(split.train.map(lexInput));
  const spec: SentimentSpec = { buckets, calibration, aspects };

  const model = new SentimentModel(spec, best.w, "candidate");
  const testLabels = split.test.map((e) => e.label);
  const probs = split.test.map((e) => model.probability(e.text, e.title));
  note(0, 0, "lexicon baseline (wink-nlp) on the test window");
  const lex = await lexiconScores(split.test.map(lexInput));
  // The lexicon's threshold: its best accuracy on the validation window (0 = neutral is its own default).
  const lexVal = await lexiconScores(split.validation.map(lexInput));
  let lexThreshold = 0;
  let lexBestAcc = -1;
  for (const th of [-0.2, -0.1, 0, 0.05, 0.1, 0.15, 0.2, 0.3]) {
    const a = accuracy(lexVal, valLabels, th);
    if (a > lexBestAcc) [lexBestAcc, lexThreshold] = [a, th];
  }
  const test = {
    n: split.test.length,
    positives: testLabels.reduce((s, l) => s + l, 0),
    auc: auc(probs, testLabels),
    accuracy: accuracy(probs, testLabels, 0.5),
    logloss: logloss(probs, testLabels),
    lexiconAuc: auc(lex, testLabels),
    lexiconAccuracy: accuracy(lex, testLabels, lexThreshold),
  };
  const version = nextVersion(o.modelsDir, "sentiment");
  const dir = versionDir(o.modelsDir, "sentiment", version);
  const windows = (w: SentimentExample[]) => ({ fromMs: w[0]!.timestampMs, toMs: w.at(-1)!.timestampMs });
  const manifest: ModelManifest = {
    name: "sentiment", version, createdAt: new Date().toISOString(), portraitVersion: VERSION, format: "json",
    architecture: {
      kind: "logistic", l2: best.l2, optimizer: `adagrad lr ${LEARNING_RATE}, balanced class weights`,
      output: "P(positive review), Platt-calibrated; sentiment = 2p - 1",
      choice: `L2 in ${SENTIMENT_L2_GRID.join(", ")} and epochs 1..${SENTIMENT_MAX_EPOCHS} by validation AUC`,
    },
    features: {
      input: "review_text, and the title (attributes.summary of a REVIEW event; the data set's summary) when present",
      encoding: "unigrams (negated within 3 tokens after a negator) + bigrams; 1 + fnv1a32(utf8(feature)) % (buckets - 1); binary, unit L2 norm; slot 0 = bias",
      buckets, aspectTerms: Object.keys(aspects).length,
    },
    training: {
      data: [SENTIMENT_DATA_FILE], seed, epochs: best.epochs,
      split: "time: first 70% of reviews train, next 10% validate, last 20% test; 4-5 stars positive, 1-2 negative; 3 stars negative in training, left out of validation and test",
      rows: { train: split.train.length, validation: split.validation.length, test: split.test.length },
      windows: { train: windows(split.train), validation: windows(split.validation), test: windows(split.test) },
      seconds: Math.round((performance.now() - t0) / 100) / 10,
    },
    metrics: [
      { task: "sentiment amazon-reviews validation (time split)", values: { AUC: best.auc } },
      { task: "sentiment amazon-reviews test (last 20% by time)", values: { AUC: test.auc, accuracy: test.accuracy, logloss: test.logloss, n: test.n, positives: test.positives } },
      { task: "lexicon baseline wink-nlp sentiment, same test window", values: { AUC: test.lexiconAuc, accuracy: test.lexiconAccuracy, threshold: lexThreshold } },
      { task: "constant baseline (always positive), same test window", values: { AUC: 0.5, accuracy: test.positives / test.n } },
    ],
    files: { model: "model.json", weights: "weights.bin" },
  };
  writeManifest(o.modelsDir, manifest, o.makeCurrent ?? false);
  writeFileSync(join(dir, "model.json"), JSON.stringify(spec) + "\n");
  writeFileSync(join(dir, "weights.bin"), Buffer.from(best.w.buffer, best.w.byteOffset, best.w.byteLength));
  note(1, 1, `wrote ${relative(process.cwd(), dir) || dir}`);
  // The artifact loads back exactly as the engine will load it.
  SentimentModel.load(dir);
  return { dir, manifest, test };
}

