/**
 * Top-K ranking metrics for next-item evaluation: hit rate (HR@K, also called
 * recall@K when there is one target) and mean reciprocal rank (MRR@K).
 *
 * Every prediction has exactly one target. Its rank is 1-based; a target that
 * cannot be ranked at all (not in the training vocabulary) is a miss at every K.
 *
 * - HR@K  = (targets with rank <= K) / n
 * - MRR@K = sum over targets with rank <= K of 1/rank, divided by n
 *   (a target ranked below K contributes 0, as in the session-rec framework).
 *
 * `n` counts every target added, misses included.
 */
import { BadRequestError } from "../errors.js";

export const DEFAULT_KS: readonly number[] = Object.freeze([10, 20]);

export class RankingAccumulator {
  readonly ks: readonly number[];
  readonly #hits: number[];
  readonly #rr: number[];
  #n = 0;

  /** `ks`: the cut-offs, positive integers (default [10, 20]). */
  constructor(ks: readonly number[] = DEFAULT_KS) {
    if (ks.length === 0) throw new BadRequestError("ks must name at least one cut-off");
    for (const k of ks) {
      if (!Number.isInteger(k) || k < 1) throw new BadRequestError(`ks must be positive integers, got ${k}`);
    }
    this.ks = Object.freeze([...new Set(ks)].sort((a, b) => a - b));
    this.#hits = this.ks.map(() => 0);
    this.#rr = this.ks.map(() => 0);
  }

  /** Records one target: its 1-based rank, or undefined for a miss (not ranked). */
  add(rank: number | undefined): void {
    this.#n++;
    if (rank === undefined) return;
    if (!Number.isInteger(rank) || rank < 1) throw new BadRequestError(`rank must be a positive integer or undefined, got ${rank}`);
    for (let i = 0; i < this.ks.length; i++) {
      if (rank <= this.ks[i]!) {
        this.#hits[i]!++;
        this.#rr[i]! += 1 / rank;
      }
    }
  }

  /** Number of targets added (misses included). */
  get n(): number {
    return this.#n;
  }

  /** `{ "HR@10": .., "MRR@10": .., "HR@20": .., "MRR@20": .., n }`; metrics are NaN when n = 0. */
  result(): Record<string, number> {
    const out: Record<string, number> = {};
    for (let i = 0; i < this.ks.length; i++) {
      out[`HR@${this.ks[i]}`] = this.#hits[i]! / this.#n;
      out[`MRR@${this.ks[i]}`] = this.#rr[i]! / this.#n;
    }
    out.n = this.#n;
    return out;
  }
}

/**
 * The 1-based rank of `scores[target]` among all entries of `scores`, with
 * ties counted PESSIMISTICALLY: rank = 1 + the number of other entries whose
 * score is greater than or equal to the target's. A constant model therefore
 * ranks every target last instead of first, and a model gains nothing from
 * ties; a model that wants a tie order must put it into its scores (the
 * baselines break ties by training popularity). NaN counts as beating the
 * target (and a NaN target is beaten by everything), so a broken model
 * scores badly rather than well. The evaluator uses this for every model.
 *
 * Returns undefined when `target` is out of range (a target outside the
 * vocabulary: a miss).
 */
export function rankOf(scores: Float32Array, target: number): number | undefined {
  if (!Number.isInteger(target) || target < 0 || target >= scores.length) return undefined;
  const t = scores[target]!;
  let above = 0;
  for (let j = 0; j < scores.length; j++) if (!(scores[j]! < t)) above++;
  // The loop counted the target itself (t >= t, or NaN).
  return above;
}
