/**
 * Trains the churn model (P(no purchase in the next 90 days)) on UCI Online
 * Retail with a strict time split, and writes `models/churn/<version>/`.
 *
 * Protocol (DEFAULT_CHURN_SPLIT; every label window ends by the test cut-off):
 * 1. Profiles are built with `applyEvent` from the events before each cut-off;
 *    features are `churnFeatures(state, cutoff)`.
 * 2. Model choice: the last training cut-off is the validation set, and the
 *    candidates are fitted on the training cut-offs whose label windows end by
 *    it. The validation replica keeps the test's gap: a model fitted on
 *    windows that overlap the validation window can recognise the same
 *    customers' feature vectors and scores too well there (measured: deeper
 *    trees then look better and better, while with the gap they overfit).
 * 3. Candidates: logistic regression (L2 grid) and boosted trees (depth grid,
 *    tree count by checkpoint). Within a kind the best validation AUC wins,
 *    candidates within AUC_TIE of it are decided by validation logloss. The
 *    trees replace the logistic model only when their validation AUC is
 *    higher by GBDT_MARGIN or more (a smaller gain is within noise and the
 *    linear model is smaller and extrapolates smoothly to longer histories).
 * 4. Both kinds and the RFM-only logistic baseline are refitted on all
 *    training cut-offs and scored once on the test cut-off.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { BadRequestError } from "../errors.js";
import { churnEvalTable, scoreSpec } from "../eval/churn-eval.js";
import { currentVersion, nextVersion, versionDir, writeManifest, type ModelEvaluation, type ModelManifest, type ModelMetric } from "../models/artifacts.js";
import { fitPlatt } from "../models/calibration.js";
import { CHURN_FEATURE_NAMES, ChurnModel, featureIndices, specLogit, type ChurnModelSpec } from "../models/churn-model.js";
import { auc } from "../metrics/classification.js";
import type { EvalTable } from "../eval/eval-table.js";
import { VERSION } from "../version.js";
import {
  DEFAULT_CHURN_SPLIT, MS_PER_DAY, buildChurnExamples, checkSplit, deriveChurnSplit, loadRetailEvents, selectColumns,
  type ChurnExamples, type ChurnSplit,
} from "../examples/churn-data.js";
import { fitGbdt, fitLogistic, type GbdtParams } from "./churn-fit.js";
import type { TrainingEvents } from "./training-events.js";

export interface TrainChurnOptions {
  /** Directory holding the data sets (../shared/data). */
  dataDir: string;
  /** Online Retail file, relative to dataDir or absolute. Default: online-retail/online_retail.csv.gz. */
  file?: string;
  /** Root of the model directories; the model goes to `<modelsDir>/churn/<version>/`. */
  modelsDir: string;
  /** Seed of the trees' row subsampling. Default 1. */
  seed?: number;
  /** Point `<modelsDir>/churn/CURRENT` at the new version. Default false. */
  makeCurrent?: boolean;
  /** Called after each step with (done, total, what was done). */
  onProgress?: (done: number, total: number, note: string) => void;
  /** Read only the first `limit` events of the file (tests). Default: all. */
  limit?: number;
  /** Cut-offs and horizon. Default DEFAULT_CHURN_SPLIT when the events cover it, else `deriveChurnSplit` of the events. */
  split?: ChurnSplit;
  /**
   * Train on these events instead of reading the Online Retail file: the shop's
   * own stream (`streamEvents`, src/train/training-events.ts). Their source is
   * recorded in the manifest's evaluation.
   */
  events?: TrainingEvents;
}

/** L2 strengths tried for the logistic model. */
export const LOGISTIC_L2_GRID = [0.1, 1, 10, 100] as const;
/** Tree depths tried; tree counts are checked every GBDT_CHECK_EVERY trees up to GBDT_BASE.trees. */
export const GBDT_DEPTH_GRID = [2, 3] as const;
export const GBDT_BASE: Readonly<Omit<GbdtParams, "depth" | "seed">> = Object.freeze({
  trees: 300, learningRate: 0.05, l2: 1, minChildWeight: 20, subsample: 0.8, maxBins: 64,
});
export const GBDT_CHECK_EVERY = 25;
/** Candidates within this validation AUC of the best are decided by validation logloss. */
export const AUC_TIE = 0.002;
/** Validation AUC the trees must gain over the logistic model to be chosen. */
export const GBDT_MARGIN = 0.005;
/** L2 of the RFM-only logistic baseline. */
export const RFM_L2 = 1;
/** The RFM baseline's features: recency, frequency (orders), monetary (net). */
export const RFM_FEATURES = ["recency_days_log", "orders_log", "monetary_log"] as const;

