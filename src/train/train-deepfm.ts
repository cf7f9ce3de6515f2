/**
 * Trains the DeepFM ranker (src/models/deepfm-spec.ts) on the rows of
 * src/examples/deepfm-rows.ts with a custom TF.js loop: seeded initialisation, Adam,
 * sigmoid cross-entropy on `deepFmLogit`, shuffled mini-batches, early
 * stopping on the validation window's logloss (the best epoch's weights are
 * kept). Writes `models/deepfm/<version>/` (manifest.json, weights.bin,
 * model.onnx) and evaluates the saved model on the test window through the
 * serving scorer, with the baselines of src/eval/deepfm-eval.ts.
 *
 * The events come from a data set file (`format`/`file`) or from the shop's
 * own stream (`events`: src/train/training-events.ts, `portrait train deepfm
 * --from-stream`); the rows, the split and the training are the same. The
 * manifest's `evaluation` (what `portrait models promote --if-better` decides
 * on) holds the challenger's test-window AUC beside the champion's (the
 * models directory's CURRENT DeepFM, with its own schema and LSTM pairing,
 * scored on the same rows: same events, same seed, so the same positives and
 * sampled negatives) and the baselines' (popularity, first-order logistic
 * regression).
 */
import { join, relative, resolve } from "node:path";
import { DEFAULT_DATA_FILES } from "../data/datasets.js";
import type { DatasetFormat } from "../data/types.js";
import { BadRequestError, ConfigError } from "../errors.js";
import { deepFmEvalTable, scoreDeepFmRows, type DeepFmRowsSpec } from "../eval/deepfm-eval.js";
import { currentVersion, nextVersion, readManifest, versionDir, writeManifest, type ModelEvaluation, type ModelManifest, type ModelMetric } from "../models/artifacts.js";
import { checkDeepFmSchema, createDeepFmSchema, deepFmArchitecture, type DeepFmSchema } from "../models/deepfm-features.js";
import { auc } from "../metrics/classification.js";
import { loadDeepFmScorer } from "../models/deepfm-scorer.js";
import { deepFmLogit, deepFmWeightShapes, type DeepFmArchitecture, type DeepFmWeights } from "../models/deepfm-spec.js";
import { DEEPFM_FILES, saveDeepFmWeights } from "../models/deepfm-weights.js";
import { LstmRuntime } from "../models/lstm-runtime.js";
import { initTf } from "../models/tf.js";
import type { TfBackendName } from "../models/tf-backends.js";
import { VERSION } from "../version.js";
import { buildDeepFmRows, DEFAULT_SPLIT, loadDeepFmEvents, splitDeepFmRows, type DeepFmRows, type DeepFmSplit, type RowEvent, type SplitBy } from "../examples/deepfm-rows.js";
import type { TrainingEvents } from "./training-events.js";
import { seededRandom } from "../models/seeded-random.js";

