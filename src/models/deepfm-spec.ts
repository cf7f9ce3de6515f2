/**
 * DeepFM: the contract between training (src/train), the ONNX exporter and
 * every serving backend. One forward pass, written once here in TF.js core ops;
 * the ONNX graph must compute exactly this (tested to 1e-5).
 *
 * Inputs, for B rows:
 * - `ids`: Int32 [B, F]. Field f's value is a row of the shared embedding
 *   table: `fieldOffsets[f] + local id`, local id in [0, fieldSizes[f]).
 *   The feature builder does the offsetting; the model only gathers.
 * - `dense`: Float32 [B, D] (D may be 0): real-valued user features, such as
 *   the LSTM hidden state. They enter as one extra "field" whose embedding is
 *   `dense x denseProj` and whose first-order term is `dense x denseLin`.
 *
 * Forward:
 *   E     = concat(gather(emb, ids) [B,F,k], (dense x denseProj) [B,1,k])  -> [B,F',k]  (F' = F + (D > 0))
 *   first = sum_f gather(lin, ids) + dense x denseLin + bias               -> [B,1]
 *   fm    = 0.5 * sum_k((sum_f E)^2 - sum_f E^2)                            -> [B,1]
 *   deep  = relu(... relu(flatten(E) x W0 + b0) ...) x Wout + bout          -> [B,1]
 *   p     = sigmoid(first + fm + deep)
 */
import type * as tfc from "@tensorflow/tfjs-core";

export interface DeepFmArchitecture {
  /** Number of sparse fields F. */
  fields: number;
  /** Rows of the shared embedding table = sum of fieldSizes. */
  vocab: number;
  /** Embedding size k. */
  embDim: number;
  /** Dense input width D (0 = none). */
  denseDim: number;
  /** Hidden layer widths of the deep part, e.g. [64, 32]. */
  hidden: number[];
}

/** Weight names and shapes. Stored in this order in weights.bin (float32, little endian). */
export function deepFmWeightShapes(a: DeepFmArchitecture): Array<[string, number[]]> {
  const fPrime = a.fields + (a.denseDim > 0 ? 1 : 0);
  const out: Array<[string, number[]]> = [
    ["emb", [a.vocab, a.embDim]],
    ["lin", [a.vocab, 1]],
    ["bias", [1]],
  ];
  if (a.denseDim > 0) {
    out.push(["denseProj", [a.denseDim, a.embDim]], ["denseLin", [a.denseDim, 1]]);
  }
  let width = fPrime * a.embDim;
  a.hidden.forEach((h, i) => {
    out.push([`w${i}`, [width, h]], [`b${i}`, [h]]);
    width = h;
  });
  out.push(["wOut", [width, 1]], ["bOut", [1]]);
  return out;
}

export type DeepFmWeights = Record<string, tfc.Tensor>;

/** The reference forward pass: probabilities [B]. `ids` int32 [B,F], `dense` float32 [B,D] or undefined when D = 0. */
export function deepFmForward(
  tf: typeof tfc, a: DeepFmArchitecture, w: DeepFmWeights, ids: tfc.Tensor2D, dense: tfc.Tensor2D | undefined,
): tfc.Tensor1D {
  return tf.tidy(() => {
    const logit = deepFmLogit(tf, a, w, ids, dense);
    return tf.reshape(tf.sigmoid(logit), [-1]) as tfc.Tensor1D;
  });
}

/** The logit before the sigmoid, [B,1]; training uses it with a numerically stable loss. */
export function deepFmLogit(
  tf: typeof tfc, a: DeepFmArchitecture, w: DeepFmWeights, ids: tfc.Tensor2D, dense: tfc.Tensor2D | undefined,
): tfc.Tensor2D {
  const B = ids.shape[0];
  let e = tf.gather(w.emb!, ids) as tfc.Tensor3D; // [B,F,k]
  let first = tf.sum(tf.gather(w.lin!, ids), [1]) as tfc.Tensor2D; // [B,1]
  first = tf.add(first, w.bias!) as tfc.Tensor2D;
  if (a.denseDim > 0) {
    if (dense === undefined) throw new Error("deepFm: dense input required");
    const dv = tf.reshape(tf.matMul(dense, w.denseProj as tfc.Tensor2D), [B, 1, a.embDim]) as tfc.Tensor3D;
    e = tf.concat([e, dv], 1);
    first = tf.add(first, tf.matMul(dense, w.denseLin as tfc.Tensor2D)) as tfc.Tensor2D;
  }
  const sumE = tf.sum(e, 1); // [B,k]
  const fm = tf.mul(0.5, tf.sum(tf.sub(tf.square(sumE), tf.sum(tf.square(e), 1)), 1, true)) as tfc.Tensor2D;
  let h = tf.reshape(e, [B, -1]) as tfc.Tensor2D;
  for (let i = 0; i < a.hidden.length; i++) {
    h = tf.relu(tf.add(tf.matMul(h, w[`w${i}`] as tfc.Tensor2D), w[`b${i}`]!)) as tfc.Tensor2D;
  }
  const deep = tf.add(tf.matMul(h, w.wOut as tfc.Tensor2D), w.bOut!) as tfc.Tensor2D;
  return tf.add(tf.add(first, fm), deep) as tfc.Tensor2D;
}
