/**
 * Our ONNX exporters against the TF.js references: DeepFM (deepfm-spec's
 * forward on TF.js cpu and wasm) and one LSTM cell step (tfjs-layers LSTM over
 * a sequence), run on onnxruntime-node, to 1e-5 max abs difference.
 */
import * as ort from "onnxruntime-node";
import { beforeAll, describe, expect, it } from "vitest";
import { deepFmWeightShapes, type DeepFmArchitecture } from "../src/models/deepfm-spec.js";
import { exportDeepFmOnnx } from "../src/models/onnx/export-deepfm.js";
import { exportLstmCellOnnx } from "../src/models/onnx/export-lstm-cell.js";
import { GraphBuilder } from "../src/models/onnx/graph-builder.js";
import { initTf, tf, tfl } from "../src/models/tf.js";
import { deepFmReference, maxAbsDiff, randomDeepFmRows } from "./helpers/deepfm-fixture.js";
import { seededRandom } from "../src/models/seeded-random.js";

const TOL = 1e-5;


const uniform = (r: () => number, n: number, scale: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);

function randomDeepFm(a: DeepFmArchitecture, seed: number): Record<string, Float32Array> {
  const r = seededRandom(seed);
  const w: Record<string, Float32Array> = {};
  for (const [name, shape] of deepFmWeightShapes(a)) {
    const fanIn = shape.length === 2 && name.startsWith("w") ? shape[0]! : 1;
    w[name] = uniform(r, shape.reduce((x, d) => x * d, 1), name === "emb" ? 0.3 : Math.sqrt(3 / fanIn));
  }
  return w;
}

/** deepfm-spec's forward on one TF.js backend. */
async function reference(backend: "cpu" | "wasm", a: DeepFmArchitecture, weights: Record<string, Float32Array>, ids: Int32Array, dense: Float32Array | undefined, rows: number): Promise<Float32Array> {
  await tf.setBackend(backend);
  return deepFmReference(a, weights, ids, dense, rows);
}

async function runDeepFmOnnx(model: Uint8Array, a: DeepFmArchitecture, ids: Int32Array, dense: Float32Array | undefined, rows: number): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(model);
  const feeds: Record<string, ort.Tensor> = { ids: new ort.Tensor("int32", ids, [rows, a.fields]) };
  if (dense !== undefined) feeds.dense = new ort.Tensor("float32", dense, [rows, a.denseDim]);
  const out = await s.run(feeds);
  await s.release();
  expect(out.prob!.dims).toEqual([rows]);
  return out.prob!.data as Float32Array;
}

const spread = (p: Float32Array) => Math.max(...p) - Math.min(...p);

beforeAll(async () => {
  await initTf("wasm");
});

describe("onnx - DeepFM export equals deepfm-spec's forward", () => {
  const cases: Array<[string, DeepFmArchitecture]> = [
    ["sparse only, 3 hidden layers", { fields: 5, vocab: 60, embDim: 4, denseDim: 0, hidden: [16, 8, 4] }],
    ["with dense input, 3 hidden layers", { fields: 5, vocab: 60, embDim: 4, denseDim: 3, hidden: [16, 8, 4] }],
    ["with dense input, no hidden layer", { fields: 2, vocab: 9, embDim: 3, denseDim: 2, hidden: [] }],
    ["one field, one hidden layer", { fields: 1, vocab: 7, embDim: 8, denseDim: 0, hidden: [5] }],
  ];
  for (const [label, a] of cases) {
    for (const rows of [1, 257]) {
      it(`onnx - DeepFM ${label}, batch ${rows}: onnxruntime = TF.js wasm = TF.js cpu to 1e-5`, async () => {
        const w = randomDeepFm(a, 11 + rows);
        const { ids, dense } = randomDeepFmRows(a, rows, 7 + rows);
        const got = await runDeepFmOnnx(exportDeepFmOnnx(a, w), a, ids, dense, rows);
        const wasm = await reference("wasm", a, w, ids, dense, rows);
        const cpu = await reference("cpu", a, w, ids, dense, rows);
        await tf.setBackend("wasm");
        expect(maxAbsDiff(got, wasm)).toBeLessThan(TOL);
        expect(maxAbsDiff(got, cpu)).toBeLessThan(TOL);
        if (rows > 1) expect(spread(got)).toBeGreaterThan(0.05); // not saturated: the comparison means something
      });
    }
  }

  it("onnx - DeepFM a changed weight changes the output (the comparison can fail)", async () => {
    const a: DeepFmArchitecture = { fields: 4, vocab: 30, embDim: 4, denseDim: 2, hidden: [8] };
    const w = randomDeepFm(a, 3);
    const { ids, dense } = randomDeepFmRows(a, 32, 4);
    const wasm = await reference("wasm", a, w, ids, dense, 32);
    const emb = Float32Array.from(w.emb!);
    const at = ids[0]! * a.embDim;
    emb[at] = emb[at]! + 0.05;
    const got = await runDeepFmOnnx(exportDeepFmOnnx(a, { ...w, emb }), a, ids, dense, 32);
    expect(maxAbsDiff(got, wasm)).toBeGreaterThan(1e-4);
  });

  it("onnx - DeepFM export rejects missing or mis-sized weights with the tensor's name", () => {
    const a: DeepFmArchitecture = { fields: 2, vocab: 5, embDim: 2, denseDim: 1, hidden: [3] };
    const w = randomDeepFm(a, 1);
    const { denseLin: _, ...missing } = w;
    expect(() => exportDeepFmOnnx(a, missing)).toThrow(/denseLin/);
    expect(() => exportDeepFmOnnx(a, { ...w, w0: new Float32Array(5) })).toThrow(/"w0" should have 18 values/);
    expect(() => exportDeepFmOnnx({ ...a, hidden: [0] }, w)).toThrow(/hidden/);
  });
});