interface Scored {
  auc: number;
  logloss: number;
}

/** A candidate on the validation set. */
export interface ChurnCandidate extends Scored {
  kind: "logistic" | "gbdt";
  params: Record<string, number>;
}

function stack(examples: readonly ChurnExamples[]): { x: Float64Array[]; y: Uint8Array } {
  return { x: examples.flatMap((e) => e.x), y: Uint8Array.from(examples.flatMap((e) => Array.from(e.y))) };
}

function pick(cands: ChurnCandidate[]): ChurnCandidate {
  const best = Math.max(...cands.map((c) => c.auc));
  return cands.filter((c) => c.auc >= best - AUC_TIE).reduce((a, c) => (c.logloss < a.logloss ? c : a));
}

function round(v: number, digits = 4): number {
  return Number(v.toFixed(digits));
}

const isoDay = (t: number) => new Date(t).toISOString().slice(0, 10);

export async function trainChurn(opts: TrainChurnOptions): Promise<{ dir: string; manifest: ModelManifest }> {
  const t0 = performance.now();
  const seed = opts.seed ?? 1;
  if (!Number.isInteger(seed)) throw new BadRequestError(`options.seed must be an integer, got ${seed}`);
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit > 0)) {
    throw new BadRequestError(`options.limit must be a positive integer, got ${opts.limit}`);
  }
  for (const k of ["dataDir", "modelsDir"] as const) {
    if (typeof opts[k] !== "string" || opts[k] === "") throw new BadRequestError(`options.${k} must be a non-empty path`);
  }
  const total = 6;
  const progress = (done: number, note: string) => opts.onProgress?.(done, total, note);

  const { path, events } = opts.events !== undefined
    ? { path: opts.events.source, events: opts.events.events }
    : await loadRetailEvents(opts.dataDir, opts.file, opts.limit);
  const source = opts.events?.source ?? `file:online-retail:${path.split("/").at(-1)}`;
  if (events.length === 0) throw new BadRequestError(`no events in ${path}`);
  const covers = (sp: ChurnSplit) => sp.trainCutoffsMs[0]! > events[0]!.timestampMs && sp.testCutoffMs + sp.horizonMs <= events.at(-1)!.timestampMs;
  const split = opts.split ?? (covers(DEFAULT_CHURN_SPLIT) ? DEFAULT_CHURN_SPLIT : deriveChurnSplit(events[0]!.timestampMs, events.at(-1)!.timestampMs));
  checkSplit(split, events[0]!.timestampMs, events.at(-1)!.timestampMs);
  progress(1, `read ${events.length} events`);

  const cutoffs = [...split.trainCutoffsMs, split.testCutoffMs];
  const examples = buildChurnExamples(events, cutoffs, split.horizonMs);
  const train = examples.slice(0, -1);
  const test = examples.at(-1)!;
  const val = train.at(-1)!;
  const valTrain = train.filter((e) => e.cutoffMs + split.horizonMs <= val.cutoffMs);
  if (valTrain.length === 0) {
    throw new BadRequestError(
      `no training cut-off has its label window end by the validation cut-off ${isoDay(val.cutoffMs)}; add earlier cut-offs`,
    );
  }
  progress(2, `built examples at ${cutoffs.length} cut-offs`);

  const names = [...CHURN_FEATURE_NAMES];
  const vt = stack(valTrain);
  const logisticCands: ChurnCandidate[] = LOGISTIC_L2_GRID.map((l2) => {
    const s = scoreSpec(fitLogistic({ features: names, x: vt.x, y: vt.y }, l2), val.x, val.y);
    return { kind: "logistic", params: { l2 }, auc: s.auc, logloss: s.logloss };
  });
  const gbdtCands: ChurnCandidate[] = [];
  for (const depth of GBDT_DEPTH_GRID) {
    fitGbdt({ features: names, x: vt.x, y: vt.y }, { ...GBDT_BASE, depth, seed }, (k, spec) => {
      if ((k + 1) % GBDT_CHECK_EVERY !== 0) return;
      const s = scoreSpec(spec, val.x, val.y);
      gbdtCands.push({ kind: "gbdt", params: { depth, trees: k + 1 }, auc: s.auc, logloss: s.logloss });
    });
  }
  const bestLogistic = pick(logisticCands);
  const bestGbdt = pick(gbdtCands);
  const chosenKind = bestGbdt.auc >= bestLogistic.auc + GBDT_MARGIN ? "gbdt" : "logistic";
  progress(3, `validated ${logisticCands.length + gbdtCands.length} candidates on ${isoDay(val.cutoffMs)}; chose ${chosenKind}`);

  const all = stack(train);
  const logistic = fitLogistic({ features: names, x: all.x, y: all.y }, bestLogistic.params.l2!);
  const gbdt = fitGbdt({ features: names, x: all.x, y: all.y }, {
    ...GBDT_BASE, depth: bestGbdt.params.depth!, trees: bestGbdt.params.trees!, seed,
  });
  const rfmCols = featureIndices(RFM_FEATURES);
  const rfm = fitLogistic({ features: [...RFM_FEATURES], x: selectColumns(all.x, rfmCols), y: all.y }, RFM_L2);
  const chosenFit: ChurnModelSpec = chosenKind === "gbdt" ? gbdt : logistic;
  const alternative: ChurnModelSpec = chosenKind === "gbdt" ? logistic : gbdt;
  // Platt scaling on the validation cut-off (the last training cut-off, whose label window ends by the test cut-off;
  // the refit above saw its rows too, so this calibration is not fully held out).
  const calibration = fitPlatt(logitsOf(chosenFit, val.x), val.y);
  const chosen: ChurnModelSpec = { ...chosenFit, calibration };
  progress(4, `fitted on ${all.y.length} rows; platt on the validation cut-off a=${calibration.a.toFixed(3)} b=${calibration.b.toFixed(3)}`);

  const trainLabelRate = all.y.reduce((a, b) => a + b, 0) / all.y.length;
  const table = churnEvalTable({ chosen, alternative, rfm, trainLabelRate }, test, split.horizonMs);
  progress(5, `test AUC ${(table.rows[0]!.AUC as number).toFixed(4)}`);

  let champion: ModelEvaluation["champion"];
  const champVersion = currentVersion(opts.modelsDir, "churn");
  if (champVersion !== undefined) {
    try {
      const m = ChurnModel.load(versionDir(opts.modelsDir, "churn", champVersion));
      champion = { version: champVersion, value: round(auc(test.x.map((r) => m.logitFeatures(r)), test.y)) };
    } catch (err) {
      progress(5, `champion ${champVersion} not scored: ${(err as Error).message}`);
    }
  }
  const version = nextVersion(opts.modelsDir, "churn");
  const dir = versionDir(opts.modelsDir, "churn", version);
  mkdirSync(dir, { recursive: true });
  const files = { model: "model.json", alternative: "alternative.json", rfmBaseline: "rfm-baseline.json" };
  writeFileSync(join(dir, files.model), JSON.stringify(chosen) + "\n");
  writeFileSync(join(dir, files.alternative), JSON.stringify(alternative) + "\n");
  writeFileSync(join(dir, files.rfmBaseline), JSON.stringify(rfm) + "\n");

  const task = `churn ${split.horizonMs / MS_PER_DAY}d, online-retail, test cut-off ${isoDay(split.testCutoffMs)}`;
  const metric = (who: string, s: Partial<Scored>, on = task): ModelMetric => ({
    task: `${on}: ${who}`,
    values: Object.fromEntries(
      Object.entries({ AUC: s.auc, logloss: s.logloss }).filter(([, v]) => typeof v === "number").map(([k, v]) => [k, round(v!)]),
    ),
  });
  const testMetrics = table.rows.map((r) => metric(String(r.model), {
    auc: typeof r.AUC === "number" ? r.AUC : undefined,
    logloss: typeof r.logloss === "number" ? r.logloss : undefined,
  }));
  const dataFile = relative(opts.dataDir, path).startsWith("..") ? path : relative(opts.dataDir, path);
  const labelRate = (e: ChurnExamples) => round(e.y.reduce((a, b) => a + b, 0) / Math.max(1, e.y.length));
  const manifest: ModelManifest = {
    name: "churn",
    version,
    createdAt: new Date().toISOString(),
    portraitVersion: VERSION,
    format: "json",
    architecture: {
      kind: chosen.kind,
      ...(chosen.kind === "logistic" ? { l2: chosen.l2 } : chosen.params),
      alternative: { kind: alternative.kind, ...(alternative.kind === "logistic" ? { l2: alternative.l2 } : alternative.params) },
      output: "P(no purchase in the next 90 days)",
      choice: `best validation AUC per kind (ties within ${AUC_TIE} by logloss); trees only if ${GBDT_MARGIN} AUC better than logistic`,
    },
    features: {
      names: chosen.features,
      source: "churnFeatures(UserState, asOfMs) in src/models/churn-model.ts, profile built with default profile options",
      standardisation: chosen.kind === "logistic"
        ? { mean: chosen.mean, std: chosen.std }
        : "none (trees split raw feature values)",
    },
    training: {
      data: [dataFile],
      split:
        `strict time split: features from events before each cut-off, label = no purchase in [cut-off, cut-off + ${split.horizonMs / MS_PER_DAY} days); ` +
        `train cut-offs ${split.trainCutoffsMs.map(isoDay).join(", ")} (every label window ends by the test cut-off); ` +
        `validation = last train cut-off, fitted on the cut-offs whose windows end by it (${valTrain.map((e) => isoDay(e.cutoffMs)).join(", ")}); ` +
        `test cut-off ${isoDay(split.testCutoffMs)}`,
      seed,
      rows: { train: all.y.length, validationTrain: vt.y.length, validation: val.y.length, test: test.y.length },
      cutoffs: {
        train: split.trainCutoffsMs.map(isoDay),
        validation: isoDay(val.cutoffMs),
        validationTrain: valTrain.map((e) => isoDay(e.cutoffMs)),
        test: isoDay(split.testCutoffMs),
        horizonDays: split.horizonMs / MS_PER_DAY,
      },
      splitMs: { trainCutoffsMs: split.trainCutoffsMs, testCutoffMs: split.testCutoffMs, horizonMs: split.horizonMs },
      trainLabelRate,
      labelRate: Object.fromEntries(examples.map((e) => [isoDay(e.cutoffMs), labelRate(e)])),
      ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
      validation: [...logisticCands, ...gbdtCands].map((c) => ({ ...c, auc: round(c.auc), logloss: round(c.logloss) })),
      seconds: round((performance.now() - t0) / 1000, 1),
    },
    metrics: [
      ...testMetrics,
      metric(
        `ours (${chosen.kind}), fitted on ${valTrain.length} earlier cut-offs`,
        chosenKind === "gbdt" ? bestGbdt : bestLogistic,
        `churn ${split.horizonMs / MS_PER_DAY}d, online-retail, validation cut-off ${isoDay(val.cutoffMs)} (model choice)`,
      ),
    ],
    files,
  };
  manifest.evaluation = churnEvaluation(source, split, examples, table, champion, events[0]!.timestampMs);
  writeManifest(opts.modelsDir, manifest, opts.makeCurrent ?? false);
  progress(6, `wrote ${dir}`);
  return { dir, manifest };
}

