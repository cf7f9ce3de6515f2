/**
 * The click model of the feedback loop (README "The feedback loop"): what the
 * off-policy estimates (src/eval/offpolicy.ts) and the feedback ranker
 * (src/train/train-ranker.ts) assume of a user's clicks on a reply.
 *
 * Position-based model (PBM): the item `a` in slot `j` (0-based) of a reply is
 * clicked with probability
 *
 *     P(click | a, j) = theta_j * attraction(a)
 *
 * theta_j, the position bias, is the probability that slot j is examined
 * relative to slot 0 (theta_0 = 1); attraction(a) is the item's click
 * probability once examined, for this user (it does not depend on the slot
 * or on the other items shown). The logged propensities (src/recs/exploration.ts)
 * say how likely each (item, slot) was; with theta known, a click on `a` in
 * any slot is evidence of attraction(a), which is what lets an estimate use
 * an item the target shows in another slot than the logged one.
 *
 * - `estimatePositionBias`: theta from the exploring replies, where the item
 *   in each slot is a uniform draw from the pool of the reply's arm (the
 *   ranker's pool or a candidate source's), so the click rate of slot j
 *   over them is theta_j times the same mean attraction for every slot; its
 *   standard errors by the delta method over replies.
 * - `fitClickModel`: a logistic regression of click on the shown item's
 *   normalised candidate-source scores plus one intercept per slot, each
 *   impression weighted by 1 / propensity (inverse-propensity weighting: every
 *   pool item counts as if the logging policy had shown it uniformly), L2 on
 *   the source weights, Newton steps. Only impressions of the ranker's pool
 *   (ServedRecord.pool) are fitted: the ranker re-ranks that pool, and an item
 *   only a source's arm could show has a propensity ~share x sourceShare / (S
 *   pool), whose weight would outweigh the rest of the log. The feedback ranker is its source weights;
 *   the doubly robust estimate uses it as its reward model, attraction(a) ~
 *   sigmoid(w . scores(a) + intercept_0).
 */
import { BadRequestError } from "../errors.js";
import type { ServedPoolItem } from "../recs/feedback-log.js";
import { CANDIDATE_SOURCES, type CandidateSource } from "../recs/sources.js";
import type { LoggedRequest } from "./logged-feedback.js";

/** Slots with their own intercept in `fitClickModel`; later slots share the last one. */
export const SLOT_INTERCEPTS = 10;

/** Relative examination probability of each slot, theta_0 = 1 (see the file comment). */
export interface PositionBias {
  theta: number[];
  /** Standard error of each theta_j (0 for slot 0). */
  se: number[];
  /** Exploring replies it was estimated from. */
  replies: number;
}

/** theta (see the file comment) for slots 0..slots-1 from the exploring replies of `requests`; undefined when none explored or slot 0 has no click. */
export function estimatePositionBias(requests: readonly LoggedRequest[], slots: number): PositionBias | undefined {
  const explored = requests.filter((q) => q.record.explored);
  if (explored.length === 0 || slots < 1) return undefined;
  // Per reply: clicks and impressions per slot (a ratio of sums; its variance by the delta method over replies).
  const n = explored.length;
  const c = Array.from({ length: slots }, () => new Float64Array(n));
  const m = Array.from({ length: slots }, () => new Float64Array(n));
  explored.forEach((q, i) => {
    for (const x of q.impressions) {
      if (x.slot >= slots) continue;
      m[x.slot]![i]! += 1;
      if (x.clicked) c[x.slot]![i]! += 1;
    }
  });
  const sum = (a: Float64Array) => a.reduce((s, v) => s + v, 0);
  const rate = c.map((cj, j) => sum(cj) / Math.max(1, sum(m[j]!)));
  if (!(rate[0]! > 0)) return undefined;
  const theta = rate.map((r) => r / rate[0]!);
  // theta_j = (C_j / M_j) / (C_0 / M_0): influence of reply i, linearised, over n replies.
  const se = theta.map((t, j) => {
    if (j === 0) return 0;
    const Cj = sum(c[j]!);
    const Mj = sum(m[j]!);
    const C0 = sum(c[0]!);
    const M0 = sum(m[0]!);
    if (!(Cj > 0) || n < 2) return Infinity;
    let ss = 0;
    for (let i = 0; i < n; i++) {
      const d = c[j]![i]! / Cj - m[j]![i]! / Mj - c[0]![i]! / C0 + m[0]![i]! / M0;
      ss += d * d;
    }
    return t * Math.sqrt(ss * n / (n - 1));
  });
  return { theta, se, replies: n };
}

