/**
 * Trains the feedback ranker from the training log (`portrait train ranker
 * --from-feedback`, README "The feedback loop") and writes
 * `models/ranker/<version>/` with the evaluation promotion decides on.
 *
 * 1. The logged replies (src/eval/offpolicy.ts) are split in serve time:
 *    the older TRAIN_SHARE to fit, the rest to evaluate.
 * 2. Fit: logistic regression of click on the shown item's normalised
 *    candidate-source scores plus one intercept per slot (the position bias,
 *    not used to rank), each impression weighted by 1 / propensity (inverse
 *    propensity weighting: every pool item counts as if the logging policy
 *    had shown it uniformly, so the fit is not the old ranker's choices
 *    again), weights normalised to mean 1, L2 on the source weights, Newton steps.
 * 3. Evaluate on the later replies: the challenger's self-normalised IPS
 *    (SNIPS) 95% lower bound against the SNIPS estimates of the champion (the
 *    promoted ranker, when there is one) and of the baseline "logged-greedy"
 *    (what the engine served when not exploring). `portrait models promote`
 *    refuses unless the lower bound beats them all (decidePromotion in
 *    src/models/registry.ts). SNIPS, not IPS: with 10% exploration the IPS
 *    normal interval covered the simulated truth in 14 of 20 seeded runs,
 *    SNIPS's in 18 (bench/RESULTS.md, "feedback loop"); IPS's rare large
 *    weights make its sample variance too small when they are missing. Both
 *    are in the manifest's metrics.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { BadRequestError } from "../errors.js";
import { estimateOffPolicy, LOGGED_GREEDY, weightsTarget, type LoggedRequest, type OffPolicyEstimate } from "../eval/offpolicy.js";
import { nextVersion, writeManifest, type ModelManifest } from "../models/artifacts.js";
import { RANKER_FILE, type RankerFile } from "../models/ranker-model.js";
import { CANDIDATE_SOURCES, type CandidateSource } from "../recs/sources.js";
import { VERSION } from "../version.js";

/** Share of the logged replies (oldest first) the fit uses; the rest is the evaluation window. */
export const TRAIN_SHARE = 0.7;
/** Fewest replies of the evaluation window. */
export const MIN_TEST_REQUESTS = 50;
/** Slots with their own intercept; later slots share the last one. */
const SLOT_INTERCEPTS = 10;

export interface TrainRankerOptions {
  modelsDir: string;
  /** Where the log came from, e.g. "stream:PORTRAIT_FEEDBACK". */
  source: string;
  /** The champion: the promoted ranker's version and weights, when there is one. */
  champion?: { version: string; weights: Partial<Record<CandidateSource, number>> };
  /** L2 penalty on the source weights. Default 1. */
  l2?: number;
  makeCurrent?: boolean;
  now?: Date;
}

export interface TrainedRanker {
  dir: string;
  manifest: ModelManifest;
  weights: Partial<Record<CandidateSource, number>>;
  test: { challenger: OffPolicyEstimate; champion?: OffPolicyEstimate; loggedGreedy: OffPolicyEstimate };
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

/**
 * Inverse-propensity-weighted logistic regression (see the file comment):
 * returns the source weights (the slot intercepts are fitted and dropped).
 */
export function fitFeedbackRanker(requests: readonly LoggedRequest[], l2 = 1): Partial<Record<CandidateSource, number>> {
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
  const out: Partial<Record<CandidateSource, number>> = {};
  CANDIDATE_SOURCES.forEach((s, k) => (out[s] = Math.round(beta[k]! * 1e6) / 1e6));
  return out;
}

/** Trains, evaluates and writes a ranker version (see the file comment). */
export function trainRanker(requests: readonly LoggedRequest[], o: TrainRankerOptions): TrainedRanker {
  const sorted = [...requests].sort((a, b) => a.record.servedAtMs - b.record.servedAtMs);
  const cut = Math.floor(sorted.length * TRAIN_SHARE);
  const train = sorted.slice(0, cut);
  const test = sorted.slice(cut);
  if (test.length < MIN_TEST_REQUESTS) {
    throw new BadRequestError(`the training log holds ${sorted.length} replies with logged impressions: too few to train and evaluate a ranker ` +
      `(at least ${Math.ceil(MIN_TEST_REQUESTS / (1 - TRAIN_SHARE))}; turn exploration on with --exploration-share and log rec_propensity in rec_impression / rec_click)`);
  }
  const weights = fitFeedbackRanker(train, o.l2 ?? 1);
  const version = nextVersion(o.modelsDir, "ranker", o.now);
  const challenger = estimateOffPolicy(test, weightsTarget(`ranker@${version}`, weights));
  const loggedGreedy = estimateOffPolicy(test, LOGGED_GREEDY);
  const champion = o.champion !== undefined ? estimateOffPolicy(test, weightsTarget(`ranker@${o.champion.version}`, o.champion.weights)) : undefined;
  const window = (rs: readonly LoggedRequest[]) => ({ fromMs: rs[0]?.record.servedAtMs ?? 0, toMs: rs.at(-1)?.record.servedAtMs ?? 0 });
  const round = (x: number) => Math.round(x * 1e6) / 1e6;
  const values = (e: OffPolicyEstimate) => ({
    "CTR IPS": round(e.ips.estimate), "CTR IPS low95": round(e.ips.low), "CTR IPS high95": round(e.ips.high),
    "CTR SNIPS": round(e.snips.estimate), "CTR SNIPS low95": round(e.snips.low), "CTR SNIPS high95": round(e.snips.high),
  });
  const manifest: ModelManifest = {
    name: "ranker",
    version,
    createdAt: (o.now ?? new Date()).toISOString(),
    portraitVersion: VERSION,
    format: "json",
    architecture: { kind: "inverse-propensity-weighted logistic regression on candidate-source scores", l2: o.l2 ?? 1, slotIntercepts: SLOT_INTERCEPTS },
    features: { sources: [...CANDIDATE_SOURCES] },
    training: {
      data: [o.source], split: `oldest ${TRAIN_SHARE * 100}% of the logged replies to fit, the rest to evaluate`, seed: 0,
      rows: { trainRequests: train.length, testRequests: test.length, trainImpressions: train.reduce((a, q) => a + q.impressions.length, 0) },
    },
    metrics: [
      { task: `off-policy, later ${test.length} logged replies: challenger`, values: values(challenger) },
      { task: `off-policy, later ${test.length} logged replies: logged-greedy`, values: values(loggedGreedy) },
      ...(champion !== undefined ? [{ task: `off-policy, later ${test.length} logged replies: champion ${o.champion!.version}`, values: values(champion) }] : []),
    ],
    files: { weights: RANKER_FILE },
    evaluation: {
      source: o.source,
      trainWindow: window(train),
      testWindow: window(test),
      counts: { train: train.length, test: test.length },
      metric: "CTR: the challenger's SNIPS lower 95% bound vs the SNIPS estimates",
      higherIsBetter: true,
      challenger: round(challenger.snips.low),
      ...(champion !== undefined ? { champion: { version: o.champion!.version, value: round(champion.snips.estimate) } } : {}),
      baselines: { "logged-greedy": round(loggedGreedy.snips.estimate) },
    },
  };
  const dir = writeManifest(o.modelsDir, manifest, o.makeCurrent ?? true);
  const file: RankerFile = { weights };
  writeFileSync(join(dir, RANKER_FILE), JSON.stringify(file, null, 2) + "\n");
  return { dir, manifest, weights, test: { challenger, loggedGreedy, ...(champion !== undefined ? { champion } : {}) } };
}
