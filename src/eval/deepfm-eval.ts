/**
 * DeepFM CTR evaluation on a later time window (../shared/DATA.md, "CTR
 * ranking"): the rows of src/examples/deepfm-rows.ts (real interactions as
 * positives, negatives sampled from the catalog so far among items the user
 * never touched), split by time as the model was trained; AUC and logloss on
 * the test window for:
 * - DeepFM, scored by the serving scorer (deepfm-scorer.ts) from the saved files;
 * - logistic regression on the same sparse fields (first-order terms only),
 *   fitted here on the training window (Adagrad, early stopping on validation);
 * - popularity: the score is the item's interactions so far; its probability
 *   for logloss is sigmoid(a * ln(1 + count) + b), (a, b) fitted by maximum
 *   likelihood on the validation window (monotone in the count, so the AUC is
 *   the raw popularity's).
 * Columns "new-to-user" repeat AUC and logloss on the rows whose positive was
 * the user's first event with that item (repeats are easy: the protocol never
 * samples an item the user touched as a negative).
 */
import { auc, logloss } from "../metrics/classification.js";
import type { EvalTable } from "./eval-table.js";
import type { DatasetFormat } from "../data/types.js";
import { BadRequestError, ConfigError } from "../errors.js";
import { readManifest } from "../models/artifacts.js";
import { checkDeepFmSchema, type DeepFmSchema } from "../models/deepfm-features.js";
import { loadDeepFmScorer, type DeepFmScorer } from "../models/deepfm-scorer.js";
import { LstmRuntime } from "../models/lstm-runtime.js";
import {
  buildDeepFmRows, loadDeepFmEvents, splitDeepFmRows,
  type DeepFmRows, type DeepFmSplit, type SplitBy,
} from "../examples/deepfm-rows.js";
import { seededRandom } from "../models/seeded-random.js";

export type Range = readonly [number, number];

/** Probabilities of rows [start, end) from the scorer, in chunks. */
export async function scoreDeepFmRows(scorer: DeepFmScorer, rows: DeepFmRows, [start, end]: Range, chunk = 8192): Promise<Float32Array> {
  const out = new Float32Array(end - start);
  const F = rows.fields;
  const D = rows.denseDim;
  for (let a = start; a < end; a += chunk) {
    const b = Math.min(end, a + chunk);
    const p = await scorer.score(rows.ids.subarray(a * F, b * F), D > 0 ? rows.dense.subarray(a * D, b * D) : undefined, b - a);
    out.set(p, a - start);
  }
  return out;
}

const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

/** Fits p = sigmoid(a * x + b) by Newton's method (maximum likelihood, a tiny ridge for stability). */
export function fitPlatt(x: ArrayLike<number>, y: ArrayLike<number>): { a: number; b: number } {
  let a = 0;
  let b = 0;
  for (let it = 0; it < 50; it++) {
    let ga = 0, gb = 0, haa = 1e-6, hab = 0, hbb = 1e-6;
    for (let i = 0; i < x.length; i++) {
      const p = sigmoid(a * x[i]! + b);
      const r = p - y[i]!;
      const w = p * (1 - p);
      ga += r * x[i]!;
      gb += r;
      haa += w * x[i]! * x[i]!;
      hab += w * x[i]!;
      hbb += w;
    }
    const det = haa * hbb - hab * hab;
    const da = (hbb * ga - hab * gb) / det;
    const db = (haa * gb - hab * ga) / det;
    a -= da;
    b -= db;
    if (Math.abs(da) + Math.abs(db) < 1e-9) break;
  }
  return { a, b };
}

/** A first-order logistic regression on the sparse fields: logit = bias + sum_f w[ids]. */
export interface SparseLogReg {
  w: Float64Array;
  bias: number;
  epochs: number;
}

function lrLogit(m: SparseLogReg, rows: DeepFmRows, r: number): number {
  const F = rows.fields;
  let z = m.bias;
  for (let f = 0; f < F; f++) z += m.w[rows.ids[r * F + f]!]!;
  return z;
}

export function predictLogReg(m: SparseLogReg, rows: DeepFmRows, [start, end]: Range): Float64Array {
  const out = new Float64Array(end - start);
  for (let r = start; r < end; r++) out[r - start] = sigmoid(lrLogit(m, rows, r));
  return out;
}

