/**
 * Next-item baselines, fit on the training sessions of a split and scored by
 * src/eval/next-item.ts exactly like the learned models:
 *
 * - `PopularityModel` ("pop"): training event counts.
 * - `SessionPopModel` ("S-POP"): tokens of the current prefix first (by how
 *   often they occur in it), then popularity. It ranks the token just seen
 *   near the top, which is what repeat clicks reward.
 * - `ItemKnnModel` ("item-kNN"): session-rec's ItemKNN (Hidasi et al. 2016's
 *   item-kNN baseline, as implemented by Ludewig & Jannach's session-rec,
 *   knn/iknn.py): co-occurrence of items in training sessions,
 *   sim(i, j) = co(i, j) / ((supp(i) + lambda)^alpha * (supp(j) + lambda)^(1 - alpha)),
 *   where co(i, j) = sum over sessions of n_i * n_j (event multiplicity, as
 *   session-rec counts) and supp(i) = events of i; self-similarity is 0;
 *   only the `neighbors` most similar items are kept; a prefix is scored by
 *   the similarity to its LAST token.
 * - `SequentialRulesModel` ("SR"): session-rec's SR (baselines/sr.py): for
 *   each training click j and each of the `steps` clicks i before it in its
 *   session (distance d, repeats kept), rule i -> j gains 1 / d; a prefix is
 *   scored by the rules of its LAST token (the `pruning` strongest kept).
 * - `SknnModel` ("SKNN"): session-rec's ContextKNN (knn/sknn.py): training
 *   sessions that share tokens with the prefix, the `sampleSize` most recent
 *   of them (by last event), the `k` most similar by cosine or Jaccard
 *   similarity of the token sets; each token is scored with the sum of the
 *   similarities of the neighbour sessions containing it (tokens of the
 *   prefix included, so repeats can be predicted).
 *
 * Every model breaks ties, and ranks tokens it has no score for, by training
 * popularity (then vocabulary order), so the evaluator's pessimistic ties do
 * not punish them for scores they never meant to be equal. All of them work
 * on items or on categories, whichever the vocabulary holds.
 */
import { BadRequestError } from "../errors.js";
import { evaluateNextItem, tokensOf } from "./next-item.js";
import type { NextItemModel, Session, Split, TokenKind, Vocab } from "./next-item.js";

/** Popularity order: popRank[i] = 0 for the most frequent token (ties by index). */
function popularityRank(vocab: Vocab): Int32Array {
  const order = Array.from(vocab.counts.keys()).sort((a, b) => vocab.counts[b]! - vocab.counts[a]! || a - b);
  const rank = new Int32Array(order.length);
  order.forEach((i, r) => (rank[i] = r));
  return rank;
}

/** Distinct scores in (0, 1) decreasing with popularity rank: the fallback every baseline writes first. */
function popularityBase(popRank: Int32Array): Float32Array {
  const n = popRank.length;
  return Float32Array.from(popRank, (r) => 1 - (r + 1) / (n + 1));
}

/**
 * Writes `candidates` (sorted best first) above every other token:
 * out[candidates[r]] = 1 + (m - r) / m, all greater than the popularity base.
 */
function writeAbove(out: Float32Array, candidates: ArrayLike<number>, m: number): void {
  for (let r = 0; r < m; r++) out[candidates[r]!] = 1 + (m - r) / m;
}

/** The vocabulary indices of `s`'s tokens, skipping tokens outside the vocabulary. */
function indices(s: Session, vocab: Vocab): number[] {
  const out: number[] = [];
  for (const t of tokensOf(s, vocab.token)) {
    const i = vocab.index.get(t);
    if (i !== undefined) out.push(i);
  }
  return out;
}

/** The vocabulary index of the prefix's last item (the one the next click follows), or undefined when unknown. */
function lastIndex(vocab: Vocab, prefix: Session, upTo: number): number | undefined {
  return vocab.index.get(tokensOf(prefix, vocab.token)[upTo - 1]!);
}

function checkFitted(base: Float32Array, out: Float32Array, name: string): void {
  if (base.length !== out.length) throw new BadRequestError(`${name}: scored over ${out.length} tokens but fit on ${base.length}; call fit first`);
}

export class PopularityModel implements NextItemModel {
  readonly name = "pop";
  #base: Float32Array = new Float32Array(0);

  fit(_train: Session[], vocab: Vocab): void {
    this.#base = popularityBase(popularityRank(vocab));
  }

