/**
 * Trains the purchase-propensity model, P(a purchase within the horizon after
 * the as-of time), on a shop's events (its own stream, or a data set file),
 * and writes `models/propensity/<version>/` with the evaluation that decides
 * whether it may be served (`ModelManifest.evaluation`).
 *
 * Protocol (examples: src/examples/propensity-data.ts):
 * 1. Cut-offs every horizon/6 (at least a minute), split in time into
 *    training, validation and test blocks by event volume, with horizon-long
 *    gaps (strict: no training or validation label lies in the test window).
 * 2. Negatives of the training block are subsampled to at most
 *    MAX_TRAIN_NEGATIVES (a deterministic hash of user and cut-off); the
 *    validation and test blocks keep every example.
 * 3. Candidates fitted on the training block: logistic regression (L2 grid)
 *    and boosted trees (depth grid, tree count by checkpoint); the best
 *    validation AUC wins (the trees only by GBDT_MARGIN).
 * 4. Platt scaling of the chosen model's logit, fitted on the validation block.
 * 5. Scored once on the test block beside the champion (the models directory's
 *    current propensity version, when there is one) and the baselines fitted or
 *    computed on the same blocks: popularity (the user's events so far: the most
 *    active users buy), recency (minutes since the last event) and a
 *    recency/RFM logistic regression.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BadRequestError } from "../errors.js";
import { auc, logloss } from "../metrics/classification.js";
import { currentVersion, nextVersion, versionDir, writeManifest, type ModelEvaluation, type ModelManifest } from "../models/artifacts.js";
import { expectedCalibrationError, fitPlatt, calibrate } from "../models/calibration.js";
import { featureIndices, specLogit, type ChurnModelSpec } from "../models/churn-model.js";
import { PROPENSITY_FEATURE_NAMES, PropensityModel, type PropensitySpec } from "../models/propensity-model.js";
import { VERSION } from "../version.js";
import { selectColumns } from "../examples/churn-data.js";
import { buildPropensityExamples, propensitySplit, type PropensityExamples, type SideScorer } from "../examples/propensity-data.js";
import { LstmRuntime } from "../models/lstm-runtime.js";
import { fitGbdt, fitLogistic, type GbdtParams } from "./churn-fit.js";
import type { TrainingEvents } from "./training-events.js";

export interface TrainPropensityOptions {
  /** Root of the model directories; the model goes to `<modelsDir>/propensity/<version>/`. */
  modelsDir: string;
  /** Label window after each cut-off, ms. Default 30 minutes. */
  horizonMs?: number;
  seed?: number;
  makeCurrent?: boolean;
  /**
   * The champion when the models directory has no propensity model yet: the
   * purchase head of this LSTM (what the profile served as purchase propensity
   * before this model), stepped over the same events as the engine steps it.
   */
  lstmDir?: string;
  onProgress?: (done: number, total: number, note: string) => void;
}

export const DEFAULT_PROPENSITY_HORIZON_MS = 30 * 60_000;
export const MAX_TRAIN_NEGATIVES = 60_000;
export const PROPENSITY_L2_GRID = [0.1, 1, 10, 100] as const;
export const PROPENSITY_DEPTH_GRID = [2, 3] as const;
const GBDT: Readonly<Omit<GbdtParams, "depth" | "seed">> = Object.freeze({
  trees: 200, learningRate: 0.05, l2: 1, minChildWeight: 5, subsample: 0.8, maxBins: 64,
});
const CHECK_EVERY = 25;
const GBDT_MARGIN = 0.005;
/** The recency/RFM baseline's features. */
export const PROPENSITY_RFM_FEATURES = ["idle_min_log", "since_purchase_min_log", "orders_log", "monetary_log", "events_log"] as const;

function stack(examples: readonly PropensityExamples[]): { x: Float64Array[]; y: Uint8Array } {
  return { x: examples.flatMap((e) => e.x), y: Uint8Array.from(examples.flatMap((e) => Array.from(e.y))) };
}