/** Fits the first-order model on `train` with Adagrad (lr 0.05, L2 1e-6), at most `maxEpochs`, keeping the epoch with the best validation logloss. */
export function fitLogReg(rows: DeepFmRows, vocab: number, train: Range, val: Range, seed: number, maxEpochs = 5): SparseLogReg {
  const F = rows.fields;
  const lr = 0.05;
  const l2 = 1e-6;
  const cur: SparseLogReg = { w: new Float64Array(vocab), bias: 0, epochs: 0 };
  const g2 = new Float64Array(vocab).fill(1e-8);
  let gb2 = 1e-8;
  let best: SparseLogReg = { w: cur.w.slice(), bias: cur.bias, epochs: 0 };
  let bestLoss = Infinity;
  const rng = seededRandom(seed);
  const order = Int32Array.from({ length: train[1] - train[0] }, (_, i) => train[0] + i);
  const yVal = rows.labels.subarray(val[0], val[1]);
  for (let epoch = 1; epoch <= maxEpochs; epoch++) {
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rng() * (i + 1));
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    for (const r of order) {
      const g = sigmoid(lrLogit(cur, rows, r)) - rows.labels[r]!;
      for (let f = 0; f < F; f++) {
        const id = rows.ids[r * F + f]!;
        const gi = g + l2 * cur.w[id]!;
        g2[id]! += gi * gi;
        cur.w[id]! -= (lr * gi) / Math.sqrt(g2[id]!);
      }
      gb2 += g * g;
      cur.bias -= (lr * g) / Math.sqrt(gb2);
    }
    const loss = val[1] > val[0] ? logloss(predictLogReg(cur, rows, val), yVal) : 0;
    if (loss < bestLoss) {
      bestLoss = loss;
      best = { w: cur.w.slice(), bias: cur.bias, epochs: epoch };
    } else {
      break;
    }
  }
  return best;
}

/** AUC and logloss of `probs` (for rows [start, end)), on all rows and on the new-to-user rows. */
function metricRow(model: string, rows: DeepFmRows, [start, end]: Range, scores: ArrayLike<number>, probs: ArrayLike<number>): Record<string, string | number> {
  const y = rows.labels.subarray(start, end);
  const keep: number[] = [];
  for (let r = start; r < end; r++) if (rows.firstTime[r] === 1) keep.push(r - start);
  const pick = (a: ArrayLike<number>): Float64Array => Float64Array.from(keep, (i) => a[i]!);
  const yNew = pick(y);
  return {
    model,
    AUC: auc(scores, y),
    logloss: logloss(probs, y),
    "AUC new-to-user": auc(pick(scores), yNew),
    "logloss new-to-user": logloss(pick(probs), yNew),
  };
}

export const DEEPFM_EVAL_COLUMNS = ["model", "AUC", "logloss", "AUC new-to-user", "logloss new-to-user"];

function splitText(rows: DeepFmRows, s: DeepFmSplit): string {
  const iso = (ms: number): string => new Date(ms).toISOString().replace(".000Z", "Z");
  const count = ([a, b]: Range): string => {
    let pos = 0;
    for (let r = a; r < b; r++) pos += rows.labels[r]!;
    return `${b - a} rows, ${pos} positives`;
  };
  return `time split ${s.fractions.join("/")} (${s.by}): train ${iso(rows.stats.tMinMs)}.. (${count(s.train)}), ` +
    `validation ${iso(s.valStartMs)}.. (${count(s.val)}), test ${iso(s.testStartMs)}..${iso(rows.stats.tMaxMs)} (${count(s.test)})`;
}

/**
 * The evaluation table for DeepFM probabilities `deepFm` of the test rows
 * (`split.test`), with the logistic-regression and popularity baselines
 * computed here. Used by training (manifest metrics) and by `evalDeepFm`.
 */
export function deepFmEvalTable(rows: DeepFmRows, split: DeepFmSplit, vocab: number, seed: number, deepFm: Float32Array, task: string): EvalTable {
  const { train, val, test } = split;
  if (deepFm.length !== test[1] - test[0]) throw new RangeError(`deepFm has ${deepFm.length} probabilities for ${test[1] - test[0]} test rows`);
  const lr = fitLogReg(rows, vocab, train, val, seed);
  const xVal = Float64Array.from(rows.popularity.subarray(val[0], val[1]), Math.log1p);
  const cal = fitPlatt(xVal, rows.labels.subarray(val[0], val[1]));
  const popScores = rows.popularity.subarray(test[0], test[1]);
  const popProbs = Float64Array.from(popScores, (c) => sigmoid(cal.a * Math.log1p(c) + cal.b));
  const lrProbs = predictLogReg(lr, rows, test);
  return {
    task,
    split: splitText(rows, split),
    columns: DEEPFM_EVAL_COLUMNS,
    rows: [
      metricRow("DeepFM", rows, test, deepFm, deepFm),
      metricRow(`logistic regression (same fields, first order, ${lr.epochs} epochs)`, rows, test, lrProbs, lrProbs),
      metricRow(`popularity (calibrated on validation: a=${cal.a.toFixed(3)}, b=${cal.b.toFixed(3)})`, rows, test, popScores, popProbs),
    ],
  };
}

