/**
 * Evaluates a trained churn model directory on its test cut-off: rebuilds the
 * test customers' profiles from the events before the cut-off, labels them
 * from the purchases in the following horizon, and scores the chosen model,
 * the other model kind and the RFM-only logistic baseline stored beside it,
 * plus recency alone and a constant at the training label rate.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { BadRequestError, ConfigError } from "../errors.js";
import { readManifest } from "../models/artifacts.js";
import {
  CHURN_FEATURE_NAMES, ChurnModel, featureIndices, sigmoid, specLogit, validateSpec, type ChurnModelSpec,
} from "../models/churn-model.js";
import { MS_PER_DAY, buildChurnExamples, loadRetailEvents, selectColumns, type ChurnExamples } from "../examples/churn-data.js";
import { auc, logloss } from "../metrics/classification.js";
import type { EvalTable } from "./eval-table.js";

export interface EvalChurnOptions {
  /** Directory holding the data sets (../shared/data). */
  dataDir: string;
  /** Online Retail file, relative to dataDir or absolute. Default: the one the manifest names, else the default file. */
  file?: string;
  /** A churn model version directory (`models/churn/<version>`). */
  modelDir: string;
  /** Read only the first `limit` events. Default: the limit the model was trained with, if any. */
  limit?: number;
  onProgress?: (done: number, total: number, note: string) => void;
}

/** The models and baselines a churn evaluation compares. */
export interface ChurnEvalModels {
  chosen: ChurnModelSpec;
  alternative?: ChurnModelSpec;
  rfm?: ChurnModelSpec;
  /** Label rate of the training rows: the constant baseline. */
  trainLabelRate?: number;
}

export const CHURN_EVAL_COLUMNS = ["model", "features", "AUC", "logloss"];

/** AUC, logloss and probabilities of `spec` on rows over the full feature vector. */
export function scoreSpec(spec: ChurnModelSpec, x: readonly Float64Array[], y: ArrayLike<number>): { auc: number; logloss: number; probs: Float64Array } {
  const cols = featureIndices(spec.features);
  const probs = Float64Array.from(selectColumns(x, cols), (r) => sigmoid(specLogit(spec, r)));
  return { auc: auc(probs, y), logloss: logloss(probs, y), probs };
}

/** The comparison table on one cut-off's examples. */
export function churnEvalTable(models: ChurnEvalModels, test: ChurnExamples, horizonMs: number): EvalTable {
  const rows: EvalTable["rows"] = [];
  const add = (model: string, spec: ChurnModelSpec) => {
    const s = scoreSpec(spec, test.x, test.y);
    rows.push({ model, features: spec.features.length, AUC: s.auc, logloss: s.logloss });
  };
  add(`ours (${models.chosen.kind})`, models.chosen);
  if (models.alternative) add(`other kind (${models.alternative.kind})`, models.alternative);
  if (models.rfm) add("RFM-only logistic", models.rfm);
  const recency = CHURN_FEATURE_NAMES.indexOf("recency_days_log");
  rows.push({ model: "recency only (score = days since last purchase)", features: 1, AUC: auc(test.x.map((r) => r[recency]!), test.y), logloss: "-" });
  if (models.trainLabelRate !== undefined) {
    const p = models.trainLabelRate;
    rows.push({ model: `constant (training label rate ${p.toFixed(3)})`, features: 0, AUC: 0.5, logloss: logloss(new Float64Array(test.y.length).fill(p), test.y) });
  }
  const rate = test.y.reduce((a, b) => a + b, 0) / Math.max(1, test.y.length);
  return {
    task: `churn (no purchase in the next ${horizonMs / MS_PER_DAY} days), UCI Online Retail`,
    split: `test cut-off ${new Date(test.cutoffMs).toISOString().slice(0, 10)}: ${test.y.length} customers with a purchase before it, ${(100 * rate).toFixed(1)}% churned`,
    columns: [...CHURN_EVAL_COLUMNS],
    rows,
  };
}

function readSpec(dir: string, file: string | undefined): ChurnModelSpec | undefined {
  if (file === undefined || !existsSync(join(dir, file))) return undefined;
  try {
    return validateSpec(JSON.parse(readFileSync(join(dir, file), "utf8")), join(dir, file));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`cannot read ${join(dir, file)}: ${(err as Error).message}`, { cause: err });
  }
}

/** What trainChurn records in `training.splitMs`. */
interface SplitRecord {
  testCutoffMs: number;
  horizonMs: number;
}

export async function evalChurn(opts: EvalChurnOptions): Promise<EvalTable> {
  const total = 3;
  const model = ChurnModel.load(opts.modelDir);
  const manifest = readManifest(opts.modelDir);
  const split = manifest.training.splitMs as SplitRecord | undefined;
  if (typeof split?.testCutoffMs !== "number" || typeof split.horizonMs !== "number") {
    throw new ConfigError(`churn manifest in ${opts.modelDir} has no training.splitMs {testCutoffMs, horizonMs}`);
  }
  const models: ChurnEvalModels = {
    chosen: model.spec,
    alternative: readSpec(opts.modelDir, manifest.files.alternative),
    rfm: readSpec(opts.modelDir, manifest.files.rfmBaseline),
    trainLabelRate: typeof manifest.training.trainLabelRate === "number" ? manifest.training.trainLabelRate : undefined,
  };
  const limit = opts.limit ?? (typeof manifest.training.limit === "number" ? manifest.training.limit : undefined);
  const { events } = await loadRetailEvents(opts.dataDir, opts.file ?? manifest.training.data[0], limit);
  const end = events.at(-1)?.timestampMs ?? 0;
  if (end < split.testCutoffMs + split.horizonMs) {
    throw new BadRequestError(
      `the events end ${new Date(end).toISOString()}, before the test label window closes (${new Date(split.testCutoffMs + split.horizonMs).toISOString()})`,
    );
  }
  opts.onProgress?.(1, total, `read ${events.length} events`);
  const [test] = buildChurnExamples(events, [split.testCutoffMs], split.horizonMs);
  opts.onProgress?.(2, total, `built ${test!.y.length} test examples`);
  const table = churnEvalTable(models, test!, split.horizonMs);
  opts.onProgress?.(3, total, "scored");
  return table;
}