describe("onnx - LSTM cell export equals tfjs-layers LSTM", () => {
  for (const [E, H, B, T] of [[5, 7, 3, 6], [4, 16, 1, 5]] as const) {
    it(`onnx - LSTM cell E=${E} H=${H}: stepping ${T} steps (batch ${B}) gives tf.layers.lstm's h and c to 1e-5`, async () => {
      await tf.setBackend("wasm");
      const r = seededRandom(100 + E * H);
      const kernel = uniform(r, E * 4 * H, 0.6);
      const recurrentKernel = uniform(r, H * 4 * H, 0.6);
      const bias = uniform(r, 4 * H, 0.5);
      const xs = uniform(r, B * T * E, 1.5);

      // recurrentInitializer: the default (orthogonal) calls tensor.flatten(), a chained op that bare
      // tfjs-core does not register; setWeights overwrites the initial values anyway.
      const layer = tfl.layers.lstm({
        units: H, recurrentActivation: "sigmoid", returnSequences: true, returnState: true, recurrentInitializer: "zeros",
      });
      const inp = tfl.input({ shape: [T, E] });
      const model = tfl.model({ inputs: inp, outputs: layer.apply(inp) as tfl.SymbolicTensor[] });
      layer.setWeights([tf.tensor2d(kernel, [E, 4 * H]), tf.tensor2d(recurrentKernel, [H, 4 * H]), tf.tensor1d(bias)]);
      const [seqT, , cT] = model.predict(tf.tensor3d(xs, [B, T, E])) as tf.Tensor[];
      const seq = (await seqT!.data()) as Float32Array; // [B,T,H]
      const cLast = (await cT!.data()) as Float32Array;

      const s = await ort.InferenceSession.create(exportLstmCellOnnx({ inputDim: E, hidden: H }, { kernel, recurrentKernel, bias }));
      let h: Float32Array = new Float32Array(B * H);
      let c: Float32Array = new Float32Array(B * H);
      let worst = 0;
      for (let t = 0; t < T; t++) {
        const x = new Float32Array(B * E);
        for (let b = 0; b < B; b++) x.set(xs.subarray((b * T + t) * E, (b * T + t + 1) * E), b * E);
        const out = await s.run({
          x: new ort.Tensor("float32", x, [B, E]), h: new ort.Tensor("float32", h, [B, H]), c: new ort.Tensor("float32", c, [B, H]),
        });
        h = out.h_out!.data as Float32Array;
        c = out.c_out!.data as Float32Array;
        const want = new Float32Array(B * H);
        for (let b = 0; b < B; b++) want.set(seq.subarray((b * T + t) * H, (b * T + t + 1) * H), b * H);
        worst = Math.max(worst, maxAbsDiff(h, want));
      }
      await s.release();
      model.dispose();
      expect(worst).toBeLessThan(TOL);
      expect(maxAbsDiff(c, cLast)).toBeLessThan(TOL);
      expect(Math.max(...h.map(Math.abs))).toBeGreaterThan(0.1); // the state moved
    });
  }

  it("onnx - LSTM cell rejects weights of the wrong size", () => {
    expect(() => exportLstmCellOnnx({ inputDim: 2, hidden: 3 }, { kernel: new Float32Array(24), recurrentKernel: new Float32Array(36), bias: new Float32Array(11) }))
      .toThrow(/bias must be a Float32Array of 12 values/);
  });
});

describe("onnx - graph builder", () => {
  it("onnx - a node reading an undefined value fails at build time with its name", () => {
    const g = new GraphBuilder("bad");
    g.input("x", "float32", ["B", 2]);
    expect(() => g.node("Add", ["x", "y"], ["z"])).toThrow(/Add reads "y"/);
    g.output("w", "float32", ["B", 2]);
    expect(() => g.toBytes()).toThrow(/output "w" is never produced/);
  });

  it("onnx - int64 initializers, float attributes and a symbolic batch round-trip through onnxruntime", async () => {
    const g = new GraphBuilder("gemm");
    g.input("x", "float32", ["B", 3]);
    g.initializer("w", new Float32Array([1, 2, 3, 4, 5, 6]), [3, 2]);
    g.initializer("shape", new BigInt64Array([-1n]), [1]);
    g.node("Gemm", ["x", "w"], ["y"], { alpha: { f: 0.5 } });
    g.node("Reshape", ["y", "shape"], ["flat"]);
    g.output("flat", "float32", ["N"]);
    const s = await ort.InferenceSession.create(g.toBytes());
    const out = await s.run({ x: new ort.Tensor("float32", new Float32Array([1, 0, 0, 0, 1, 1]), [2, 3]) });
    await s.release();
    expect(Array.from(out.flat!.data as Float32Array)).toEqual([0.5, 1, 4, 5]);
  });
});