/** How a DeepFM version was trained: what `evalDeepFm` needs to rebuild its rows (manifest `training.rowsSpec`). */
export interface DeepFmRowsSpec {
  format: DatasetFormat;
  /** Data file relative to the data directory ("" = the format's default). */
  file: string;
  /** Set when the rows came from the shop's stream ("stream:<name>"): `format`/`file` then mean nothing, pass a data set to evaluate on. */
  source?: string;
  limit?: number;
  negatives: number;
  seed: number;
  split: [number, number, number];
  splitBy: SplitBy;
}

export interface EvalDeepFmOptions {
  /** Directory of the data sets (../shared/data). */
  dataDir: string;
  /** Data set to evaluate on; default: the one the model was trained on. */
  format?: DatasetFormat;
  file?: string;
  /** The model version directory (models/deepfm/<version>). */
  modelDir: string;
  /** The LSTM version directory, required when the model has the LSTM dense input. */
  lstmDir?: string;
  /** Serving backend of the scorer (deepfm-scorer.ts); default "auto". */
  backend?: "auto" | "tfjs-node-gpu" | "onnxruntime" | "wasm";
  onProgress?: (done: number, total: number, note: string) => void;
}

/** Rebuilds the model's rows (same protocol, seed and split as training unless the data set is overridden) and evaluates. */
export async function evalDeepFm(o: EvalDeepFmOptions): Promise<EvalTable> {
  const manifest = readManifest(o.modelDir);
  if (manifest.name !== "deepfm") throw new ConfigError(`${o.modelDir} holds a "${manifest.name}" model, not DeepFM`);
  const schema = checkDeepFmSchema((manifest.features as { schema: DeepFmSchema }).schema);
  const spec = manifest.training.rowsSpec as DeepFmRowsSpec | undefined;
  if (spec === undefined) throw new ConfigError(`${o.modelDir}/manifest.json lacks training.rowsSpec`);
  if (spec.source !== undefined && o.format === undefined) {
    throw new BadRequestError(`DeepFM ${manifest.version} was trained on ${spec.source}; its evaluation on that stream is in its manifest ` +
      `("evaluation", \`portrait models show deepfm@${manifest.version}\`); name a data set (--format) to evaluate it on one`);
  }
  const same = o.format === undefined || (o.format === spec.format && (o.file ?? "") === spec.file);
  const format = o.format ?? spec.format;
  const file = o.format === undefined ? spec.file : o.file ?? "";
  let lstm: LstmRuntime | undefined;
  if (schema.dense === "lstm-h") {
    if (o.lstmDir === undefined) throw new ConfigError(`DeepFM ${manifest.version} reads the LSTM ${schema.lstmVersion} state: options.lstmDir is required`);
    lstm = LstmRuntime.load(o.lstmDir);
    if (lstm.version !== schema.lstmVersion) throw new ConfigError(`DeepFM ${manifest.version} was trained with LSTM ${schema.lstmVersion}, ${o.lstmDir} holds ${lstm.version}`);
  }
  o.onProgress?.(0, 1, "reading events");
  const events = await loadDeepFmEvents(o.dataDir, format, file === "" ? undefined : file, same ? spec.limit : undefined);
  const rows = buildDeepFmRows(events, {
    schema, negatives: spec.negatives, seed: spec.seed, ...(lstm === undefined ? {} : { lstm }),
    onProgress: (d, t) => o.onProgress?.(d, t, "building rows"),
  });
  const split = splitDeepFmRows(rows, spec.split, spec.splitBy);
  const scorer = await loadDeepFmScorer(o.modelDir, { backend: o.backend ?? "auto" });
  try {
    o.onProgress?.(0, 1, `scoring ${split.test[1] - split.test[0]} test rows on ${scorer.backend}`);
    const probs = await scoreDeepFmRows(scorer, rows, split.test);
    o.onProgress?.(1, 1, "baselines");
    return deepFmEvalTable(rows, split, schema.vocab, spec.seed, probs,
      `CTR ranking ${format}${file === "" ? "" : ` ${file}`}: DeepFM ${manifest.version} (${scorer.backend}), ${spec.negatives} sampled negatives per positive`);
  } finally {
    await scorer.close();
  }
}
