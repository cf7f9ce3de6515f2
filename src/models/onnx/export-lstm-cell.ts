/**
 * One step of a Keras / TF.js LSTM cell -> ONNX (opset 13), for serving the
 * LSTM user encoder one event at a time.
 *
 * Weights are the tf.layers.lstm ones, gate order i, f, c (candidate), o:
 * `kernel` [E, 4H], `recurrentKernel` [H, 4H], `bias` [4H]. The cell must use
 * `recurrentActivation: "sigmoid"` (TF.js defaults to hardSigmoid) and
 * activation tanh:
 *   z = x·K + h·R + b;  i = σ(z_i); f = σ(z_f); g = tanh(z_c); o = σ(z_o)
 *   c' = f*c + i*g;     h' = o*tanh(c')
 *
 * Graph inputs: `x` [B, E], `h` [B, H], `c` [B, H] (float32).
 * Graph outputs: `h_out` [B, H], `c_out` [B, H].
 */
import { ConfigError } from "../../errors.js";
import { GraphBuilder } from "./graph-builder.js";

export interface LstmCellShape {
  /** Input width E. */
  inputDim: number;
  /** Hidden (and cell) width H. */
  hidden: number;
}

export interface LstmCellWeights {
  /** [E, 4H], row-major. */
  kernel: Float32Array;
  /** [H, 4H], row-major. */
  recurrentKernel: Float32Array;
  /** [4H]. */
  bias: Float32Array;
}

export function exportLstmCellOnnx(shape: LstmCellShape, w: LstmCellWeights): Uint8Array {
  const { inputDim: E, hidden: H } = shape;
  for (const [k, v] of Object.entries({ inputDim: E, hidden: H })) {
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`lstm cell ${k} must be a positive integer, got ${v}`);
  }
  const want = { kernel: E * 4 * H, recurrentKernel: H * 4 * H, bias: 4 * H };
  for (const [k, n] of Object.entries(want)) {
    const got = w[k as keyof LstmCellWeights];
    if (!(got instanceof Float32Array) || got.length !== n) throw new ConfigError(`lstm cell ${k} must be a Float32Array of ${n} values, got ${got?.length}`);
  }
  // [x, h] · [K; R] in one Gemm: the two products share the output columns.
  const stacked = new Float32Array((E + H) * 4 * H);
  stacked.set(w.kernel, 0);
  stacked.set(w.recurrentKernel, E * 4 * H);

  const g = new GraphBuilder("lstm_cell");
  g.initializer("kr", stacked, [E + H, 4 * H]);
  g.initializer("b", w.bias, [4 * H]);
  g.input("x", "float32", ["B", E]);
  g.input("h", "float32", ["B", H]);
  g.input("c", "float32", ["B", H]);
  g.node("Concat", ["x", "h"], ["xh"], { axis: 1 });
  g.node("Gemm", ["xh", "kr", "b"], ["z"]);
  g.node("Split", ["z"], ["z_i", "z_f", "z_c", "z_o"], { axis: 1 });
  g.node("Sigmoid", ["z_i"], ["i"]);
  g.node("Sigmoid", ["z_f"], ["f"]);
  g.node("Tanh", ["z_c"], ["cand"]);
  g.node("Sigmoid", ["z_o"], ["o"]);
  g.node("Mul", ["f", "c"], ["fc"]);
  g.node("Mul", ["i", "cand"], ["ig"]);
  g.node("Add", ["fc", "ig"], ["c_out"]);
  g.node("Tanh", ["c_out"], ["c_act"]);
  g.node("Mul", ["o", "c_act"], ["h_out"]);
  g.output("h_out", "float32", ["B", H]);
  g.output("c_out", "float32", ["B", H]);
  return g.toBytes(13);
}
