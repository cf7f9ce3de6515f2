/**
 * The churn model: features see only the past, labels only the horizon, and
 * a model trained on a small real slice of UCI Online Retail (../shared/data,
 * or PORTRAIT_DATASETS) saves, loads and predicts the same numbers.
 */
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveDataFile } from "../src/data/datasets.js";
import { ConfigError } from "../src/errors.js";
import { evalChurn } from "../src/eval/churn-eval.js";
import { logloss } from "../src/metrics/classification.js";
import { evalTableMarkdown, formatEvalTable, type EvalTable } from "../src/eval/eval-table.js";
import type { ModelManifest } from "../src/models/artifacts.js";
import { CHURN_FEATURE_NAMES, ChurnModel, churnFeatures, type ChurnModelSpec } from "../src/models/churn-model.js";
import {
  MS_PER_DAY, buildChurnExamples, checkSplit, loadRetailEvents, type ChurnSplit, type UserEvent,
} from "../src/examples/churn-data.js";
import { fitGbdt, fitLogistic } from "../src/train/churn-fit.js";
import { seededRandom } from "../src/models/seeded-random.js";
import { trainChurn } from "../src/train/train-churn.js";
import { Predictions } from "../src/shard/predictions.js";
import { EventType } from "../src/wire/proto.js";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const DATA_DIR = process.env.PORTRAIT_DATASETS ?? resolve(REPO_ROOT, "../shared/data");
const DAY = MS_PER_DAY;

/** Fails naming the missing file and where the data sets are expected. */
function requireRetail(): void {
  try {
    resolveDataFile(DATA_DIR, "online-retail");
  } catch (err) {
    throw new Error(`missing test data: ${(err as Error).message} (tests look in ${DATA_DIR}; set PORTRAIT_DATASETS to override)`);
  }
}

function line(userId: string, t: number, orderId: string, itemId: string, price: number, quantity: number, refund = false): UserEvent {
  return {
    userId, type: refund ? EventType.REFUND : EventType.PURCHASE, timestampMs: t, itemId, categoryId: "", brand: "",
    price, quantity, currency: "GBP", sessionId: "", orderId,
  };
}

const byTime = (events: UserEvent[]) => [...events].sort((a, b) => a.timestampMs - b.timestampMs);

/** Invoice lines in the shape the Online Retail reader produces. */
const c = Date.UTC(2011, 2, 1);
const FIXTURE: UserEvent[] = byTime([
  line("12345", c - 60 * DAY, "540001", "85123A", 2.55, 6),
  line("12345", c - 60 * DAY, "540001", "71053", 3.39, 6),
  line("12345", c - 20 * DAY, "550001", "84406B", 2.75, 8),
  line("12345", c - 10 * DAY, "C550500", "84406B", 2.75, 2, true),
  line("12346", c - 100 * DAY, "536370", "22728", 3.75, 24),
  line("12347", c - 5 * DAY, "555000", "22960", 4.25, 6),
  line("12348", c - 3 * DAY, "C555100", "22960", 4.25, 1, true),
]);