  scoreNext(_prefix: Session, _upTo: number, out: Float32Array): void {
    checkFitted(this.#base, out, this.name);
    out.set(this.#base);
  }
}

export class SessionPopModel implements NextItemModel {
  readonly name = "S-POP";
  #base: Float32Array = new Float32Array(0);
  #vocab: Vocab | undefined;

  fit(_train: Session[], vocab: Vocab): void {
    this.#vocab = vocab;
    this.#base = popularityBase(popularityRank(vocab));
  }

  scoreNext(prefix: Session, _upTo: number, out: Float32Array): void {
    checkFitted(this.#base, out, this.name);
    out.set(this.#base);
    for (const i of indices(prefix, this.#vocab!)) out[i]! += 1;
  }
}

export interface ItemKnnOptions {
  /** Neighbours kept per item (default 100; session-rec n_sims). */
  neighbors?: number;
  /** Support regularisation added to both items' counts (default 20; session-rec lmbd). */
  lambda?: number;
  /** Exponent split of the normalisation between the two items (default 0.5 = cosine-like; session-rec alpha). */
  alpha?: number;
}

export class ItemKnnModel implements NextItemModel {
  readonly name: string;
  readonly options: Readonly<Required<ItemKnnOptions>>;
  #vocab: Vocab | undefined;
  #base: Float32Array = new Float32Array(0);
  /** Per item, its neighbours best first. */
  #neighbors: Int32Array[] = [];

  constructor(options: ItemKnnOptions = {}) {
    const { neighbors = 100, lambda = 20, alpha = 0.5 } = options;
    if (!Number.isInteger(neighbors) || neighbors < 1) throw new BadRequestError(`options.neighbors must be a positive integer, got ${neighbors}`);
    if (!(lambda >= 0)) throw new BadRequestError(`options.lambda must be >= 0, got ${lambda}`);
    if (!(alpha >= 0 && alpha <= 1)) throw new BadRequestError(`options.alpha must be in [0, 1], got ${alpha}`);
    this.options = Object.freeze({ neighbors, lambda, alpha });
    this.name = "item-kNN";
  }

  fit(train: Session[], vocab: Vocab): void {
    const { neighbors, lambda, alpha } = this.options;
    const v = vocab.tokens.length;
    this.#vocab = vocab;
    const popRank = popularityRank(vocab);
    this.#base = popularityBase(popRank);
    // Per session: distinct items and their multiplicities; per item: the sessions holding it.
    const sessItems: Int32Array[] = [];
    const sessCounts: Int32Array[] = [];
    const supp = new Float64Array(v);
    const itemSessions: number[][] = Array.from({ length: v }, () => []);
    for (const s of train) {
      const counts = new Map<number, number>();
      for (const i of indices(s, vocab)) counts.set(i, (counts.get(i) ?? 0) + 1);
      if (counts.size === 0) continue;
      const id = sessItems.length;
      sessItems.push(Int32Array.from(counts.keys()));
      sessCounts.push(Int32Array.from(counts.values()));
      for (const [i, n] of counts) {
        supp[i]! += n;
        itemSessions[i]!.push(id);
      }
    }
    const co = new Float64Array(v);
    const touched: number[] = [];
    this.#neighbors = new Array<Int32Array>(v);
    for (let i = 0; i < v; i++) {
      for (const s of itemSessions[i]!) {
        const items = sessItems[s]!;
        const counts = sessCounts[s]!;
        let ni = 0;
        for (let k = 0; k < items.length; k++) if (items[k] === i) ni = counts[k]!;
        for (let k = 0; k < items.length; k++) {
          const j = items[k]!;
          if (j === i) continue;
          if (co[j] === 0) touched.push(j);
          co[j]! += ni * counts[k]!;
        }
      }
      const normI = Math.pow(supp[i]! + lambda, alpha);
      const sim = touched.map((j) => co[j]! / (normI * Math.pow(supp[j]! + lambda, 1 - alpha) || 1));
      const order = touched.map((_, r) => r).sort((a, b) => sim[b]! - sim[a]! || popRank[touched[a]!]! - popRank[touched[b]!]!);
      this.#neighbors[i] = Int32Array.from(order.slice(0, neighbors), (r) => touched[r]!);
      for (const j of touched) co[j] = 0;
      touched.length = 0;
    }
  }

  scoreNext(prefix: Session, upTo: number, out: Float32Array): void {
    checkFitted(this.#base, out, this.name);
    out.set(this.#base);
    if (upTo === 0) return;
    const last = lastIndex(this.#vocab!, prefix, upTo);
    if (last === undefined) return;
    const nb = this.#neighbors[last]!;
    writeAbove(out, nb, nb.length);
  }
}

export interface SequentialRulesModelOptions {
  /** Most clicks back a rule reaches (default 10; session-rec steps). */
  steps?: number;
  /** Rules kept per item, strongest first (default 20; session-rec pruning; 0 = all). */
  pruning?: number;
}

export class SequentialRulesModel implements NextItemModel {
  readonly name = "SR";
  readonly options: Readonly<Required<SequentialRulesModelOptions>>;
  #vocab: Vocab | undefined;
  #base: Float32Array = new Float32Array(0);
  #rules: Array<{ next: Int32Array; score: Float64Array }> = [];

  constructor(options: SequentialRulesModelOptions = {}) {
    const { steps = 10, pruning = 20 } = options;
    if (!Number.isInteger(steps) || steps < 1) throw new BadRequestError(`options.steps must be a positive integer, got ${steps}`);
    if (!Number.isInteger(pruning) || pruning < 0) throw new BadRequestError(`options.pruning must be a non-negative integer, got ${pruning}`);
    this.options = Object.freeze({ steps, pruning });
  }

  fit(train: Session[], vocab: Vocab): void {
    this.#vocab = vocab;
    const popRank = popularityRank(vocab);
    this.#base = popularityBase(popRank);
    const acc: Array<Map<number, number>> = Array.from({ length: vocab.tokens.length }, () => new Map());
    for (const s of train) {
      const seq = indices(s, vocab);
      for (let t = 1; t < seq.length; t++) {
        for (let d = 1; d <= this.options.steps && t - d >= 0; d++) {
          const m = acc[seq[t - d]!]!;
          m.set(seq[t]!, (m.get(seq[t]!) ?? 0) + 1 / d);
        }
      }
    }
    this.#rules = acc.map((m) => {
      let e = [...m].sort((a, b) => b[1] - a[1] || popRank[a[0]]! - popRank[b[0]]!);
      if (this.options.pruning > 0) e = e.slice(0, this.options.pruning);
      return { next: Int32Array.from(e, (x) => x[0]), score: Float64Array.from(e, (x) => x[1]) };
    });
  }

  scoreNext(prefix: Session, upTo: number, out: Float32Array): void {
    checkFitted(this.#base, out, this.name);
    out.set(this.#base);
    if (upTo === 0) return;
    const last = lastIndex(this.#vocab!, prefix, upTo);
    if (last === undefined) return;
    const r = this.#rules[last]!;
    writeAbove(out, r.next, r.next.length);
  }
}

export type SessionSimilarity = "cosine" | "jaccard";

export interface SknnOptions {
  /** Neighbour sessions used for scoring (default 100). */
  k?: number;
  /** Candidate sessions: the most recent ones sharing a token with the prefix (default 500). */
  sampleSize?: number;
  /** Similarity of the token sets of prefix and session (default "cosine"). */
  similarity?: SessionSimilarity;
}

export class SknnModel implements NextItemModel {
  readonly name: string;
  readonly options: Readonly<Required<SknnOptions>>;
  #vocab: Vocab | undefined;
  #base: Float32Array = new Float32Array(0);
  #popRank: Int32Array = new Int32Array(0);
  /** Training sessions ordered by their last event (index = recency order), as distinct token indices. */
  #sessItems: Int32Array[] = [];
  #itemSessions: Int32Array[] = [];
  #overlap = new Int32Array(0);
  #scores = new Float64Array(0);

  constructor(options: SknnOptions = {}) {
    const { k = 100, sampleSize = 500, similarity = "cosine" } = options;
    if (!Number.isInteger(k) || k < 1) throw new BadRequestError(`options.k must be a positive integer, got ${k}`);
    if (!Number.isInteger(sampleSize) || sampleSize < 1) throw new BadRequestError(`options.sampleSize must be a positive integer, got ${sampleSize}`);
    if (similarity !== "cosine" && similarity !== "jaccard") throw new BadRequestError(`options.similarity must be "cosine" or "jaccard", got ${JSON.stringify(similarity)}`);
    this.options = Object.freeze({ k, sampleSize, similarity });
    this.name = "SKNN";
  }

  fit(train: Session[], vocab: Vocab): void {
    const v = vocab.tokens.length;
    this.#vocab = vocab;
    this.#popRank = popularityRank(vocab);
    this.#base = popularityBase(this.#popRank);
    const sessions = train
      .map((s, order) => ({ items: Int32Array.from(new Set(indices(s, vocab))), end: s.times[s.times.length - 1] ?? -Infinity, order }))
      .filter((s) => s.items.length > 0)
      .sort((a, b) => a.end - b.end || a.order - b.order);
    this.#sessItems = sessions.map((s) => s.items);
    const lists: number[][] = Array.from({ length: v }, () => []);
    this.#sessItems.forEach((items, s) => items.forEach((i) => lists[i]!.push(s)));
    this.#itemSessions = lists.map((l) => Int32Array.from(l));
    this.#overlap = new Int32Array(sessions.length);
    this.#scores = new Float64Array(v);
  }

  scoreNext(prefix: Session, _upTo: number, out: Float32Array): void {
    checkFitted(this.#base, out, this.name);
    out.set(this.#base);
    const { k, sampleSize, similarity } = this.options;
    const vocab = this.#vocab!;
    const distinct = new Set(tokensOf(prefix, vocab.token).filter((t) => t !== ""));
    const a = distinct.size;
    const overlap = this.#overlap;
    const touched: number[] = [];
    for (const t of distinct) {
      const i = vocab.index.get(t);
      if (i === undefined) continue;
      for (const s of this.#itemSessions[i]!) if (overlap[s]!++ === 0) touched.push(s);
    }
    if (touched.length === 0) return;
    // Session indices are in recency order: the largest are the most recent.
    const sample = touched.length > sampleSize ? [...touched].sort((x, y) => y - x).slice(0, sampleSize) : touched;
    const neighbors = sample.map((s) => {
      const shared = overlap[s]!;
      const b = this.#sessItems[s]!.length;
      return { s, sim: similarity === "cosine" ? shared / Math.sqrt(a * b) : shared / (a + b - shared) };
    });
    for (const s of touched) overlap[s] = 0;
    neighbors.sort((x, y) => y.sim - x.sim || y.s - x.s);
    const scores = this.#scores;
    const candidates: number[] = [];
    for (const { s, sim } of neighbors.slice(0, k)) {
      for (const i of this.#sessItems[s]!) {
        if (scores[i] === 0) candidates.push(i);
        scores[i]! += sim;
      }
    }
    const popRank = this.#popRank;
    candidates.sort((x, y) => scores[y]! - scores[x]! || popRank[x]! - popRank[y]!);
    writeAbove(out, candidates, candidates.length);
    for (const i of candidates) scores[i] = 0;
  }
}

export interface TuningTrial<P> {
  params: P;
  /** The tuning metric on the validation split. */
  value: number;
}

export interface TuningResult<P> {
  metric: string;
  best: P;
  trials: TuningTrial<P>[];
}

/**
 * Grid search on a validation split (carve it with `validationSplit(split)`;
 * never tune on the test part). Returns the parameters with the highest
 * `metric` (default "MRR@20"); ties go to the earlier grid entry.
 */
export async function tuneOnValidation<P>(
  validation: Split,
  grid: readonly P[],
  make: (params: P) => NextItemModel,
  options: { token?: TokenKind; metric?: string; onTrial?(trial: TuningTrial<P>, index: number, total: number): void } = {},
): Promise<TuningResult<P>> {
  if (grid.length === 0) throw new BadRequestError("the tuning grid is empty");
  const metric = options.metric ?? "MRR@20";
  const k = /^(?:HR|MRR)@(\d+)$/.exec(metric);
  if (!k) throw new BadRequestError(`metric must look like "HR@20" or "MRR@20", got ${JSON.stringify(metric)}`);
  const trials: TuningTrial<P>[] = [];
  for (const [index, params] of grid.entries()) {
    const table = await evaluateNextItem(validation, [make(params)], { token: options.token ?? "item", ks: [Number(k[1])] });
    const trial = { params, value: Number(table.rows[0]![metric]) };
    trials.push(trial);
    options.onTrial?.(trial, index, grid.length);
  }
  const best = trials.reduce((b, t) => (t.value > b.value ? t : b));
  return { metric, best: best.params, trials };
}

/** The grids the evaluation script searches. */
export const ITEM_KNN_GRID: readonly ItemKnnOptions[] = Object.freeze(
  [0, 20, 100, 500].flatMap((lambda) => [0.25, 0.5, 0.75, 0.9].map((alpha) => ({ neighbors: 100, lambda, alpha }))),
);
export const SKNN_GRID: readonly SknnOptions[] = Object.freeze(
  (["cosine", "jaccard"] as const).flatMap((similarity) =>
    [50, 100, 200, 500].flatMap((k) => [500, 1000, 2500, 10_000].map((sampleSize) => ({ k, sampleSize, similarity })))),
);