/** A fitted click model: source weights and a logit intercept per slot. */
export interface ClickModel {
  weights: Partial<Record<CandidateSource, number>>;
  /** Logit intercepts of slots 0..SLOT_INTERCEPTS-1 (the last one stands for every later slot). */
  slotIntercepts: number[];
}

/** The model's attraction of a pool item: its click probability in slot 0. */
export function attraction(m: ClickModel, item: ServedPoolItem): number {
  let z = m.slotIntercepts[0] ?? 0;
  for (const s of CANDIDATE_SOURCES) z += (m.weights[s] ?? 0) * (item.scores[s] ?? 0);
  return 1 / (1 + Math.exp(-z));
}

/** Solves A x = b (A symmetric positive definite, small) by Gaussian elimination with partial pivoting. */
function solve(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row, i) => [...row, b[i]!]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r]![c]!) > Math.abs(M[p]![c]!)) p = r;
    [M[c], M[p]] = [M[p]!, M[c]!];
    const d = M[c]![c]!;
    if (Math.abs(d) < 1e-12) continue;
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = M[r]![c]! / d;
      if (f !== 0) for (let k = c; k <= n; k++) M[r]![k]! -= f * M[c]![k]!;
    }
  }
  return M.map((row, i) => (Math.abs(row[i]!) < 1e-12 ? 0 : row[n]! / row[i]!));
}

/** Inverse-propensity-weighted logistic regression of click on source scores and slot (see the file comment). */
export function fitClickModel(requests: readonly LoggedRequest[], l2 = 1): ClickModel {
  const S = CANDIDATE_SOURCES.length;
  const D = S + SLOT_INTERCEPTS;
  const xs: Float64Array[] = [];
  const ys: number[] = [];
  const ws: number[] = [];
  for (const q of requests) {
    const pool = new Map(q.record.pool.map((p) => [p.itemId, p]));
    for (const m of q.impressions) {
      const item = pool.get(m.itemId);
      if (item === undefined) continue;
      const x = new Float64Array(D);
      CANDIDATE_SOURCES.forEach((s, k) => (x[k] = item.scores[s] ?? 0));
      x[S + Math.min(m.slot, SLOT_INTERCEPTS - 1)] = 1;
      xs.push(x);
      ys.push(m.clicked ? 1 : 0);
      ws.push(1 / m.propensity);
    }
  }
  if (xs.length === 0) throw new BadRequestError("the training log has no impressions to learn from");
  const meanW = ws.reduce((a, b) => a + b, 0) / ws.length;
  for (let i = 0; i < ws.length; i++) ws[i]! /= meanW;
  const beta = new Array<number>(D).fill(0);
  for (let it = 0; it < 30; it++) {
    const g = new Array<number>(D).fill(0);
    const H = Array.from({ length: D }, () => new Array<number>(D).fill(0));
    for (let i = 0; i < xs.length; i++) {
      const x = xs[i]!;
      let z = 0;
      for (let k = 0; k < D; k++) z += beta[k]! * x[k]!;
      const p = 1 / (1 + Math.exp(-z));
      const w = ws[i]!;
      const e = w * (ys[i]! - p);
      const h = w * p * (1 - p);
      for (let a = 0; a < D; a++) {
        if (x[a] === 0) continue;
        g[a]! += e * x[a]!;
        for (let b = 0; b < D; b++) if (x[b] !== 0) H[a]![b]! += h * x[a]! * x[b]!;
      }
    }
    for (let k = 0; k < D; k++) {
      // L2 on the source weights; a tiny ridge on the slot intercepts keeps slots never logged at 0.
      const lambda = k < S ? l2 : 1e-6;
      g[k]! -= lambda * beta[k]!;
      H[k]![k]! += lambda;
    }
    const step = solve(H, g);
    let moved = 0;
    for (let k = 0; k < D; k++) {
      beta[k]! += step[k]!;
      moved = Math.max(moved, Math.abs(step[k]!));
    }
    if (moved < 1e-8) break;
  }
  const weights: Partial<Record<CandidateSource, number>> = {};
  CANDIDATE_SOURCES.forEach((s, k) => (weights[s] = Math.round(beta[k]! * 1e6) / 1e6));
  return { weights, slotIntercepts: beta.slice(S) };
}
