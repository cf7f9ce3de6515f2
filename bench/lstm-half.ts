/**
 * The LSTM's own evaluation (src/eval/lstm-eval.ts) with each step's state
 * rounded to the halves a profile stores (LstmRuntime.stepHalf, what the
 * engine runs) against float32 throughout: next click (Yoochoose), next
 * category (Taobao), purchase within 10 minutes (Taobao, REES46). The same
 * splits and model in one process; prints the LSTM rows side by side.
 *
 *   npm run bench:build && node dist-bench/bench/lstm-half.js [--model models/lstm/<version>] [--limit N]
 */
import { parseArgs } from "node:util";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { LstmRuntime } from "../src/models/lstm-runtime.js";
import { LstmNextModel, evalPurchase } from "../src/eval/lstm-eval.js";
import { evaluateNextItem, taobaoTimeSplit, yoochooseSplit } from "../src/eval/next-item.js";
import type { EvalTable } from "../src/eval/eval-table.js";
import { repoRoot } from "./report.js";

const { values: a } = parseArgs({
  options: {
    model: { type: "string" },
    limit: { type: "string" },
    datasets: { type: "string", default: process.env.PORTRAIT_DATASETS ?? `${repoRoot()}/../shared/data` },
  },
});
const modelDir = a.model ?? resolveModel(BUNDLED_MODELS_DIR, "lstm").dir;
const rt = LstmRuntime.load(modelDir);
const load = a.limit !== undefined ? { limit: Number(a.limit) } : {};
const print = (t: EvalTable) => {
  console.log(`\n${t.task} (${t.split})`);
  for (const r of t.rows) console.log("  " + t.columns.map((c) => `${c} ${typeof r[c] === "number" ? (r[c] as number).toFixed(4) : String(r[c])}`).join("  "));
};
const t0 = performance.now();
print(await evaluateNextItem(await yoochooseSplit(a.datasets!, load), [new LstmNextModel(rt, "item", true), new LstmNextModel(rt, "item", false)], { token: "item" }));
print(await evaluateNextItem(await taobaoTimeSplit(a.datasets!, load), [new LstmNextModel(rt, "category", true), new LstmNextModel(rt, "category", false)], { token: "category" }));
for (const half of [true, false]) {
  const t = await evalPurchase(rt, { dataDir: a.datasets!, modelDir, halfState: half, ...load });
  t.rows = t.rows.filter((r) => String(r.model).startsWith("LSTM"));
  print(t);
}
console.log(`\n${((performance.now() - t0) / 1000).toFixed(0)} s`);