export interface TrainDeepFmOptions {
  /** Directory of the data sets (../shared/data). */
  dataDir: string;
  /** Data set format. Default "taobao". */
  format?: DatasetFormat;
  /** Data file relative to dataDir. Default: the format's default file (Taobao: the 2h10m time slice). */
  file?: string;
  /**
   * Train on these events instead of reading a data set file: the shop's own
   * stream (`streamEvents`, src/train/training-events.ts). `format`, `file`
   * and `limit` are then ignored; the manifest names `events.source`.
   */
  events?: TrainingEvents;
  /** Start no new epoch after this many seconds of training. Default: no limit. */
  maxSeconds?: number;
  /** How the 70/10/20 time split places its boundaries (examples/deepfm-rows.ts SplitBy). Default "time-range"; use "event-count" for bursty files (REES46 sample). */
  splitBy?: SplitBy;
  /** Read at most this many events (for tests). Default: all. */
  limit?: number;
  /** Root of the model directories (the repository's models/). */
  modelsDir: string;
  /** An LSTM version directory (models/lstm/<version>) whose hidden state becomes the dense input. Default: none. */
  lstmDir?: string;
  /** Seed of negative sampling, initialisation and shuffling. Default 42. */
  seed?: number;
  /** Maximum epochs; training stops earlier when validation logloss has not improved for `patience` epochs. Default 12. */
  epochs?: number;
  /** Epochs without improvement before stopping. Default 2. */
  patience?: number;
  /** Sampled negatives per positive. Default 4. */
  negatives?: number;
  /** Embedding size k. Default 8. */
  embDim?: number;
  /** Hidden layers of the deep part. Default [64, 32]. */
  hidden?: number[];
  /** Rows per mini-batch. Default 256. */
  batchSize?: number;
  /** Adam learning rate. Default 0.002. */
  learningRate?: number;
  /** L2 penalty on the embedding and first-order rows a batch uses (per row, summed over fields). Default 1e-5. */
  l2?: number;
  /** Draw new negatives for the training window in every epoch after the first (validation and test rows never change). Default true. */
  resampleNegatives?: boolean;
  /** Fields to use (deepfm-features.ts); default all. */
  fields?: string[];
  /** TF.js backend for training. Default "auto" (wasm here). */
  backend?: TfBackendName | "auto";
  /** Version string; default the next `YYYY-MM-DD.N`. */
  version?: string;
  /** Point models/deepfm/CURRENT at the new version. Default false. */
  makeCurrent?: boolean;
  onProgress?: (done: number, total: number, note: string) => void;
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new ConfigError(`options.${name} must be a positive integer, got ${v}`);
  return v;
}

function positiveNumber(name: string, v: number, allowZero = false): number {
  if (!Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) throw new ConfigError(`options.${name} must be a ${allowZero ? "non-negative" : "positive"} number, got ${v}`);
  return v;
}

/** Gaussian N(0, std^2) from a uniform generator (Box-Muller). */
function gaussian(rng: () => number, std: number): number {
  const u = 1 - rng();
  return std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
}

/** Seeded initial weights: small Gaussian embeddings, zero first-order terms, Glorot-uniform layers, bias at the base rate. */
export function initDeepFmWeights(a: DeepFmArchitecture, seed: number, baseRate: number): Record<string, Float32Array> {
  const rng = seededRandom(seed);
  const out: Record<string, Float32Array> = {};
  for (const [name, shape] of deepFmWeightShapes(a)) {
    const n = shape.reduce((x, d) => x * d, 1);
    const w = new Float32Array(n);
    if (name === "emb") for (let i = 0; i < n; i++) w[i] = gaussian(rng, 0.01);
    else if (name === "denseProj" || /^w\d+$/.test(name) || name === "wOut") {
      const limit = Math.sqrt(6 / (shape[0]! + shape[1]!));
      for (let i = 0; i < n; i++) w[i] = (2 * rng() - 1) * limit;
    } else if (name === "bias") w[0] = Math.log(baseRate / (1 - baseRate));
    out[name] = w;
  }
  return out;
}

interface Batch {
  ids: Int32Array;
  dense: Float32Array;
  labels: Float32Array;
}

function gatherBatch(rows: DeepFmRows, idx: ArrayLike<number>, from: number, to: number, b: Batch): number {
  const F = rows.fields;
  const D = rows.denseDim;
  const n = to - from;
  for (let i = 0; i < n; i++) {
    const r = idx[from + i]!;
    b.ids.set(rows.ids.subarray(r * F, r * F + F), i * F);
    if (D > 0) b.dense.set(rows.dense.subarray(r * D, r * D + D), i * D);
    b.labels[i] = rows.labels[r]!;
  }
  return n;
}

