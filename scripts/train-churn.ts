/**
 * Trains the default churn model and prints its test table.
 *
 *   npx tsx scripts/train-churn.ts [--data-dir ../shared/data] [--models-dir models] [--seed 1] [--no-current]
 *
 * Writes models/churn/<version>/ and (unless --no-current) points
 * models/churn/CURRENT at it, then re-loads the saved model and evaluates it.
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { evalChurn } from "../src/eval/churn-eval.js";
import { formatEvalTable } from "../src/eval/eval-table.js";
import { trainChurn } from "../src/train/train-churn.js";

const { values } = parseArgs({
  options: {
    "data-dir": { type: "string", default: resolve(import.meta.dirname, "../../shared/data") },
    "models-dir": { type: "string", default: resolve(import.meta.dirname, "../models") },
    seed: { type: "string", default: "1" },
    "no-current": { type: "boolean", default: false },
  },
});
const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(1)}s`;
const onProgress = (done: number, total: number, note: string) => console.error(`[${elapsed()}] ${done}/${total} ${note}`);
const { dir, manifest } = await trainChurn({
  dataDir: values["data-dir"],
  modelsDir: values["models-dir"],
  seed: Number(values.seed),
  makeCurrent: !values["no-current"],
  onProgress,
});
console.log(`trained churn ${manifest.version} (${manifest.architecture.kind}) in ${manifest.training.seconds}s -> ${dir}`);
const table = await evalChurn({ dataDir: values["data-dir"], modelDir: dir, onProgress });
console.log(formatEvalTable(table));
