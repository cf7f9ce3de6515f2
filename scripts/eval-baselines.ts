/**
 * Next-item / next-category baselines on the real data (../shared/DATA.md):
 * Yoochoose 100k items (train_tr -> train_valid) and Taobao categories and
 * items (time split at 80%). ItemKNN and SKNN parameters are tuned on a
 * validation split carved from the training part only, then every baseline
 * is fit on the whole training part and scored on the test part.
 *
 *   npx tsx scripts/eval-baselines.ts [--datasets DIR] [--limit N] [--no-tune] [--only yoochoose|taobao] [--markdown]
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ITEM_KNN_GRID, ItemKnnModel, PopularityModel, SKNN_GRID, SessionPopModel, SknnModel, tuneOnValidation } from "../src/eval/baselines.js";
import type { ItemKnnOptions, SknnOptions } from "../src/eval/baselines.js";
import { evaluateNextItem, taobaoTimeSplit, validationSplit, yoochooseSplit } from "../src/eval/next-item.js";
import type { Split, TokenKind } from "../src/eval/next-item.js";
import { evalTableMarkdown, formatEvalTable } from "../src/eval/eval-table.js";

const { values: args } = parseArgs({
  options: {
    datasets: { type: "string" },
    limit: { type: "string" },
    "no-tune": { type: "boolean", default: false },
    only: { type: "string" },
    markdown: { type: "boolean", default: false },
  },
});
const dataDir = args.datasets ?? process.env.PORTRAIT_DATASETS ?? resolve(fileURLToPath(new URL("..", import.meta.url)), "../shared/data");
const limit = args.limit === undefined ? undefined : Number(args.limit);
const loadOptions = limit === undefined ? {} : { limit };

const show = (p: object) => Object.entries(p).map(([k, v]) => `${k}=${v}`).join(" ");

async function run(split: Split, token: TokenKind): Promise<void> {
  let knn: ItemKnnOptions = {};
  let sknn: SknnOptions = {};
  if (!args["no-tune"]) {
    const validation = validationSplit(split);
    console.log(`\ntuning next-${token} on ${validation.description}`);
    const started = performance.now();
    const a = await tuneOnValidation(validation, ITEM_KNN_GRID, (p) => new ItemKnnModel(p), { token });
    const b = await tuneOnValidation(validation, SKNN_GRID, (p) => new SknnModel(p), { token });
    for (const [name, r] of [["item-kNN", a], ["SKNN", b]] as const) {
      const sorted = [...r.trials].sort((x, y) => y.value - x.value);
      console.log(`  ${name}: best ${show(r.best)} (validation ${r.metric} ${sorted[0]!.value.toFixed(4)}; ` +
        `${r.trials.length} trials, worst ${sorted[sorted.length - 1]!.value.toFixed(4)})`);
    }
    console.log(`  tuning took ${((performance.now() - started) / 1000).toFixed(1)} s`);
    knn = a.best;
    sknn = b.best;
  }
  const table = await evaluateNextItem(split, [new PopularityModel(), new SessionPopModel(), new ItemKnnModel(knn), new SknnModel(sknn)], { token });
  console.log("\n" + (args.markdown ? evalTableMarkdown : formatEvalTable)(table) + `\n\nitem-kNN: ${show(new ItemKnnModel(knn).options)}; SKNN: ${show(new SknnModel(sknn).options)}\n`);
}

if (args.only === undefined || args.only === "yoochoose") {
  await run(await yoochooseSplit(dataDir, loadOptions), "item");
}
if (args.only === undefined || args.only === "taobao") {
  const taobao = await taobaoTimeSplit(dataDir, loadOptions);
  await run(taobao, "category");
  await run(taobao, "item");
}