/** Trains, saves and evaluates one DeepFM version; returns its directory and manifest. */
export async function trainDeepFm(o: TrainDeepFmOptions): Promise<{ dir: string; manifest: ModelManifest }> {
  const format = o.format ?? "taobao";
  const seed = o.seed ?? 42;
  if (!Number.isInteger(seed)) throw new ConfigError(`options.seed must be an integer, got ${seed}`);
  const maxEpochs = positiveInt("epochs", o.epochs ?? 12);
  const patience = positiveInt("patience", o.patience ?? 2);
  const negatives = positiveInt("negatives", o.negatives ?? 4);
  const embDim = positiveInt("embDim", o.embDim ?? 8);
  const hidden = o.hidden ?? [64, 32];
  hidden.forEach((h, i) => positiveInt(`hidden[${i}]`, h));
  const batchSize = positiveInt("batchSize", o.batchSize ?? 256);
  const lr = positiveNumber("learningRate", o.learningRate ?? 0.002);
  const l2 = positiveNumber("l2", o.l2 ?? 1e-5, true);
  const resample = o.resampleNegatives ?? true;
  const splitBy: SplitBy = o.splitBy ?? "time-range";
  if (o.limit !== undefined) positiveInt("limit", o.limit);
  const progress = o.onProgress ?? (() => {});
  const t0 = performance.now();

  const rt = await initTf(o.backend ?? "auto");
  const tf = rt.tf;
  const lstm = o.lstmDir === undefined ? undefined : LstmRuntime.load(o.lstmDir);
  const schema: DeepFmSchema = createDeepFmSchema({
    ...(o.fields === undefined ? {} : { fields: o.fields }),
    ...(lstm === undefined ? {} : { lstmHidden: lstm.hidden, lstmVersion: lstm.version }),
  });
  const arch = deepFmArchitecture(schema, embDim, hidden);

  const source = o.events?.source ?? `file:${format}:${o.file ?? DEFAULT_DATA_FILES[format]}`;
  progress(0, 1, `reading ${source}`);
  const events: readonly RowEvent[] = o.events !== undefined ? o.events.events : await loadDeepFmEvents(o.dataDir, format, o.file, o.limit);
  if (events.length === 0) throw new BadRequestError(`no events to train the DeepFM on from ${source}`);
  // The champion: the CURRENT version before this one is written.
  const championVersion = currentVersion(o.modelsDir, "deepfm");
  const rows = buildDeepFmRows(events, {
    schema, negatives, seed, ...(lstm === undefined ? {} : { lstm }),
    onProgress: (d, t) => progress(d, t, "building rows"),
  });
  const split = splitDeepFmRows(rows, DEFAULT_SPLIT, splitBy);
  const nTrain = split.train[1] - split.train[0];
  const nVal = split.val[1] - split.val[0];
  const nTest = split.test[1] - split.test[0];
  if (nTrain === 0 || nVal === 0 || nTest === 0) {
    throw new BadRequestError(`too few DeepFM rows for a time split of ${source}: train ${nTrain}, validation ${nVal}, test ${nTest} ` +
      `(${rows.stats.positives} interactions with an item seen before, among ${events.length} events; read more events)`);
  }
  let trainPos = 0;
  for (let r = split.train[0]; r < split.train[1]; r++) trainPos += rows.labels[r]!;

  const F = rows.fields;
  const D = rows.denseDim;
  const init = initDeepFmWeights(arch, seed, Math.min(0.99, Math.max(0.01, trainPos / nTrain)));
  const shapes = deepFmWeightShapes(arch);
  const vars: Record<string, ReturnType<typeof tf.variable>> = {};
  for (const [name, shape] of shapes) vars[name] = tf.variable(tf.tensor(init[name]!, shape, "float32"), true, `deepfm/${name}`);
  const w = vars as unknown as DeepFmWeights;
  const varList = Object.values(vars);
  const optimizer = tf.train.adam(lr);

  const snapshot = (): Record<string, Float32Array> => {
    const out: Record<string, Float32Array> = {};
    for (const [name] of shapes) out[name] = (vars[name]!.dataSync() as Float32Array).slice();
    return out;
  };
  const logloss = (range: readonly [number, number]): number => {
    let sum = 0;
    const chunk = 8192;
    for (let a = range[0]; a < range[1]; a += chunk) {
      const b = Math.min(range[1], a + chunk);
      const loss = tf.tidy(() => {
        const ids = tf.tensor2d(rows.ids.subarray(a * F, b * F), [b - a, F], "int32");
        const dense = D > 0 ? tf.tensor2d(rows.dense.subarray(a * D, b * D), [b - a, D]) : undefined;
        const y = tf.tensor2d(Float32Array.from(rows.labels.subarray(a, b)), [b - a, 1]);
        return tf.losses.sigmoidCrossEntropy(y, deepFmLogit(tf, arch, w, ids, dense), undefined, undefined, tf.Reduction.SUM);
      });
      sum += loss.dataSync()[0]!;
      loss.dispose();
    }
    return sum / (range[1] - range[0]);
  };

  const rng = seededRandom(seed ^ 0x5eed);
  const batch: Batch = { ids: new Int32Array(batchSize * F), dense: new Float32Array(batchSize * D), labels: new Float32Array(batchSize) };
  // Epochs after the first see fresh negatives: the same positives, features
  // rebuilt from the training window's events only, the sampler reseeded.
  let trainEvents = events;
  if (resample) {
    let end = 0;
    while (end < events.length && events[end]!.timestampMs < split.valStartMs) end++;
    trainEvents = events.slice(0, end);
  }
  const trainRowsOf = (e: number): { rows: DeepFmRows; n: number } => {
    if (!resample || e === 1) return { rows, n: nTrain };
    const r = buildDeepFmRows(trainEvents, { schema, negatives, seed: seed + 7919 * e, ...(lstm === undefined ? {} : { lstm }) });
    return { rows: r, n: r.n };
  };
  const history: Array<{ epoch: number; trainLoss: number; valLoss: number; seconds: number }> = [];
  const initialVal = logloss(split.val);
  let bestVal = initialVal;
  let bestEpoch = 0;
  let best = snapshot();
  let epoch = 0;
  const trainStart = performance.now();
  while (epoch < maxEpochs && (o.maxSeconds === undefined || epoch === 0 || (performance.now() - trainStart) / 1000 < o.maxSeconds)) {
    epoch++;
    const { rows: tr, n: nTr } = trainRowsOf(epoch);
    const order = Int32Array.from({ length: nTr }, (_, i) => i);
    const steps = Math.ceil(nTr / batchSize);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rng() * (i + 1));
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    let lossSum = 0;
    for (let s = 0; s < steps; s++) {
      const n = gatherBatch(tr, order, s * batchSize, Math.min(nTr, (s + 1) * batchSize), batch);
      const cost = tf.tidy(() => {
        const ids = tf.tensor2d(batch.ids.subarray(0, n * F), [n, F], "int32");
        const dense = D > 0 ? tf.tensor2d(batch.dense.subarray(0, n * D), [n, D]) : undefined;
        const y = tf.tensor2d(batch.labels.subarray(0, n), [n, 1]);
        return optimizer.minimize(() => {
          const loss = tf.losses.sigmoidCrossEntropy(y, deepFmLogit(tf, arch, w, ids, dense));
          if (l2 === 0) return loss as ReturnType<typeof tf.scalar>;
          const reg = tf.add(tf.sum(tf.square(tf.gather(w.emb!, ids))), tf.sum(tf.square(tf.gather(w.lin!, ids))));
          return tf.add(loss, tf.mul(l2 / n, reg)) as ReturnType<typeof tf.scalar>;
        }, true, varList)!;
      });
      lossSum += cost.dataSync()[0]! * n;
      cost.dispose();
      if (s % 50 === 0) progress(s, steps, `epoch ${epoch}/${maxEpochs} train loss ${(lossSum / Math.max(1, s * batchSize + n)).toFixed(4)}`);
    }
    const valLoss = logloss(split.val);
    history.push({ epoch, trainLoss: lossSum / nTr, valLoss, seconds: Math.round((performance.now() - trainStart) / 100) / 10 });
    progress(steps, steps, `epoch ${epoch}: train loss ${(lossSum / nTr).toFixed(4)}, validation logloss ${valLoss.toFixed(4)}`);
    if (valLoss < bestVal) {
      bestVal = valLoss;
      bestEpoch = epoch;
      best = snapshot();
    } else if (epoch - bestEpoch >= patience) {
      break;
    }
  }
  const trainSeconds = (performance.now() - trainStart) / 1000;
  optimizer.dispose();
  for (const v of varList) v.dispose();

  const version = o.version ?? nextVersion(o.modelsDir, "deepfm");
  const rowsSpec: DeepFmRowsSpec = {
    format, file: o.file ?? "", ...(o.events !== undefined ? { source } : {}), negatives, seed, split: [...DEFAULT_SPLIT] as [number, number, number], splitBy,
    ...(o.limit === undefined || o.events !== undefined ? {} : { limit: o.limit }),
  };
  const countPos = ([a, b]: readonly [number, number]): number => {
    let p = 0;
    for (let r = a; r < b; r++) p += rows.labels[r]!;
    return p;
  };
  const manifest: ModelManifest = {
    name: "deepfm",
    version,
    createdAt: new Date().toISOString(),
    portraitVersion: VERSION,
    format: "deepfm-f32le+onnx",
    architecture: arch as unknown as Record<string, unknown>,
    features: {
      schema,
      builder: "src/models/deepfm-features.ts (buildDeepFmRow / writeDeepFmRow)",
      encoding: "hash fields: 1 + fnv1a32(utf8(id)) % (size - 1), 0 = none; bucket fields: see deepfm-features.ts",
    },
    training: {
      data: [o.events !== undefined ? source : `${format}:${o.file ?? DEFAULT_DATA_FILES[format]}`],
      split: `by time (${splitBy}) over ${new Date(rows.stats.tMinMs).toISOString()}..${new Date(rows.stats.tMaxMs).toISOString()}: ` +
        `first ${DEFAULT_SPLIT[0]} train, next ${DEFAULT_SPLIT[1]} validation (early stopping) from ${new Date(split.valStartMs).toISOString()}, ` +
        `last ${DEFAULT_SPLIT[2]} test from ${new Date(split.testStartMs).toISOString()}`,
      protocol: "events replayed in time order; positives = interactions (event types with a positive affinity weight) with an item already in the " +
        "catalog built from earlier events; features from the user's state, the catalog and the LSTM state before the event; " +
        `${negatives} negatives per positive drawn uniformly from the catalog so far among items the user never had an event with (seeded); ` +
        "the validation and test windows are built the same way (src/examples/deepfm-rows.ts)",
      rowsSpec,
      seed,
      epochs: epoch,
      bestEpoch,
      rows: {
        events: rows.stats.events, users: rows.stats.users, items: rows.stats.items,
        "positives skipped (item never seen before)": rows.stats.skippedNewItems,
        train: nTrain, "train positives": trainPos,
        validation: nVal, "validation positives": countPos(split.val),
        test: nTest, "test positives": countPos(split.test),
      },
      backend: rt.backend,
      seconds: Math.round(trainSeconds),
      optimizer: { name: "adam", learningRate: lr, batchSize, l2, patience, maxEpochs, resampleNegatives: resample, ...(o.maxSeconds !== undefined ? { maxSeconds: o.maxSeconds } : {}) },
      ...(o.events !== undefined ? { read: o.events.read, skipped: o.events.skipped } : {}),
      initialValidationLogloss: initialVal,
      bestValidationLogloss: bestVal,
      history,
      ...(lstm === undefined ? {} : { lstm: { version: lstm.version, dir: relative(resolve(o.modelsDir), resolve(o.lstmDir!)) } }),
    },
    metrics: [],
    files: { ...DEEPFM_FILES },
  };
  const dir = writeManifest(o.modelsDir, manifest, false);
  saveDeepFmWeights(dir, arch, best);

  progress(0, 1, "evaluating the saved model on the test window");
  const scorer = await loadDeepFmScorer(dir);
  let table;
  try {
    const probs = await scoreDeepFmRows(scorer, rows, split.test);
    table = deepFmEvalTable(rows, split, schema.vocab, seed, probs, `CTR ranking ${o.events !== undefined ? source : format}, test window (${scorer.backend})`);
  } finally {
    await scorer.close();
  }
  const metrics: ModelMetric[] = table.rows.map((r) => ({
    task: `${table.task}: ${r.model}`,
    values: Object.fromEntries(Object.entries(r).filter(([, v]) => typeof v === "number")) as Record<string, number>,
  }));
  manifest.metrics = metrics;
  progress(0, 1, championVersion === undefined ? "no champion" : `scoring the champion ${championVersion} on the same test rows`);
  let champion: ModelEvaluation["champion"];
  if (championVersion !== undefined) {
    try {
      champion = { version: championVersion, value: r4(await scoreChampion(o.modelsDir, championVersion, events, rows, split, negatives, seed)) };
    } catch (err) {
      progress(0, 1, `champion ${championVersion} not scored: ${(err as Error).message}`);
    }
  }
  const aucOf = (prefix: string): number => {
    const row = table.rows.find((r) => String(r.model).startsWith(prefix));
    return r4(Number(row?.AUC));
  };
  manifest.evaluation = {
    source,
    trainWindow: { fromMs: rows.stats.tMinMs, toMs: split.valStartMs },
    testWindow: { fromMs: split.testStartMs, toMs: rows.stats.tMaxMs },
    counts: { train: nTrain, validation: nVal, test: nTest, testPositives: countPos(split.test) },
    metric: "AUC",
    higherIsBetter: true,
    challenger: aucOf("DeepFM"),
    ...(champion !== undefined ? { champion } : {}),
    baselines: {
      "popularity (item interactions so far)": aucOf("popularity"),
      "logistic regression (same fields, first order)": aucOf("logistic regression"),
    },
  };
  manifest.training.totalSeconds = Math.round((performance.now() - t0) / 1000);
  writeManifest(o.modelsDir, manifest, o.makeCurrent ?? false);
  progress(1, 1, "done");
  return { dir, manifest };
}

