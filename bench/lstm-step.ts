/**
 * LSTM step throughput of the live cell (src/models/lstm-runtime.ts), per
 * second of this process's CPU time (not wall time: the figures hold on a
 * loaded machine), at several wave sizes, on real events (Taobao), with each
 * kernel (the default WebAssembly one with its gates, "wasm-preact" with the
 * gates in JS over Math.exp / Math.tanh, and the JS fallback), beside:
 * - the raw limit of this machine for the same work: the recurrent product
 *   h x R (H x 4H multiply-adds per user) alone, in the same JS engine;
 * - the same cell in TF.js (wasm backend), batched as one matrix product per wave.
 *
 *   npm run bench:lstm -- [--model models/lstm/<version>] [--seconds 1.5] [--no-record]
 */
import { cpus, loadavg } from "node:os";
import { parseArgs } from "node:util";
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { LSTM_FIELDS, encodeLstmEvent, type LstmEvent } from "../src/models/lstm-features.js";
import { LSTM_LAYER, readStoredWeights, type LstmArchitecture } from "../src/models/lstm-spec.js";
import { LstmRuntime } from "../src/models/lstm-runtime.js";
import { initTf, tf } from "../src/models/tf.js";
import { appendResults, printTable, repoRoot } from "./report.js";

const { values: a } = parseArgs({
  options: {
    model: { type: "string" },
    seconds: { type: "string", default: "1.5" },
    datasets: { type: "string", default: process.env.PORTRAIT_DATASETS ?? `${repoRoot()}/../shared/data` },
    "no-record": { type: "boolean", default: false },
  },
});
const SECONDS = Number(a.seconds);
const WAVES = [1, 64, 512, 4096];

const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

function timed(f: () => number): number {
  // Warm up, then run whole rounds until the CPU time budget is spent (bounded by wall time too, 10x, and by 1e6 rounds).
  f();
  let steps = 0;
  const t0 = performance.now();
  const c0 = cpuSeconds();
  let rounds = 0;
  while (cpuSeconds() - c0 < SECONDS && performance.now() - t0 < SECONDS * 10_000 && rounds++ < 1_000_000) steps += f();
  return steps / (cpuSeconds() - c0);
}