describe("churn - features and labels", () => {
  it("churn - features of a hand-built customer", () => {
    const [ex] = buildChurnExamples(FIXTURE, [c], 90 * DAY);
    // 12348 has only a refund: not a customer with a purchase.
    expect(ex!.userIds).toEqual(["12345", "12346", "12347"]);
    const f = (name: string) => ex!.x[0]![CHURN_FEATURE_NAMES.indexOf(name as (typeof CHURN_FEATURE_NAMES)[number])]!;
    expect(f("recency_days_log")).toBeCloseTo(Math.log1p(20), 12);
    expect(f("tenure_days_log")).toBeCloseTo(Math.log1p(60), 12);
    expect(f("orders_log")).toBeCloseTo(Math.log1p(2), 12);
    expect(f("purchase_lines_log")).toBeCloseTo(Math.log1p(3), 12);
    const purchased = 2.55 * 6 + 3.39 * 6 + 2.75 * 8;
    expect(f("monetary_log")).toBeCloseTo(Math.log1p(purchased - 2.75 * 2), 12);
    expect(f("refund_lines_log")).toBeCloseTo(Math.log1p(1), 12);
    expect(f("refund_share")).toBeCloseTo((2.75 * 2) / purchased, 12);
    expect(f("mean_gap_days_log")).toBeCloseTo(Math.log1p(40), 12);
    expect(f("overdue_log")).toBeCloseTo(Math.log1p(20) - Math.log1p(40), 12);
    expect(f("single_order")).toBe(0);
    expect(f("last_seen_days_log")).toBeCloseTo(Math.log1p(10), 12);
    expect(ex!.x[1]![CHURN_FEATURE_NAMES.indexOf("single_order")]).toBe(1);
    expect(Array.from(ex!.y)).toEqual([1, 1, 1]);
  });

  it("churn - a planted future purchase changes the label, never the features", () => {
    const before = buildChurnExamples(FIXTURE, [c], 90 * DAY)[0]!;
    const planted = byTime([
      ...FIXTURE,
      line("12345", c, "560000", "85123A", 2.55, 6), // at the cut-off: inside the label window
      line("12346", c + 10 * DAY, "560100", "22728", 3.75, 24),
      line("12347", c + 90 * DAY, "570000", "22960", 4.25, 6), // the window is [c, c + 90 days)
      line("99999", c + 1 * DAY, "560200", "22960", 4.25, 6), // a new customer after the cut-off
    ]);
    const after = buildChurnExamples(planted, [c], 90 * DAY)[0]!;
    expect(after.userIds).toEqual(before.userIds);
    expect(after.x).toEqual(before.x);
    expect(after.states).toEqual(before.states);
    expect(Array.from(after.y)).toEqual([0, 0, 1]);

    // The same check can fail: one minute before the cut-off is the past.
    const past = buildChurnExamples(byTime([...FIXTURE, line("12346", c - 60_000, "559999", "22728", 3.75, 24)]), [c], 90 * DAY)[0]!;
    expect(past.x[1]).not.toEqual(before.x[1]);
  });

  it("churn - on real events, planting purchases after the cut-off for every customer changes no feature", async () => {
    requireRetail();
    const { events } = await loadRetailEvents(DATA_DIR, undefined, 20_000);
    const cutoff = Date.UTC(2010, 11, 10);
    const horizon = 2 * DAY;
    const [before] = buildChurnExamples(events, [cutoff], horizon);
    expect(before!.userIds.length).toBeGreaterThan(200);
    const plants = before!.userIds.map((u, i) => line(u, cutoff + (i % 5) * 3_600_000, `P${i}`, "85123A", 2.55, 1));
    const [after] = buildChurnExamples(byTime([...events, ...plants]), [cutoff], horizon);
    expect(after!.x).toEqual(before!.x);
    expect(after!.states).toEqual(before!.states);
    expect(after!.y.every((y) => y === 0)).toBe(true);
    expect(before!.y.some((y) => y === 1)).toBe(true);
  });

  it("churn - features are a pure function of the state", () => {
    const [ex] = buildChurnExamples(FIXTURE, [c], 90 * DAY);
    const s = ex!.states[0]!;
    const copy = structuredClone(s);
    expect(churnFeatures(s, c)).toEqual(ex!.x[0]);
    expect(s).toEqual(copy);
    expect(churnFeatures(s, c + DAY)[0]).toBeCloseTo(Math.log1p(21), 12);
    expect(Array.from(churnFeatures(ex!.states[1]!, c)).every(Number.isFinite)).toBe(true);
  });

  it("churn - a split whose training labels look past the test cut-off is rejected", () => {
    const ok: ChurnSplit = { horizonMs: 90 * DAY, trainCutoffsMs: [c, c + 30 * DAY], testCutoffMs: c + 120 * DAY };
    expect(() => checkSplit(ok, c - 90 * DAY, c + 210 * DAY)).not.toThrow();
    expect(() => checkSplit({ ...ok, testCutoffMs: c + 119 * DAY }, c - 90 * DAY, c + 210 * DAY)).toThrow(/ends after the test cut-off/);
    expect(() => checkSplit(ok, c - 90 * DAY, c + 200 * DAY)).toThrow(/ends after the data/);
    expect(() => buildChurnExamples([...FIXTURE].reverse(), [c], 90 * DAY)).toThrow(/sorted by time/);
  });
});