function logits(spec: ChurnModelSpec, x: readonly Float64Array[]): Float64Array {
  const rows = selectColumns(x, featureIndices(spec.features, PROPENSITY_FEATURE_NAMES, "propensity"));
  return Float64Array.from(rows, (r) => specLogit(spec, r));
}

/** FNV-1a of user and cut-off to [0, 1): the same draw on every run. */
function draw(userId: string, cutoffMs: number, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  const s = `${userId}@${cutoffMs}`;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0) / 2 ** 32;
}

const r4 = (v: number) => Number(v.toFixed(4));
const iso = (t: number) => new Date(t).toISOString();

export async function trainPropensity(data: TrainingEvents, opts: TrainPropensityOptions): Promise<{ dir: string; manifest: ModelManifest }> {
  const t0 = performance.now();
  const seed = opts.seed ?? 1;
  const horizonMs = opts.horizonMs ?? DEFAULT_PROPENSITY_HORIZON_MS;
  if (!(Number.isInteger(horizonMs) && horizonMs >= 60_000)) throw new BadRequestError(`horizon must be at least one minute, got ${horizonMs} ms`);
  const total = 5;
  const progress = (done: number, note: string) => opts.onProgress?.(done, total, note);
  const ev = data.events;
  if (ev.length === 0) throw new BadRequestError(`no events to train on from ${data.source} (read ${data.read}, skipped ${data.skipped.invalid} invalid, ${data.skipped.outOfWindow} outside the window)`);
  const split = propensitySplit(Float64Array.from(ev, (e) => e.timestampMs), horizonMs, Math.max(60_000, Math.round(horizonMs / 6)));

  // Training negatives: count first, then keep each with a fixed probability so that at most MAX_TRAIN_NEGATIVES remain.
  const champVersion = currentVersion(opts.modelsDir, "propensity");
  const lstm = champVersion === undefined && opts.lstmDir !== undefined ? LstmRuntime.load(opts.lstmDir) : undefined;
  const full = buildPropensityExamples(ev, [...split.train, ...split.validation, ...split.test], horizonMs, undefined,
    lstm !== undefined ? lstmScorer(lstm, new Set(split.test)) : undefined);
  const inTrain = new Set(split.train);
  let trainNeg = 0;
  for (const e of full) if (inTrain.has(e.cutoffMs)) for (const y of e.y) trainNeg += 1 - y;
  const keepRate = Math.min(1, MAX_TRAIN_NEGATIVES / Math.max(1, trainNeg));
  const train: PropensityExamples[] = full.filter((e) => inTrain.has(e.cutoffMs)).map((e) => {
    const keep = e.y.map((y, i) => (y === 1 || draw(e.userIds[i]!, e.cutoffMs, seed) < keepRate ? 1 : 0));
    const idx = [...keep.keys()].filter((i) => keep[i] === 1);
    return { cutoffMs: e.cutoffMs, userIds: idx.map((i) => e.userIds[i]!), x: idx.map((i) => e.x[i]!), y: Uint8Array.from(idx, (i) => e.y[i]!) };
  });
  const val = stack(full.filter((e) => split.validation.includes(e.cutoffMs)));
  const test = stack(full.filter((e) => split.test.includes(e.cutoffMs)));
  const tr = stack(train);
  const positives = (y: Uint8Array) => y.reduce((a, b) => a + b, 0);
  for (const [what, set] of [["training", tr], ["validation", val], ["test", test]] as const) {
    const p = positives(set.y);
    if (p === 0 || p === set.y.length) {
      throw new BadRequestError(`the ${what} window has ${p} purchases among ${set.y.length} examples: nothing to learn or score ` +
        `(a ${horizonMs / 60_000}-minute horizon over ${iso(ev[0]!.timestampMs)} .. ${iso(ev.at(-1)!.timestampMs)})`);
    }
  }
  progress(1, `examples: train ${tr.y.length} (${positives(tr.y)} buy; negatives kept at rate ${keepRate.toFixed(3)}), ` +
    `validation ${val.y.length} (${positives(val.y)}), test ${test.y.length} (${positives(test.y)})`);

  const names = [...PROPENSITY_FEATURE_NAMES];
  type Cand = { kind: "logistic" | "gbdt"; params: Record<string, number>; auc: number; spec: ChurnModelSpec };
  const cands: Cand[] = [];
  for (const l2 of PROPENSITY_L2_GRID) {
    const spec = fitLogistic({ features: names, x: tr.x, y: tr.y }, l2);
    cands.push({ kind: "logistic", params: { l2 }, auc: auc(logits(spec, val.x), val.y), spec });
  }
  for (const depth of PROPENSITY_DEPTH_GRID) {
    fitGbdt({ features: names, x: tr.x, y: tr.y }, { ...GBDT, depth, seed }, (k, spec) => {
      if ((k + 1) % CHECK_EVERY !== 0) return;
      cands.push({ kind: "gbdt", params: { depth, trees: k + 1 }, auc: auc(logits(spec, val.x), val.y), spec: { ...spec, trees: spec.trees.slice() } });
    });
  }
  const bestOf = (kind: Cand["kind"]) => cands.filter((c) => c.kind === kind).reduce((a, c) => (c.auc > a.auc ? c : a));
  const bl = bestOf("logistic");
  const bg = bestOf("gbdt");
  const chosen = bg.auc >= bl.auc + GBDT_MARGIN ? bg : bl;
  progress(2, `validated ${cands.length} candidates; chose ${chosen.kind} ${JSON.stringify(chosen.params)} (validation AUC ${chosen.auc.toFixed(4)})`);

  const valLogits = logits(chosen.spec, val.x);
  const calibration = fitPlatt(valLogits, val.y);
  const spec: PropensitySpec = { ...chosen.spec, horizonMs, calibration };
  const testLogits = logits(chosen.spec, test.x);
  const testProbs = Float64Array.from(testLogits, (z) => calibrate(calibration, z));
  const rawProbs = Float64Array.from(testLogits, (z) => calibrate(undefined, z));
  const challenger = auc(testLogits, test.y);
  progress(3, `calibrated on validation; test AUC ${challenger.toFixed(4)}`);

  const col = (name: string) => PROPENSITY_FEATURE_NAMES.indexOf(name as never);
  const rfm = fitLogistic({ features: [...PROPENSITY_RFM_FEATURES], x: selectColumns(tr.x, featureIndices(PROPENSITY_RFM_FEATURES, PROPENSITY_FEATURE_NAMES, "propensity")), y: tr.y }, 1);
  const baselines: Record<string, number> = {
    "popularity (events so far)": r4(auc(test.x.map((r) => r[col("events_log")]!), test.y)),
    "recency (minutes since last event)": r4(auc(test.x.map((r) => -r[col("idle_min_log")]!), test.y)),
    "recency/RFM logistic": r4(auc(logits(rfm, test.x), test.y)),
  };
  let champion: ModelEvaluation["champion"];
  if (lstm !== undefined) {
    const side = full.filter((e) => split.test.includes(e.cutoffMs)).flatMap((e) => e.side!);
    champion = { version: `lstm ${lstm.version} purchase head`, value: r4(auc(side, test.y)) };
  }
  if (champVersion !== undefined) {
    try {
      const m = PropensityModel.load(versionDir(opts.modelsDir, "propensity", champVersion));
      champion = { version: champVersion, value: r4(auc(test.x.map((r) => m.logitFeatures(r)), test.y)) };
    } catch (err) {
      progress(4, `champion ${champVersion} not scored: ${(err as Error).message}`);
    }
  }
  progress(4, `baselines ${JSON.stringify(baselines)}${champion ? `, champion ${champion.version} ${champion.value}` : ", no champion"}`);

  const version = nextVersion(opts.modelsDir, "propensity");
  const dir = versionDir(opts.modelsDir, "propensity", version);
  mkdirSync(dir, { recursive: true });
  const files = { model: "model.json" };
  writeFileSync(join(dir, files.model), JSON.stringify(spec) + "\n");
  const definition = `P(a purchase within ${horizonMs / 60_000} minutes of event time after as-of), every user with an event before the cut-off`;
  const evaluation: ModelEvaluation = {
    source: data.source,
    trainWindow: { fromMs: ev[0]!.timestampMs, toMs: split.train.at(-1)! + horizonMs },
    testWindow: { fromMs: split.test[0]!, toMs: split.test.at(-1)! + horizonMs },
    counts: { train: tr.y.length, validation: val.y.length, test: test.y.length, testPositives: positives(test.y) },
    metric: "AUC",
    higherIsBetter: true,
    challenger: r4(challenger),
    ...(champion !== undefined ? { champion } : {}),
    baselines,
  };
  const manifest: ModelManifest = {
    name: "propensity",
    version,
    createdAt: new Date().toISOString(),
    portraitVersion: VERSION,
    format: "json",
    architecture: { kind: chosen.kind, ...chosen.params, output: definition, calibration: "platt on the validation block" },
    features: { names: chosen.spec.features, source: "propensityFeatures(UserState, asOfMs) in src/models/propensity-model.ts, profile built with default profile options" },
    training: {
      data: [data.source],
      split: `strict time split: cut-offs every ${horizonMs / 6 / 60_000} min; train ${iso(split.train[0]!)}..${iso(split.train.at(-1)!)}, ` +
        `validation ${iso(split.validation[0]!)}..${iso(split.validation.at(-1)!)}, test ${iso(split.test[0]!)}..${iso(split.test.at(-1)!)}; ` +
        `each block's label windows end by the next block's first cut-off`,
      seed,
      rows: { train: tr.y.length, validation: val.y.length, test: test.y.length },
      cutoffsMs: split,
      read: data.read,
      skipped: data.skipped,
      negativeKeepRate: r4(keepRate),
      validation: cands.map((c) => ({ kind: c.kind, params: c.params, auc: r4(c.auc) })),
      seconds: r4((performance.now() - t0) / 1000),
    },
    metrics: [
      { task: `${definition}; ${data.source} test block`, values: { AUC: r4(challenger), logloss: r4(logloss(testProbs, test.y)), ECE: r4(expectedCalibrationError(testProbs, test.y)), "ECE uncalibrated": r4(expectedCalibrationError(rawProbs, test.y)) } },
      ...Object.entries(baselines).map(([k, v]) => ({ task: `baseline ${k}; same test block`, values: { AUC: v } })),
    ],
    files,
    evaluation,
  };
  writeManifest(opts.modelsDir, manifest, opts.makeCurrent ?? false);
  progress(5, `wrote ${dir}`);
  return { dir, manifest };
}

/** The LSTM's purchase head as a side scorer: each user's (h, c) stepped once per event, as the shard steps it. */
function lstmScorer(rt: LstmRuntime, at: ReadonlySet<number>): SideScorer {
  const states = new Map<string, { s: Float32Array; prev: number }>();
  return {
    apply(e) {
      let u = states.get(e.userId);
      if (u === undefined) states.set(e.userId, (u = { s: rt.initialState(), prev: 0 }));
      rt.step([u.s], [{ type: e.type, timestampMs: e.timestampMs, itemId: e.itemId, categoryId: e.categoryId, price: e.price }], [u.prev]);
      u.prev = Math.max(u.prev, e.timestampMs);
    },
    score(userId, cutoffMs) {
      if (!at.has(cutoffMs)) return Number.NaN;
      const u = states.get(userId);
      return u === undefined ? 0 : rt.purchasePropensity(u.s);
    },
  };
}
