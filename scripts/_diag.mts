import { fileEvents } from "../src/train/training-events.ts";
import { buildPropensityExamples, propensitySplit } from "../src/examples/propensity-data.ts";
import { fitLogistic, fitGbdt } from "../src/train/churn-fit.ts";
import { PROPENSITY_FEATURE_NAMES } from "../src/models/propensity-model.ts";
import { specLogit } from "../src/models/churn-model.ts";
import { auc } from "../src/metrics/classification.ts";
const fmt = process.argv[2] as "taobao";
const h = Number(process.argv[3]) * 60000;
const d = await fileEvents("/work/shared/data", fmt, undefined);
const split = propensitySplit(Float64Array.from(d.events, (e) => e.timestampMs), h, Math.max(60000, h / 6));
const keep = (u: string, c: number) => ((c * 31 + u.length * 7 + u.charCodeAt(u.length - 1)) % 10) < 2;
const tr = buildPropensityExamples(d.events, split.train, h, keep).flatMap((e) => e.x.map((x, i) => [x, e.y[i]] as const));
const te = buildPropensityExamples(d.events, split.test, h).flatMap((e) => e.x.map((x, i) => [x, e.y[i]] as const));
const names = [...PROPENSITY_FEATURE_NAMES];
const X = tr.map((r) => r[0]), Y = Uint8Array.from(tr, (r) => r[1]!);
const tx = te.map((r) => r[0]), ty = Uint8Array.from(te, (r) => r[1]!);
console.log("train", X.length, Y.reduce((a, b) => a + b, 0), "test", tx.length, ty.reduce((a, b) => a + b, 0));
for (const f of names) { const j = names.indexOf(f); console.log(f.padEnd(24), auc(tx.map((r) => r[j]!), ty).toFixed(3), auc(X.map((r) => r[j]!), Y).toFixed(3)); }
for (const l2 of [1, 100]) { const s = fitLogistic({ features: names, x: X, y: Y }, l2); console.log("logistic", l2, auc(tx.map((r) => specLogit(s, r)), ty).toFixed(4)); }
for (const depth of [2, 3]) fitGbdt({ features: names, x: X, y: Y }, { trees: 150, depth, learningRate: 0.05, l2: 1, minChildWeight: 5, subsample: 0.8, maxBins: 64, seed: 1 }, (k, s) => { if ((k + 1) % 50 === 0) console.log("gbdt", depth, k + 1, auc(tx.map((r) => specLogit(s, r)), ty).toFixed(4)); });
