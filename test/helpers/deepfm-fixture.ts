/**
 * Tiny seeded DeepFM fixtures: random (untrained) weights written as a real
 * version directory (manifest.json, weights.bin, model.onnx), plus seeded
 * random input rows for it.
 */
import { writeManifest, type ModelManifest } from "../../src/models/artifacts.js";
import { deepFmWeightShapes, type DeepFmArchitecture } from "../../src/models/deepfm-spec.js";
import { DEEPFM_FILES, saveDeepFmWeights } from "../../src/models/deepfm-weights.js";
import { seededRandom } from "../../src/models/seeded-random.js";
import { deepFmForward, type DeepFmWeights } from "../../src/models/deepfm-spec.js";
import { tf } from "../../src/models/tf.js";

/** Small, with dense inputs and two hidden layers: every part of the forward runs. */
export const FIXTURE_DEEPFM_ARCH: Readonly<DeepFmArchitecture> = Object.freeze({ fields: 6, vocab: 120, embDim: 4, denseDim: 3, hidden: [16, 8] });


export function randomDeepFmWeights(arch: DeepFmArchitecture, seed: number): Record<string, Float32Array> {
  const r = seededRandom(seed);
  const w: Record<string, Float32Array> = {};
  for (const [name, shape] of deepFmWeightShapes(arch)) {
    w[name] = Float32Array.from({ length: shape.reduce((x, d) => x * d, 1) }, () => (r() * 2 - 1) * (name === "emb" ? 0.3 : 0.5));
  }
  return w;
}

/**
 * Writes `<modelsRoot>/deepfm/<version>/` with seeded random weights and
 * returns the directory. Different seeds give models whose scores differ.
 */
export function writeDeepFmFixture(
  modelsRoot: string, version: string, opts: { arch?: DeepFmArchitecture; seed?: number; makeCurrent?: boolean } = {},
): string {
  const arch = { ...(opts.arch ?? FIXTURE_DEEPFM_ARCH), hidden: [...(opts.arch ?? FIXTURE_DEEPFM_ARCH).hidden] };
  const seed = opts.seed ?? 1;
  const manifest: ModelManifest = {
    name: "deepfm", version, createdAt: new Date(0).toISOString(), portraitVersion: "test", format: "deepfm-f32",
    architecture: { ...arch }, features: {}, training: { data: ["fixture: untrained, seeded"], split: "none", seed }, metrics: [],
    files: { ...DEEPFM_FILES },
  };
  const dir = writeManifest(modelsRoot, manifest, opts.makeCurrent ?? false);
  saveDeepFmWeights(dir, arch, randomDeepFmWeights(arch, seed));
  return dir;
}

/** `rows` seeded random rows: ids in [0, vocab), dense in [-1, 1) (undefined when denseDim is 0). */
export function randomDeepFmRows(arch: DeepFmArchitecture, rows: number, seed: number): { ids: Int32Array; dense: Float32Array | undefined } {
  const r = seededRandom(seed);
  const ids = Int32Array.from({ length: rows * arch.fields }, () => Math.floor(r() * arch.vocab));
  const dense = arch.denseDim > 0 ? Float32Array.from({ length: rows * arch.denseDim }, () => r() * 2 - 1) : undefined;
  return { ids, dense };
}

/** deepfm-spec's forward on the current TF.js backend: the reference every serving path is compared with. */
export async function deepFmReference(
  a: DeepFmArchitecture, weights: Record<string, Float32Array>, ids: Int32Array, dense: Float32Array | undefined, rows: number,
): Promise<Float32Array> {
  const w: DeepFmWeights = {};
  for (const [name, shape] of deepFmWeightShapes(a)) w[name] = tf.tensor(weights[name]!, shape);
  const idsT = tf.tensor2d(ids, [rows, a.fields], "int32");
  const denseT = dense === undefined ? undefined : tf.tensor2d(dense, [rows, a.denseDim]);
  const p = deepFmForward(tf, a, w, idsT, denseT);
  const out = (await p.data()) as Float32Array;
  tf.dispose([p, idsT, ...(denseT ? [denseT] : []), ...Object.values(w)]);
  return out;
}

/**
 * The same forward pass in plain loops (float64, no TF.js): a reference that
 * shares no code and no backend with any serving path. Row-major weights as in
 * weights.bin: emb [vocab,k], lin [vocab,1], denseProj [D,k], denseLin [D,1],
 * w<i> [in,out], wOut [in,1]; the dense projection is one more field.
 */
export function deepFmPlain(
  a: DeepFmArchitecture, w: Record<string, Float32Array>, ids: Int32Array, dense: Float32Array | undefined, rows: number,
): Float64Array {
  const k = a.embDim;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const fields: number[][] = [];
    let first = w.bias![0]!;
    for (let f = 0; f < a.fields; f++) {
      const id = ids[r * a.fields + f]!;
      fields.push(Array.from({ length: k }, (_, j) => w.emb![id * k + j]!));
      first += w.lin![id]!;
    }
    if (a.denseDim > 0) {
      const x = Array.from({ length: a.denseDim }, (_, d) => dense![r * a.denseDim + d]!);
      fields.push(Array.from({ length: k }, (_, j) => x.reduce((s, v, d) => s + v * w.denseProj![d * k + j]!, 0)));
      first += x.reduce((s, v, d) => s + v * w.denseLin![d]!, 0);
    }
    let fm = 0;
    for (let j = 0; j < k; j++) {
      let sum = 0;
      let squares = 0;
      for (const e of fields) {
        sum += e[j]!;
        squares += e[j]! * e[j]!;
      }
      fm += 0.5 * (sum * sum - squares);
    }
    let h = fields.flat();
    a.hidden.forEach((width, i) => {
      const W = w[`w${i}`]!;
      const b = w[`b${i}`]!;
      h = Array.from({ length: width }, (_, o) => Math.max(0, h.reduce((s, v, n) => s + v * W[n * width + o]!, b[o]!)));
    });
    const deep = h.reduce((s, v, n) => s + v * w.wOut![n]!, w.bOut![0]!);
    out[r] = 1 / (1 + Math.exp(-(first + fm + deep)));
  }
  return out;
}

/** The largest absolute difference of two equally long arrays. */
export function maxAbsDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  if (x.length !== y.length) throw new Error(`lengths differ: ${x.length} vs ${y.length}`);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}
