/**
 * DeepFM -> ONNX (opset 13), computing exactly `deepFmForward` of
 * src/models/deepfm-spec.ts (tested against it to 1e-5).
 *
 * Graph inputs: `ids` int32 [B, F] (rows of the shared embedding table, already
 * offset per field); `dense` float32 [B, D], only when D > 0.
 * Graph output: `prob` float32 [B].
 * Ids outside [0, vocab) make onnxruntime's Gather fail; callers check them.
 */
import { deepFmWeightShapes, type DeepFmArchitecture } from "../deepfm-spec.js";
import { ConfigError } from "../../errors.js";
import { GraphBuilder } from "./graph-builder.js";

/** Throws a ConfigError unless `a` is a well-formed architecture (positive integer sizes). */
export function validateDeepFmArchitecture(a: unknown): asserts a is DeepFmArchitecture {
  const o = a as Record<string, unknown> | null;
  if (typeof o !== "object" || o === null) throw new ConfigError("deepfm architecture must be an object");
  const int = (k: string, min: number): void => {
    const v = o[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) throw new ConfigError(`deepfm architecture.${k} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  };
  int("fields", 1);
  int("vocab", 1);
  int("embDim", 1);
  int("denseDim", 0);
  const h = o.hidden;
  if (!Array.isArray(h) || !h.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 1)) {
    throw new ConfigError(`deepfm architecture.hidden must be an array of positive integers, got ${JSON.stringify(h)}`);
  }
}

/** Throws a ConfigError unless `weights` holds every tensor of `deepFmWeightShapes(a)` with the right length. */
export function checkDeepFmWeights(a: DeepFmArchitecture, weights: Record<string, Float32Array>): void {
  for (const [name, shape] of deepFmWeightShapes(a)) {
    const w = weights[name];
    const n = shape.reduce((x, d) => x * d, 1);
    if (!(w instanceof Float32Array)) throw new ConfigError(`deepfm weights: "${name}" [${shape}] is missing or not a Float32Array`);
    if (w.length !== n) throw new ConfigError(`deepfm weights: "${name}" should have ${n} values ([${shape}]), has ${w.length}`);
  }
}

/** The ONNX model bytes of the DeepFM `a` with `weights` (names and shapes of `deepFmWeightShapes`). */
export function exportDeepFmOnnx(a: DeepFmArchitecture, weights: Record<string, Float32Array>): Uint8Array {
  validateDeepFmArchitecture(a);
  checkDeepFmWeights(a, weights);
  const g = new GraphBuilder("deepfm");
  // emb and lin side by side, [vocab, k+1]: one gather reads both from the same cache line
  // (with a large vocab the gathers are memory-latency bound: ~20% of the time, halved).
  const k = a.embDim;
  const emb = weights.emb!;
  const lin = weights.lin!;
  const embLin = new Float32Array(a.vocab * (k + 1));
  for (let v = 0; v < a.vocab; v++) {
    embLin.set(emb.subarray(v * k, (v + 1) * k), v * (k + 1));
    embLin[v * (k + 1) + k] = lin[v]!;
  }
  g.initializer("emb_lin", embLin, [a.vocab, k + 1]);
  for (const [name, shape] of deepFmWeightShapes(a)) {
    if (name !== "emb" && name !== "lin") g.initializer(name, weights[name]!, shape);
  }
  const axis1 = g.initializer("axis1", new BigInt64Array([1n]), [1]);
  const half = g.initializer("half", new Float32Array([0.5]), []);
  const fPrime = a.fields + (a.denseDim > 0 ? 1 : 0);
  const flatShape = g.initializer("flat_shape", new BigInt64Array([-1n, BigInt(fPrime * a.embDim)]), [2]);
  const vecShape = g.initializer("vec_shape", new BigInt64Array([-1n]), [1]);

  const axis2 = g.initializer("axis2", new BigInt64Array([2n]), [1]);
  const zero = g.initializer("at_0", new BigInt64Array([0n]), [1]);
  const atK = g.initializer("at_k", new BigInt64Array([BigInt(k)]), [1]);
  const atK1 = g.initializer("at_k1", new BigInt64Array([BigInt(k + 1)]), [1]);

  const ids = g.input("ids", "int32", ["B", a.fields]);
  g.node("Gather", ["emb_lin", ids], ["emb_lin_rows"], { axis: 0 }); // [B,F,k+1]
  let e = g.node("Slice", ["emb_lin_rows", zero, atK, axis2], ["e_sparse"]); // [B,F,k]
  g.node("Slice", ["emb_lin_rows", atK, atK1, axis2], ["lin_rows"]); // [B,F,1]
  g.node("ReduceSum", ["lin_rows", axis1], ["lin_sum"], { keepdims: 0 }); // [B,1]
  let first = g.node("Add", ["lin_sum", "bias"], ["first_sparse"]);
  if (a.denseDim > 0) {
    const dense = g.input("dense", "float32", ["B", a.denseDim]);
    g.node("MatMul", [dense, "denseProj"], ["dense_emb"]); // [B,k]
    g.node("Unsqueeze", ["dense_emb", axis1], ["dense_field"]); // [B,1,k]
    e = g.node("Concat", [e, "dense_field"], ["e"], { axis: 1 }); // [B,F+1,k]
    g.node("MatMul", [dense, "denseLin"], ["dense_lin"]); // [B,1]
    first = g.node("Add", [first, "dense_lin"], ["first"]);
  }

  g.node("ReduceSum", [e, axis1], ["sum_e"], { keepdims: 0 }); // [B,k]
  g.node("Mul", ["sum_e", "sum_e"], ["sum_e_sq"]);
  g.node("Mul", [e, e], ["e_sq"]);
  g.node("ReduceSum", ["e_sq", axis1], ["sum_e_sq_f"], { keepdims: 0 }); // [B,k]
  g.node("Sub", ["sum_e_sq", "sum_e_sq_f"], ["fm_k"]);
  g.node("ReduceSum", ["fm_k", axis1], ["fm_sum"], { keepdims: 1 }); // [B,1]
  g.node("Mul", ["fm_sum", half], ["fm"]);

  let h = g.node("Reshape", [e, flatShape], ["deep_in"]); // [B,F'k]
  a.hidden.forEach((_, i) => {
    g.node("Gemm", [h, `w${i}`, `b${i}`], [`z${i}`]);
    h = g.node("Relu", [`z${i}`], [`h${i}`]);
  });
  g.node("Gemm", [h, "wOut", "bOut"], ["deep"]); // [B,1]

  g.node("Add", [first, "fm"], ["wide"]);
  g.node("Add", ["wide", "deep"], ["logit"]);
  g.node("Sigmoid", ["logit"], ["prob_col"]);
  g.node("Reshape", ["prob_col", vecShape], ["prob"]);
  g.output("prob", "float32", ["B"]);
  return g.toBytes(13);
}