const r4 = (v: number): number => Number(v.toFixed(4));

/**
 * The champion's AUC on the challenger's test rows: its rows are rebuilt from
 * the same events with its own schema (and its own LSTM pairing, read from the
 * models directory), the same negatives and seed, so they are the same
 * (user, item, label) rows in the same order; checked, then scored by the
 * serving scorer from its saved files.
 */
async function scoreChampion(
  modelsDir: string, version: string, events: readonly RowEvent[], rows: DeepFmRows, split: DeepFmSplit, negatives: number, seed: number,
): Promise<number> {
  const dir = versionDir(modelsDir, "deepfm", version);
  const schema = checkDeepFmSchema((readManifest(dir).features as { schema: DeepFmSchema }).schema);
  let lstm: LstmRuntime | undefined;
  if (schema.dense === "lstm-h") {
    if (schema.lstmVersion === undefined) throw new ConfigError(`deepfm ${version} reads an LSTM state but names no LSTM version`);
    lstm = LstmRuntime.load(join(modelsDir, "lstm", schema.lstmVersion));
  }
  const theirs = buildDeepFmRows(events, { schema, negatives, seed, ...(lstm === undefined ? {} : { lstm }) });
  const [a, b] = split.test;
  if (theirs.n !== rows.n || theirs.itemIds[a] !== rows.itemIds[a] || theirs.itemIds[b - 1] !== rows.itemIds[b - 1]) {
    throw new ConfigError(`the champion's rows differ from the challenger's (${theirs.n} vs ${rows.n})`);
  }
  const scorer = await loadDeepFmScorer(dir);
  try {
    const probs = await scoreDeepFmRows(scorer, theirs, split.test);
    return auc(probs, rows.labels.subarray(a, b));
  } finally {
    await scorer.close();
  }
}