function logitsOf(spec: ChurnModelSpec, x: readonly Float64Array[]): Float64Array {
  return Float64Array.from(selectColumns(x, featureIndices(spec.features)), (r) => specLogit(spec, r));
}

/** The manifest's evaluation: the chosen model, the champion and the baselines on the test cut-off (rows of `table`). */
function churnEvaluation(
  source: string, split: ChurnSplit, examples: readonly ChurnExamples[], table: EvalTable, champion: ModelEvaluation["champion"], firstMs: number,
): ModelEvaluation {
  const rowAuc = (prefix: string) => {
    const r = table.rows.find((x) => String(x.model).startsWith(prefix));
    return typeof r?.AUC === "number" ? round(r.AUC) : Number.NaN;
  };
  const test = examples.at(-1)!;
  const train = examples.slice(0, -1);
  return {
    source,
    trainWindow: { fromMs: firstMs, toMs: train.at(-1)!.cutoffMs + split.horizonMs },
    testWindow: { fromMs: split.testCutoffMs, toMs: split.testCutoffMs + split.horizonMs },
    counts: { train: train.reduce((a, e) => a + e.y.length, 0), test: test.y.length },
    metric: "AUC",
    higherIsBetter: true,
    challenger: rowAuc("ours"),
    ...(champion !== undefined ? { champion } : {}),
    baselines: { "recency/RFM logistic": rowAuc("RFM-only"), "recency (days since last purchase)": rowAuc("recency only") },
  };
}