describe("churn - fitting", () => {
  it("churn - logistic regression reaches a zero gradient of the penalised loss", () => {
    const rnd = seededRandom(3);
    const x = Array.from({ length: 400 }, () => Float64Array.from([rnd() * 4, rnd() * 10 - 5]));
    const y = Uint8Array.from(x, (r) => (rnd() < 1 / (1 + Math.exp(-(1.5 * r[0]! - 0.4 * r[1]! - 3))) ? 1 : 0));
    const l2 = 2;
    const spec = fitLogistic({ features: ["a", "b"], x, y }, l2);
    const grad = [0, 0, 0];
    for (let i = 0; i < x.length; i++) {
      const z = x[i]!.map((v, j) => (v - spec.mean[j]!) / spec.std[j]!);
      const p = 1 / (1 + Math.exp(-(spec.bias + spec.weights[0]! * z[0]! + spec.weights[1]! * z[1]!)));
      grad[0]! += p - y[i]!;
      grad[1]! += (p - y[i]!) * z[0]!;
      grad[2]! += (p - y[i]!) * z[1]!;
    }
    expect(Math.abs(grad[0]!)).toBeLessThan(1e-8);
    expect(Math.abs(grad[1]! + l2 * spec.weights[0]!)).toBeLessThan(1e-8);
    expect(Math.abs(grad[2]! + l2 * spec.weights[1]!)).toBeLessThan(1e-8);
    expect(spec.weights[0]!).toBeGreaterThan(0);
    expect(spec.weights[1]!).toBeLessThan(0);
  });

  it("churn - boosted trees learn an interaction a linear model cannot, deterministically per seed", () => {
    const rnd = seededRandom(5);
    const x = Array.from({ length: 600 }, () => Float64Array.from([rnd(), rnd()]));
    const y = Uint8Array.from(x, (r) => ((r[0]! > 0.5) !== (r[1]! > 0.5) ? 1 : 0));
    const data = { features: ["a", "b"], x, y };
    const probs = (spec: ChurnModelSpec) => x.map((r) => new ChurnModel({ ...spec, features: ["recency_days_log", "tenure_days_log"] }, "t").predictFeatures(r));
    const trees = fitGbdt(data, { trees: 60, depth: 2, learningRate: 0.3, minChildWeight: 1, seed: 9 });
    const linear = fitLogistic(data, 1);
    expect(logloss(probs(trees), y)).toBeLessThan(0.3);
    expect(logloss(probs(linear), y)).toBeGreaterThan(0.65);
    expect(fitGbdt(data, { trees: 60, depth: 2, learningRate: 0.3, minChildWeight: 1, seed: 9 })).toEqual(trees);
  });
});

