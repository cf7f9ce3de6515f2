/**
 * `portrait train lstm`: trains the LSTM user encoder (lstm-model.ts) on real
 * sequences (src/examples/lstm-sequences.ts) with TF.js, early-stopping on the validation
 * window, and writes models/lstm/<version>/.
 *
 * Loss per batch = mean next-item cross-entropy + mean next-category
 * cross-entropy + mean purchase log-loss, each over its labelled positions
 * only (heads run on the gathered positions, not on padding).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { VERSION } from "../version.js";
import { nextVersion, writeManifest, type ModelManifest } from "../models/artifacts.js";
import { BAND_SLOTS, GAP_BUCKETS, LSTM_FIELDS, TYPE_SLOTS } from "../models/lstm-features.js";
import { buildLstmModel, saveLayersModel } from "../models/lstm-model.js";
import { LSTM_LAYER, PURCHASE_HORIZON_MS, inputDim, type LstmArchitecture } from "../models/lstm-spec.js";
import { initTf, tf, tfl } from "../models/tf.js";
import type { TfBackendName } from "../models/tf-backends.js";
import {
  DEFAULT_LSTM_SOURCES, buildVocabs, loadSource, windowsOf,
  type SourceData, type SourceSpec, type Window,
} from "../examples/lstm-sequences.js";
import { seededRandom } from "../models/seeded-random.js";

export interface TrainLstmOptions {
  dataDir: string;
  /** Where models/ is; the model goes to <modelsDir>/lstm/<version>/. */
  modelsDir: string;
  sources?: readonly SourceSpec[];
  hidden?: number;
  /** Maximum epochs (early stopping usually ends sooner). Default 12. */
  epochs?: number;
  /** Stop after this many epochs without a better validation loss. Default 2. */
  patience?: number;
  /** Stop starting new epochs after this long, seconds. Default 1200. */
  maxSeconds?: number;
  /** Adam learning rate. Default 0.01. */
  learningRate?: number;
  /** Positions per mini-batch (padding included). Default 512 (more, smaller steps learned far more per epoch than 2048). */
  batchPositions?: number;
  seed?: number;
  backend?: TfBackendName | "auto";
  makeCurrent?: boolean;
  /** Version string (default: today's next). */
  version?: string;
  onProgress?: (done: number, total: number, note: string) => void;
}

const WINDOW = { length: 48, burnIn: 16 } as const;
/** Ids seen fewer times in training are out of vocabulary (they cannot be learned as targets anyway). */
const VOCAB_MIN_COUNT = 3;

interface Batch {
  B: number;
  T: number;
  inputs: tf.Tensor2D[];
  itemPos: tf.Tensor1D | undefined;
  itemTarget: Int32Array;
  catPos: tf.Tensor1D | undefined;
  catTarget: Int32Array;
  buyPos: tf.Tensor1D | undefined;
  buyLabel: tf.Tensor1D | undefined;
}


