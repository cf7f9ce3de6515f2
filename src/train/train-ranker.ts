/**
 * Trains the feedback ranker from the training log (`portrait train ranker
 * --from-feedback`, README "The feedback loop") and writes
 * `models/ranker/<version>/` with the evaluation promotion decides on.
 *
 * 1. The logged replies (src/eval/offpolicy.ts) are split in serve time:
 *    the older TRAIN_SHARE to fit, the rest to evaluate.
 * 2. Fit: the click model of src/eval/click-model.ts (logistic regression
 *    of click on the shown item's normalised candidate-source scores plus one
 *    intercept per slot, the position bias, not used to rank; each impression
 *    weighted by 1 / propensity, so the fit is not the old ranker's choices
 *    again). The ranker is its source weights.
 * 3. Evaluate on the later replies with the doubly robust estimate
 *    (src/eval/offpolicy.ts: item-level under the position-based click
 *    model, position bias and reward model from those replies, cross-fitted):
 *    for each opponent, the champion (the promoted ranker, when there is one)
 *    and the baseline "logged-greedy" (what the engine served when not
 *    exploring), the paired difference challenger - opponent on the same
 *    replies with its 95% interval. The challenger wins only when the lower
 *    bound of every difference is above 0. The manifest's evaluation says it
 *    as decidePromotion (src/models/registry.ts) reads it: `challenger` is the
 *    challenger's estimate, each opponent's value its estimate plus the
 *    half-width of the paired interval (challenger > that value <=> the
 *    difference's lower bound > 0). The slot-level IPS and SNIPS and the
 *    item-level figures are in the manifest's metrics. Why paired and doubly
 *    robust: at 10% exploration the SNIPS lower bound against the greedy
 *    point refused a challenger whose true CTR was 1.2 x (bench/RESULTS.md,
 *    "feedback loop").
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { BadRequestError } from "../errors.js";
import { fitClickModel, SLOT_INTERCEPTS } from "../eval/click-model.js";
import { compareOffPolicy, estimateOffPolicy, LOGGED_GREEDY, offPolicyContext, weightsTarget, type Interval, type LoggedRequest, type OffPolicyEstimate } from "../eval/offpolicy.js";
import { nextVersion, writeManifest, type ModelManifest } from "../models/artifacts.js";
import { RANKER_FILE, type RankerFile } from "../models/ranker-model.js";
import { CANDIDATE_SOURCES, type CandidateSource } from "../recs/sources.js";
import { VERSION } from "../version.js";

/** Share of the logged replies (oldest first) the fit uses; the rest is the evaluation window. */
export const TRAIN_SHARE = 0.7;
/** Fewest replies of the evaluation window. */
export const MIN_TEST_REQUESTS = 50;

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
  test: {
    challenger: OffPolicyEstimate;
    champion?: OffPolicyEstimate;
    loggedGreedy: OffPolicyEstimate;
    /** Doubly robust challenger - opponent on the evaluation replies, paired 95% interval. */
    vsLoggedGreedy: Interval;
    vsChampion?: Interval;
  };
}

/** The feedback ranker: the source weights of the click model fitted on `requests` (src/eval/click-model.ts; the slot intercepts are dropped). */
export function fitFeedbackRanker(requests: readonly LoggedRequest[], l2 = 1): Partial<Record<CandidateSource, number>> {
  return fitClickModel(requests, l2).weights;
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
  const ctx = offPolicyContext(test, { l2: o.l2 ?? 1 });
  const target = weightsTarget(`ranker@${version}`, weights);
  const championTarget = o.champion !== undefined ? weightsTarget(`ranker@${o.champion.version}`, o.champion.weights) : undefined;
  const challenger = estimateOffPolicy(test, target, ctx);
  const loggedGreedy = estimateOffPolicy(test, LOGGED_GREEDY, ctx);
  const champion = championTarget !== undefined ? estimateOffPolicy(test, championTarget, ctx) : undefined;
  const vsLoggedGreedy = compareOffPolicy(ctx, target, LOGGED_GREEDY);
  const vsChampion = championTarget !== undefined ? compareOffPolicy(ctx, target, championTarget) : undefined;
  // The bar an opponent sets: its estimate plus the paired half-width (see the file comment).
  const bar = (e: OffPolicyEstimate, d: Interval) => e.dr.estimate + (d.estimate - d.low);
  const window = (rs: readonly LoggedRequest[]) => ({ fromMs: rs[0]?.record.servedAtMs ?? 0, toMs: rs.at(-1)?.record.servedAtMs ?? 0 });
  const round = (x: number) => Math.round(x * 1e6) / 1e6;
  const values = (e: OffPolicyEstimate) => ({
    "CTR IPS": round(e.ips.estimate), "CTR IPS low95": round(e.ips.low), "CTR IPS high95": round(e.ips.high),
    "CTR SNIPS": round(e.snips.estimate), "CTR SNIPS low95": round(e.snips.low), "CTR SNIPS high95": round(e.snips.high),
    "CTR PBM-SNIPS": round(e.pbmSn.estimate), "CTR PBM-SNIPS low95": round(e.pbmSn.low), "CTR PBM-SNIPS high95": round(e.pbmSn.high),
    "CTR DR": round(e.dr.estimate), "CTR DR low95": round(e.dr.low), "CTR DR high95": round(e.dr.high),
  });
  const diff = (d: Interval) => ({ "CTR DR difference": round(d.estimate), "CTR DR difference low95": round(d.low), "CTR DR difference high95": round(d.high) });
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
      { task: `off-policy, later ${test.length} logged replies: challenger - logged-greedy (paired)`, values: diff(vsLoggedGreedy) },
      ...(vsChampion !== undefined ? [{ task: `off-policy, later ${test.length} logged replies: challenger - champion ${o.champion!.version} (paired)`, values: diff(vsChampion) }] : []),
    ],
    files: { weights: RANKER_FILE },
    evaluation: {
      source: o.source,
      trainWindow: window(train),
      testWindow: window(test),
      counts: { train: train.length, test: test.length },
      metric: "CTR (doubly robust): the challenger's estimate vs each opponent's estimate plus the 95% half-width of their paired difference",
      higherIsBetter: true,
      challenger: round(challenger.dr.estimate),
      ...(champion !== undefined ? { champion: { version: o.champion!.version, value: round(bar(champion, vsChampion!)) } } : {}),
      baselines: { "logged-greedy": round(bar(loggedGreedy, vsLoggedGreedy)) },
    },
  };
  const dir = writeManifest(o.modelsDir, manifest, o.makeCurrent ?? true);
  const file: RankerFile = { weights };
  writeFileSync(join(dir, RANKER_FILE), JSON.stringify(file, null, 2) + "\n");
  return { dir, manifest, weights, test: { challenger, loggedGreedy, vsLoggedGreedy, ...(champion !== undefined ? { champion, vsChampion: vsChampion! } : {}) } };
}
