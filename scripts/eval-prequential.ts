/**
 * Prequential evaluation on a real data set (src/eval/prequential.ts): fresh
 * profiles vs a daily snapshot vs popularity. Prints the table (and Markdown
 * for README with --markdown).
 *
 *   npx tsx scripts/eval-prequential.ts --format online-retail [--file F] [--limit N]
 *     [--targets purchase|purchase+click] [--max-targets N] [--ks 10,20] [--datasets DIR]
 *     [--nats URL] [--deepfm off|current|<version>] [--engine JSON] [--markdown]
 *
 * --engine takes EngineOptions for both engines as JSON, e.g.
 * '{"recs": {"candidates": {"excludePurchased": false}}}'; --deepfm is a
 * shorthand for {"deepfmModel": ...}.
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { EngineOptions } from "../src/config/engine-options.js";
import { DATASET_FORMATS, type DatasetFormat } from "../src/data/types.js";
import { evalTableMarkdown, formatEvalTable } from "../src/eval/eval-table.js";
import { evalPrequential, type PrequentialTargets } from "../src/eval/prequential.js";

const { values: a } = parseArgs({
  options: {
    format: { type: "string", default: "online-retail" },
    file: { type: "string" },
    limit: { type: "string" },
    targets: { type: "string", default: "purchase" },
    "max-targets": { type: "string" },
    ks: { type: "string", default: "10,20" },
    datasets: { type: "string" },
    nats: { type: "string" },
    deepfm: { type: "string" },
    engine: { type: "string" },
    markdown: { type: "boolean", default: false },
  },
});
if (!(DATASET_FORMATS as readonly string[]).includes(a.format)) throw new Error(`--format must be one of ${DATASET_FORMATS.join(", ")}`);
const dataDir = a.datasets ?? process.env.PORTRAIT_DATASETS ?? resolve(fileURLToPath(new URL("..", import.meta.url)), "../shared/data");
const t0 = Date.now();
let last = 0;
const table = await evalPrequential({
  dataDir,
  format: a.format as DatasetFormat,
  ...(a.file !== undefined ? { file: a.file } : {}),
  ...(a.limit !== undefined ? { limit: Number(a.limit) } : {}),
  targets: a.targets as PrequentialTargets,
  ...(a["max-targets"] !== undefined ? { maxTargets: Number(a["max-targets"]) } : {}),
  ks: a.ks.split(",").map(Number),
  ...(a.nats !== undefined ? { natsUrl: a.nats } : {}),
  engine: {
    ...(a.engine !== undefined ? (JSON.parse(a.engine) as EngineOptions) : {}),
    ...(a.deepfm !== undefined ? { deepfmModel: a.deepfm } : {}),
  },
  onProgress: (done, total, note) => {
    const now = Date.now();
    if (now - last < 5000 && done < total) return;
    last = now;
    process.stderr.write(`[prequential ${((now - t0) / 1000).toFixed(0)}s] ${note} (${done}/${total})\n`);
  },
});
process.stdout.write(formatEvalTable(table));
if (a.markdown) process.stdout.write(`\n${evalTableMarkdown(table)}`);