async function main(): Promise<void> {
  const load0 = loadavg()[0]!.toFixed(2);
  const dir = a.model ?? resolveModel(BUNDLED_MODELS_DIR, "lstm").dir;
  const rt = LstmRuntime.load(dir);
  const rtJs = LstmRuntime.load(dir, "js");
  const rtPre = rt.kernel === "wasm" ? LstmRuntime.load(dir, "wasm-preact") : undefined;
  const arch = rt.manifest.architecture as unknown as LstmArchitecture;
  const H = rt.hidden;
  const G = 4 * H;
  const events: LstmEvent[] = [];
  for await (const e of readDataset("taobao", resolveDataFile(a.datasets!, "taobao"), { limit: 4096 * 4 })) {
    events.push({ type: e.type, timestampMs: e.timestampMs, itemId: e.itemId ?? "", categoryId: e.categoryId ?? "", price: e.price ?? 0 });
  }
  const rows: string[][] = [];
  const w = readStoredWeights(dir);
  const rec = w[`${LSTM_LAYER.lstm}/recurrent_kernel`]!.values;
  const rt2 = await initTf("wasm");
  for (const n of WAVES) {
    const states = Array.from({ length: n }, () => rt.initialState().fill(0.1));
    const evs = events.slice(0, n);
    const prev = evs.map((e) => e.timestampMs - 5000);
    const ours = timed(() => {
      rt.step(states, evs, prev);
      return n;
    });
    const oursPre = rtPre === undefined ? NaN : timed(() => {
      rtPre.step(states, evs, prev);
      return n;
    });
    const oursJs = timed(() => {
      rtJs.step(states, evs, prev);
      return n;
    });
    // The raw limit: only h x R per user (the same blocked loop), nothing else.
    const recT = new Float64Array(G * H);
    for (let k = 0; k < H; k++) for (let j = 0; j < G; j++) recT[j * H + k] = rec[k * G + j]!;
    const z = new Float64Array(G);
    const raw = timed(() => {
      for (let r = 0; r < n; r++) {
        const s = states[r]!;
        for (let j = 0; j < G; j += 4) {
          let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
          const q0 = j * H, q1 = q0 + H, q2 = q1 + H, q3 = q2 + H;
          for (let k = 0; k < H; k++) {
            const hk = s[k]!;
            a0 += hk * recT[q0 + k]!;
            a1 += hk * recT[q1 + k]!;
            a2 += hk * recT[q2 + k]!;
            a3 += hk * recT[q3 + k]!;
          }
          z[j] = a0; z[j + 1] = a1; z[j + 2] = a2; z[j + 3] = a3;
        }
      }
      return n;
    });
    // TF.js wasm: gather the five embeddings, concat, one matMul with [K; R], gates.
    const F = LSTM_FIELDS.length;
    const ids = new Int32Array(n * F);
    evs.forEach((e, r) => encodeLstmEvent(e, prev[r]!, rt.items, rt.categories, ids, r * F));
    const embs = LSTM_FIELDS.map((f) => tf.tensor2d(w[`${LSTM_LAYER.emb(f)}/embeddings`]!.values, [arch.vocab[f], arch.embDims[f]]));
    const kr = tf.concat([
      tf.tensor2d(w[`${LSTM_LAYER.lstm}/kernel`]!.values, w[`${LSTM_LAYER.lstm}/kernel`]!.shape as [number, number]),
      tf.tensor2d(rec, [H, G]),
    ], 0);
    const bias = tf.tensor1d(w[`${LSTM_LAYER.lstm}/bias`]!.values);
    const idT = LSTM_FIELDS.map((_, f) => tf.tensor1d(Array.from({ length: n }, (_, r) => ids[r * F + f]!), "int32"));
    let h = tf.fill([n, H], 0.1) as tf.Tensor2D;
    let c = tf.fill([n, H], 0.1) as tf.Tensor2D;
    const wasm = timed(() => {
      const [h2, c2] = tf.tidy(() => {
        const x = tf.concat([...embs.map((e, f) => tf.gather(e, idT[f]!)), h], 1);
        const zz = tf.add(tf.matMul(x, kr), bias);
        const [zi, zf, zc, zo] = tf.split(zz, 4, 1);
        const cc = tf.add(tf.mul(tf.sigmoid(zf!), c), tf.mul(tf.sigmoid(zi!), tf.tanh(zc!)));
        return [tf.mul(tf.sigmoid(zo!), tf.tanh(cc)), cc];
      });
      h.dispose();
      c.dispose();
      h = h2 as tf.Tensor2D;
      c = c2 as tf.Tensor2D;
      h.dataSync();
      return n;
    });
    tf.dispose([...embs, kr, bias, ...idT, h, c]);
    rows.push([String(n), ours.toFixed(0), Number.isNaN(oursPre) ? "-" : oursPre.toFixed(0), oursJs.toFixed(0), raw.toFixed(0), (ours / raw).toFixed(2), wasm.toFixed(0)]);
    process.stderr.write(`wave ${n}: ${ours.toFixed(0)} steps/s (${rt.kernel}), ${oursPre.toFixed(0)} (wasm-preact), ${oursJs.toFixed(0)} (js)\n`);
  }
  const header = ["users per wave", `Portrait cell (${rt.kernel}) steps/s`, "Portrait cell (wasm-preact) steps/s", "Portrait cell (js) steps/s", "raw h·R only (JS) steps/s", "ratio", `TF.js ${rt2.backend} steps/s`];
  const title = `LSTM step (model ${rt.version}: hidden ${H}, input ${LSTM_FIELDS.map((f) => arch.embDims[f]).reduce((x, y) => x + y, 0)}), one thread, per CPU second`;
  printTable(title, header, rows);
  const load = `Load average (1 min) before / after: ${load0} / ${loadavg()[0]!.toFixed(2)} on ${cpus().length} cores (above ${cpus().length}, other processes compete for the CPU and every column drops).`;
  console.log(`  ${load}`);
  if (!a["no-record"]) appendResults(title, "npm run bench:lstm", header, rows, [load]);
}

await main();