describe("churn - training on a small real slice", () => {
  const LIMIT = 60_000; // invoice lines 2010-12-01 .. 2011-02-17
  const split: ChurnSplit = {
    horizonMs: 14 * DAY,
    trainCutoffsMs: [0, 1, 2, 3, 4, 5, 6].map((w) => Date.UTC(2010, 11, 8) + w * 7 * DAY),
    testCutoffMs: Date.UTC(2011, 1, 2),
  };
  let modelsDir: string;
  let dir: string;
  let manifest: ModelManifest;

  beforeAll(async () => {
    requireRetail();
    modelsDir = mkdtempSync(join(tmpdir(), "portrait-churn-"));
    ({ dir, manifest } = await trainChurn({ dataDir: DATA_DIR, modelsDir, limit: LIMIT, split, seed: 1, makeCurrent: true }));
  });
  afterAll(() => {
    if (modelsDir) rmSync(modelsDir, { recursive: true, force: true });
  });

  it("churn - trains and writes a manifest naming its files", () => {
    expect(manifest.name).toBe("churn");
    expect(manifest.format).toBe("json");
    expect(readFileSync(join(modelsDir, "churn", "CURRENT"), "utf8").trim()).toBe(manifest.version);
    for (const f of Object.values(manifest.files)) expect(existsSync(join(dir, f))).toBe(true);
    expect(manifest.training.rows?.test).toBeGreaterThan(500);
    expect(manifest.metrics[0]!.task).toMatch(/ours/);
  });

  it("churn - audience fields read what the profile serves: no value from a model not judged fit for this shop, the profile's own value from one that is", () => {
    const [ex] = buildChurnExamples(FIXTURE, [c], 90 * DAY);
    const s = ex!.states[0]!;
    expect(s.lastPurchaseMs).toBeGreaterThan(0);
    const shop = "stream:SHOP_EVENTS";
    // Trained on a file, never evaluated on this shop's stream: the profile withholds it, and so do audience fields.
    const unfit = new Predictions({ lstm: undefined, churn: ChurnModel.load(dir), propensity: undefined, shopSource: shop });
    expect(unfit.of(s, c).churnRisk.probability).toBeNull();
    expect(unfit.served("churnRisk", s, c)).toBeUndefined();
    // The same model with an evaluation on this shop's stream that beats its baseline: both give the same value.
    const fitDir = mkdtempSync(join(tmpdir(), "portrait-churn-fit-"));
    try {
      cpSync(dir, fitDir, { recursive: true });
      const m = JSON.parse(readFileSync(join(fitDir, "manifest.json"), "utf8")) as ModelManifest;
      m.evaluation = {
        source: shop, trainWindow: { fromMs: 0, toMs: 1 }, testWindow: { fromMs: 1, toMs: 2 }, counts: { train: 1, test: 1 },
        metric: "AUC", higherIsBetter: true, challenger: 0.8, baselines: { recency: 0.7 },
      };
      writeFileSync(join(fitDir, "manifest.json"), JSON.stringify(m));
      const fit = new Predictions({ lstm: undefined, churn: ChurnModel.load(fitDir), propensity: undefined, shopSource: shop });
      const served = fit.of(s, c).churnRisk.probability;
      expect(served, fit.of(s, c).churnRisk.reason).not.toBeNull();
      expect(fit.served("churnRisk", s, c)).toBe(served);
      expect(fit.served("purchasePropensity", s, c)).toBeUndefined(); // no propensity model runs
    } finally {
      rmSync(fitDir, { recursive: true, force: true });
    }
  });

  it("churn - beats a constant predictor's logloss on its own training rows", async () => {
    const model = ChurnModel.load(dir);
    const { events } = await loadRetailEvents(DATA_DIR, undefined, LIMIT);
    const train = buildChurnExamples(events, split.trainCutoffsMs, split.horizonMs);
    const x = train.flatMap((e) => e.x);
    const y = Uint8Array.from(train.flatMap((e) => Array.from(e.y)));
    const rate = y.reduce((a, b) => a + b, 0) / y.length;
    const constant = logloss(new Float64Array(y.length).fill(rate), y);
    const ours = logloss(x.map((r) => model.predictFeatures(r)), y);
    expect(ours).toBeLessThan(constant - 0.02);
  });

  it("churn - save -> load -> predict gives the same numbers for both model kinds", async () => {
    const { events } = await loadRetailEvents(DATA_DIR, undefined, LIMIT);
    const [test] = buildChurnExamples(events, [split.testCutoffMs], split.horizonMs);
    const loaded = ChurnModel.load(dir);
    expect(loaded.version).toBe(manifest.version);
    const alt = JSON.parse(readFileSync(join(dir, manifest.files.alternative!), "utf8")) as ChurnModelSpec;
    const kinds = new Set([loaded.spec.kind, alt.kind]);
    expect(kinds).toEqual(new Set(["logistic", "gbdt"]));
    // Each loaded model predicts from a profile exactly what it predicts from the example row that the
    // training code built for the same user (separate code), bit for bit; the two kinds are two models.
    // (That the loaded numbers are the trained ones: the next test reproduces the manifest's metrics.)
    const altLoaded = new ChurnModel(alt, "alt");
    let differ = 0;
    test!.states.forEach((s, i) => {
      for (const m of [loaded, altLoaded]) {
        const p = m.predict(s, split.testCutoffMs);
        expect(p).toBeGreaterThan(0);
        expect(p).toBeLessThan(1);
        expect(p, m.spec.kind).toBe(m.predictFeatures(test!.x[i]!));
      }
      if (loaded.predict(s, split.testCutoffMs) !== altLoaded.predict(s, split.testCutoffMs)) differ++;
    });
    expect(differ).toBeGreaterThan(test!.states.length / 2);
  });

  it("churn - evaluation of the saved model reproduces the manifest's test metrics", async () => {
    const table = await evalChurn({ dataDir: DATA_DIR, modelDir: dir });
    expect(table.rows.map((r) => String(r.model))).toEqual(manifest.metrics.slice(0, table.rows.length).map((m) => m.task.split(": ").at(-1)));
    table.rows.forEach((r, i) => {
      expect(r.AUC).toBeCloseTo(manifest.metrics[i]!.values.AUC!, 4);
      if (typeof r.logloss === "number") expect(r.logloss).toBeCloseTo(manifest.metrics[i]!.values.logloss!, 4);
    });
  });

  it("churn - loading a broken model directory is a ConfigError", () => {
    expect(() => ChurnModel.load(join(modelsDir, "nope"))).toThrow(ConfigError);
    const spec = JSON.parse(readFileSync(join(dir, manifest.files.model!), "utf8")) as ChurnModelSpec;
    writeFileSync(join(dir, manifest.files.model!), "{ not json");
    expect(() => ChurnModel.load(dir)).toThrow(ConfigError);
    writeFileSync(join(dir, manifest.files.model!), JSON.stringify({ ...spec, features: ["no_such_feature", ...spec.features.slice(1)] }));
    expect(() => ChurnModel.load(dir)).toThrow(/unknown feature "no_such_feature"/);
    writeFileSync(join(dir, manifest.files.model!), JSON.stringify(spec));
    expect(ChurnModel.load(dir).version).toBe(manifest.version);
  });
});

describe("eval table - rendering", () => {
  const t: EvalTable = {
    task: "churn", split: "test 2011-09-10",
    columns: ["model", "AUC", "logloss"],
    rows: [{ model: "ours (logistic)", AUC: 0.74523, logloss: 0.59 }, { model: "a|b", AUC: 0.5, logloss: "-" }],
  };
  it("eval table - text columns align, numbers right-aligned with 4 decimals", () => {
    expect(formatEvalTable(t)).toBe([
      "churn — test 2011-09-10",
      "model               AUC  logloss",
      "---------------  ------  -------",
      "ours (logistic)  0.7452   0.5900",
      "a|b              0.5000        -",
      "",
    ].join("\n"));
  });
  it("eval table - markdown escapes pipes and right-aligns numeric columns", () => {
    expect(evalTableMarkdown(t)).toBe([
      "**churn** — test 2011-09-10",
      "",
      "| model | AUC | logloss |",
      "| --- | ---: | ---: |",
      "| ours (logistic) | 0.7452 | 0.5900 |",
      "| a\\|b | 0.5000 | - |",
      "",
    ].join("\n"));
  });
});