/** Groups windows of similar length into batches of about `positions` padded positions. */
function makeBatches(windows: Window[], positions: number, rand: () => number): Window[][] {
  const sorted = windows.slice().sort((a, b) => a.length - b.length);
  const out: Window[][] = [];
  let cur: Window[] = [];
  for (const w of sorted) {
    if (cur.length > 0 && (cur.length + 1) * w.length > positions) {
      out.push(cur);
      cur = [];
    }
    cur.push(w);
  }
  if (cur.length > 0) out.push(cur);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function toBatch(ws: Window[]): Batch {
  const B = ws.length;
  // At least 2 steps: TF.js's RNN gradient fails on a 1-step sequence (its
  // Unpack gradient gets a lone tensor). Padding is causal, so harmless.
  const T = Math.max(2, ...ws.map((w) => w.length));
  const F = LSTM_FIELDS.length;
  const fields = LSTM_FIELDS.map(() => new Int32Array(B * T));
  const itemPos: number[] = [], itemT: number[] = [], catPos: number[] = [], catT: number[] = [], buyPos: number[] = [], buyL: number[] = [];
  ws.forEach((w, b) => {
    for (let t = 0; t < w.length; t++) {
      const p = b * T + t;
      for (let f = 0; f < F; f++) fields[f]![p] = w.inputs[t * F + f]!;
      if (w.item[t]! > 0) { itemPos.push(p); itemT.push(w.item[t]!); }
      if (w.category[t]! > 0) { catPos.push(p); catT.push(w.category[t]!); }
      if (w.buyMask[t]! > 0) { buyPos.push(p); buyL.push(w.buy[t]!); }
    }
  });
  const pos = (a: number[]) => (a.length > 0 ? tf.tensor1d(a, "int32") : undefined);
  return {
    B, T,
    inputs: fields.map((f) => tf.tensor2d(f, [B, T], "int32")),
    itemPos: pos(itemPos), itemTarget: Int32Array.from(itemT),
    catPos: pos(catPos), catTarget: Int32Array.from(catT),
    buyPos: pos(buyPos), buyLabel: buyL.length > 0 ? tf.tensor1d(buyL) : undefined,
  };
}

function disposeBatch(b: Batch): void {
  tf.dispose([...b.inputs, b.itemPos, b.catPos, b.buyPos, b.buyLabel].filter((t) => t !== undefined) as tf.Tensor[]);
}

/** Mean softmax cross-entropy of logits [M, V] against integer targets. */
function sparseCe(logits: tf.Tensor2D, targets: Int32Array): tf.Scalar {
  const [M, V] = logits.shape;
  const flat = new Int32Array(M);
  for (let i = 0; i < M; i++) flat[i] = i * V + targets[i]!;
  const picked = tf.gather(tf.reshape(logits, [-1]), tf.tensor1d(flat, "int32"));
  return tf.mean(tf.sub(tf.logSumExp(logits, 1), picked));
}

interface Losses { item: number; category: number; buy: number; total: number }

export async function trainLstm(o: TrainLstmOptions): Promise<{ dir: string; manifest: ModelManifest }> {
  const t0 = performance.now();
  const rt = await initTf(o.backend ?? "auto");
  const seed = o.seed ?? 42;
  const rand = seededRandom(seed);
  const progress = o.onProgress ?? (() => {});
  const specs = o.sources ?? DEFAULT_LSTM_SOURCES;

  const sources: SourceData[] = [];
  for (const [i, spec] of specs.entries()) {
    progress(i, specs.length, `reading ${spec.format}`);
    sources.push(await loadSource(o.dataDir, spec, i));
  }
  const vocabs = buildVocabs(sources, VOCAB_MIN_COUNT, 30_000, 5_000);
  const arch: LstmArchitecture = {
    hidden: o.hidden ?? 32,
    embDims: { type: 4, category: 16, item: 24, band: 4, gap: 4 },
    vocab: { type: TYPE_SLOTS, category: vocabs.categories.size, item: vocabs.items.size, band: BAND_SLOTS, gap: GAP_BUCKETS },
  };
  const trainWin: Window[] = [];
  const valWin: Window[] = [];
  const rows: Record<string, number> = {};
  for (const src of sources) {
    let nTrain = 0;
    const cap = src.spec.maxEventsPerUser;
    for (const full of src.train) {
      // The cap keeps the most recent events, then the windows are cut from the validation start as usual.
      const before = full.events.filter((e) => e.timestampMs < src.valStartMs);
      const s = cap !== undefined && before.length > cap ? { ...full, events: before.slice(-cap) } : full;
      const tw = windowsOf(s, src.spec.heads, vocabs, {
        fromMs: -Infinity, toMs: src.valStartMs, seeUntilMs: src.valStartMs, ...WINDOW,
      });
      for (const w of tw) nTrain += w.length;
      trainWin.push(...tw);
      valWin.push(...windowsOf(full, src.spec.heads, vocabs, {
        fromMs: src.valStartMs, toMs: src.trainEndMs, seeUntilMs: src.trainEndMs, ...WINDOW,
      }));
    }
    rows[`${src.spec.format} train positions`] = nTrain;
  }

  const model = buildLstmModel(arch, seed);
  const encoder = tfl.model({ inputs: model.inputs, outputs: model.outputs[3]! });
  const heads = {
    item: model.getLayer(LSTM_LAYER.item),
    category: model.getLayer(LSTM_LAYER.category),
    buy: model.getLayer(LSTM_LAYER.buy),
  };
  const optimizer = tf.train.adam(o.learningRate ?? 0.01);

  // Every head takes part in every batch's loss (with weight 0 when the batch
  // has no targets for it), so Adam always sees the same variables.
  const none = tf.tensor1d([0], "int32");
  const lossOf = (b: Batch, parts?: Losses): tf.Scalar => {
    const h = encoder.apply(b.inputs) as tf.Tensor3D;
    const hf = tf.reshape(h, [b.B * b.T, arch.hidden]) as tf.Tensor2D;
    const ce = (head: tfl.layers.Layer, pos: tf.Tensor1D | undefined, targets: Int32Array): [tf.Scalar, number] => {
      if (pos === undefined) return [tf.mul(0, tf.sum(head.apply(tf.gather(hf, none)) as tf.Tensor)) as tf.Scalar, 0];
      return [sparseCe(head.apply(tf.gather(hf, pos)) as tf.Tensor2D, targets), targets.length];
    };
    const [li, ni] = ce(heads.item, b.itemPos, b.itemTarget);
    const [lc, nc] = ce(heads.category, b.catPos, b.catTarget);
    let lb: tf.Scalar;
    let nb = 0;
    if (b.buyPos !== undefined && b.buyLabel !== undefined) {
      const logit = tf.reshape(heads.buy.apply(tf.gather(hf, b.buyPos)) as tf.Tensor, [-1]);
      lb = tf.losses.sigmoidCrossEntropy(b.buyLabel, logit) as tf.Scalar;
      nb = b.buyLabel.shape[0];
    } else {
      lb = tf.mul(0, tf.sum(heads.buy.apply(tf.gather(hf, none)) as tf.Tensor)) as tf.Scalar;
    }
    if (parts !== undefined) {
      parts.item += li.dataSync()[0]! * ni;
      parts.category += lc.dataSync()[0]! * nc;
      parts.buy += lb.dataSync()[0]! * nb;
    }
    return tf.addN([li, lc, lb]) as tf.Scalar;
  };

  const valBatches = makeBatches(valWin, o.batchPositions ?? 512, seededRandom(seed + 1)).map(toBatch);
  const counts = { item: 0, category: 0, buy: 0 };
  for (const b of valBatches) {
    counts.item += b.itemTarget.length;
    counts.category += b.catTarget.length;
    counts.buy += b.buyLabel?.shape[0] ?? 0;
  }
  const validate = (): Losses => {
    const p: Losses = { item: 0, category: 0, buy: 0, total: 0 };
    for (const b of valBatches) tf.tidy(() => { lossOf(b, p); });
    p.item /= Math.max(1, counts.item);
    p.category /= Math.max(1, counts.category);
    p.buy /= Math.max(1, counts.buy);
    p.total = p.item + p.category + p.buy;
    return p;
  };

  /** Mean training loss over all training batches, without updating (the "before" of the history). */
  const trainLossNow = (): number => {
    const batches = makeBatches(trainWin, o.batchPositions ?? 512, seededRandom(seed + 2));
    let sum = 0;
    for (const ws of batches) {
      const b = toBatch(ws);
      sum += tf.tidy(() => lossOf(b).dataSync()[0]!);
      disposeBatch(b);
    }
    return sum / Math.max(1, batches.length);
  };
  const maxEpochs = o.epochs ?? 12;
  const patience = o.patience ?? 2;
  const maxMs = (o.maxSeconds ?? 1200) * 1000;
  let best = validate();
  let bestWeights = model.getWeights().map((w) => w.clone());
  let bestEpoch = 0;
  const history: Array<{ epoch: number; trainLoss: number; val: Losses; seconds: number }> = [
    { epoch: 0, trainLoss: trainLossNow(), val: best, seconds: (performance.now() - t0) / 1000 },
  ];
  const initial = best;
  let epoch = 0;
  for (epoch = 1; epoch <= maxEpochs; epoch++) {
    const batches = makeBatches(trainWin, o.batchPositions ?? 512, rand);
    let sum = 0;
    for (const [i, ws] of batches.entries()) {
      const b = toBatch(ws);
      const l = optimizer.minimize(() => lossOf(b), true)!;
      sum += l.dataSync()[0]!;
      l.dispose();
      disposeBatch(b);
      if (i % 20 === 0) progress(i, batches.length, `epoch ${epoch}/${maxEpochs} train loss ${(sum / (i + 1)).toFixed(3)}`);
    }
    const val = validate();
    history.push({ epoch, trainLoss: sum / batches.length, val, seconds: (performance.now() - t0) / 1000 });
    progress(batches.length, batches.length,
      `epoch ${epoch}: train ${(sum / batches.length).toFixed(3)}, validation item ${val.item.toFixed(3)} category ${val.category.toFixed(3)} buy ${val.buy.toFixed(3)}`);
    if (val.total < best.total) {
      best = val;
      tf.dispose(bestWeights);
      bestWeights = model.getWeights().map((w) => w.clone());
      bestEpoch = epoch;
    } else if (epoch - bestEpoch >= patience) {
      break;
    }
    if (performance.now() - t0 > maxMs) break;
  }
  model.setWeights(bestWeights);
  tf.dispose(bestWeights);
  for (const b of valBatches) disposeBatch(b);

  const version = o.version ?? nextVersion(o.modelsDir, "lstm");
  const manifest: ModelManifest = {
    name: "lstm",
    version,
    createdAt: new Date().toISOString(),
    portraitVersion: VERSION,
    format: "tfjs-layers",
    architecture: { ...arch, inputDim: inputDim(arch), cell: "LSTM, gates i,f,c,o, sigmoid recurrent activation, tanh" } as unknown as Record<string, unknown>,
    features: {
      fields: LSTM_FIELDS,
      encoding: "see src/models/lstm-features.ts: vocab index 0 = none, 1 = out of vocabulary; gap = log2 buckets of seconds",
      vocab: arch.vocab,
      vocabMinCount: VOCAB_MIN_COUNT,
      heads: { item: "next event's item", category: "next event's category", buy: `purchase within ${PURCHASE_HORIZON_MS / 60000} min` },
    },
    training: {
      data: sources.map((s) => [s.spec.file ?? s.spec.format, s.spec.testFile].filter(Boolean).join(" + ")),
      split: sources.map((s) => s.split).join("; "),
      seed,
      epochs: epoch > maxEpochs ? maxEpochs : epoch,
      bestEpoch,
      rows: { ...rows, "validation item targets": counts.item, "validation category targets": counts.category, "validation buy labels": counts.buy },
      backend: rt.backend,
      seconds: Math.round((performance.now() - t0) / 1000),
      window: WINDOW,
      history,
    },
    metrics: [{
      task: "validation loss (last 20% of each train part)",
      values: {
        "item CE": best.item, "category CE": best.category, "buy logloss": best.buy,
        "item CE (untrained)": initial.item, "category CE (untrained)": initial.category, "buy logloss (untrained)": initial.buy,
      },
    }],
    files: { topology: "model.json", weights: "weights.bin", vocab: "vocab.json" },
  };
  const dir = writeManifest(o.modelsDir, manifest, o.makeCurrent ?? false);
  await saveLayersModel(model, dir);
  writeFileSync(join(dir, "vocab.json"), JSON.stringify({ items: vocabs.items.ids.slice(2), categories: vocabs.categories.ids.slice(2) }));
  model.dispose();
  optimizer.dispose();
  none.dispose();
  return { dir, manifest };
}
