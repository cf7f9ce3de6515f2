/**
 * Trains the default DeepFM ranker and prints its test table.
 *
 *   npx tsx scripts/train-deepfm.ts [--data-dir ../shared/data] [--models-dir models] [--format taobao] [--file F]
 *                                   [--lstm-dir models/lstm/<version>] [--split-by time-range|event-count] [--seed 42] [--epochs 12] [--limit N] [--no-current]
 *
 * Writes models/deepfm/<version>/ (manifest.json, weights.bin, model.onnx) and
 * (unless --no-current) points models/deepfm/CURRENT at it, then re-builds the
 * rows and evaluates the saved model through the serving scorer.
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import type { DatasetFormat } from "../src/data/types.js";
import { evalDeepFm } from "../src/eval/deepfm-eval.js";
import { formatEvalTable } from "../src/eval/eval-table.js";
import { trainDeepFm } from "../src/train/train-deepfm.js";

const { values } = parseArgs({
  options: {
    "data-dir": { type: "string", default: resolve(import.meta.dirname, "../../shared/data") },
    "models-dir": { type: "string", default: resolve(import.meta.dirname, "../models") },
    format: { type: "string", default: "taobao" },
    file: { type: "string" },
    "lstm-dir": { type: "string" },
    "split-by": { type: "string", default: "time-range" },
    seed: { type: "string", default: "42" },
    epochs: { type: "string", default: "12" },
    limit: { type: "string" },
    "no-current": { type: "boolean", default: false },
  },
});
const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(1)}s`;
let lastNote = 0;
const onProgress = (done: number, total: number, note: string) => {
  if (done === total || performance.now() - lastNote > 5000) {
    lastNote = performance.now();
    console.error(`[${elapsed()}] ${done}/${total} ${note}`);
  }
};
const format = values.format as DatasetFormat;
const { dir, manifest } = await trainDeepFm({
  dataDir: values["data-dir"],
  modelsDir: values["models-dir"],
  format,
  ...(values.file === undefined ? {} : { file: values.file }),
  ...(values["lstm-dir"] === undefined ? {} : { lstmDir: values["lstm-dir"] }),
  ...(values.limit === undefined ? {} : { limit: Number(values.limit) }),
  splitBy: values["split-by"] as "time-range" | "event-count",
  seed: Number(values.seed),
  epochs: Number(values.epochs),
  makeCurrent: !values["no-current"],
  onProgress,
});
const t = manifest.training;
console.log(`trained deepfm ${manifest.version} on ${t.backend}: ${t.epochs} epochs (best ${t.bestEpoch}), ${t.seconds}s training, ` +
  `${t.totalSeconds}s in all -> ${dir}`);
console.log(`rows: ${JSON.stringify(t.rows)}`);
const table = await evalDeepFm({
  dataDir: values["data-dir"], modelDir: dir,
  ...(values["lstm-dir"] === undefined ? {} : { lstmDir: values["lstm-dir"] }),
  onProgress,
});
console.log(formatEvalTable(table));
