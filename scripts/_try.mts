import { fileEvents } from "../src/train/training-events.ts";
import { trainPropensity } from "../src/train/train-propensity.ts";
const fmt = process.argv[2] as "rees46";
const file = process.argv[3] || undefined;
const h = Number(process.argv[4] ?? 30) * 60000;
const d = await fileEvents("/work/shared/data", fmt, file);
const r = await trainPropensity(d, { modelsDir: "/tmp/lm/models", horizonMs: h, onProgress: (a, b, n) => console.error(a, b, n) });
console.log(JSON.stringify(r.manifest.evaluation), JSON.stringify(r.manifest.metrics[0]));
