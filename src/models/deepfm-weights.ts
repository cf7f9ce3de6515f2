/**
 * DeepFM weights on disk: the one reader and writer shared by the trainer and
 * every serving backend.
 *
 * A DeepFM version directory (`models/deepfm/<version>/`) holds:
 * - `manifest.json`: a ModelManifest whose `architecture` is the
 *   DeepFmArchitecture (written by the trainer with `writeManifest`);
 * - `weights.bin`: float32 little endian, the tensors of
 *   `deepFmWeightShapes(arch)` concatenated in that order, row-major, nothing
 *   else (its size is checked against the architecture on load);
 * - `model.onnx`: the same weights as an ONNX graph (`exportDeepFmOnnx`),
 *   served by onnxruntime.
 * `saveDeepFmWeights` writes the last two; the manifest's `files` should name
 * them as `DEEPFM_FILES` does.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../errors.js";
import { readManifest } from "./artifacts.js";
import { deepFmWeightShapes, type DeepFmArchitecture } from "./deepfm-spec.js";
import { checkDeepFmWeights, exportDeepFmOnnx, validateDeepFmArchitecture } from "./onnx/export-deepfm.js";

/** File names in a DeepFM version directory, by role (for `ModelManifest.files`). */
export const DEEPFM_FILES = Object.freeze({ weights: "weights.bin", onnx: "model.onnx" });

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function leBytes(a: Float32Array): Uint8Array {
  if (littleEndian) return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const out = new Uint8Array(a.byteLength);
  const view = new DataView(out.buffer);
  a.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return out;
}

/**
 * Writes `weights.bin` and `model.onnx` into `dir` (created if missing).
 * Each file is written under a temporary name and renamed, so a reader never
 * sees half a file. Throws a ConfigError when a tensor is missing or has the
 * wrong size. Returns the file names by role.
 */
export function saveDeepFmWeights(dir: string, arch: DeepFmArchitecture, weights: Record<string, Float32Array>): typeof DEEPFM_FILES {
  validateDeepFmArchitecture(arch);
  checkDeepFmWeights(arch, weights);
  const onnx = exportDeepFmOnnx(arch, weights);
  mkdirSync(dir, { recursive: true });
  const binPath = join(dir, DEEPFM_FILES.weights);
  const fd = openSync(binPath + ".tmp", "w");
  try {
    for (const [name] of deepFmWeightShapes(arch)) writeSync(fd, leBytes(weights[name]!));
  } finally {
    closeSync(fd);
  }
  renameSync(binPath + ".tmp", binPath);
  const onnxPath = join(dir, DEEPFM_FILES.onnx);
  writeFileSync(onnxPath + ".tmp", onnx);
  renameSync(onnxPath + ".tmp", onnxPath);
  return DEEPFM_FILES;
}

/** The architecture in `dir/manifest.json`, validated. */
export function readDeepFmArchitecture(dir: string): { arch: DeepFmArchitecture; version: string } {
  if (!existsSync(join(dir, "manifest.json"))) throw new ConfigError(`${dir} is not a model version directory: it has no manifest.json`);
  const manifest = readManifest(dir);
  try {
    validateDeepFmArchitecture(manifest.architecture);
  } catch (err) {
    throw new ConfigError(`${join(dir, "manifest.json")}: ${(err as Error).message}`);
  }
  const a = manifest.architecture as unknown as DeepFmArchitecture;
  const arch: DeepFmArchitecture = { fields: a.fields, vocab: a.vocab, embDim: a.embDim, denseDim: a.denseDim, hidden: [...a.hidden] };
  return { arch, version: manifest.version };
}

/** Reads the architecture (from the manifest) and the weights of the DeepFM version in `dir`. */
export function loadDeepFmWeights(dir: string): { arch: DeepFmArchitecture; weights: Record<string, Float32Array> } {
  const { arch } = readDeepFmArchitecture(dir);
  const file = join(dir, DEEPFM_FILES.weights);
  if (!existsSync(file)) throw new ConfigError(`${file} is missing`);
  const buf = readFileSync(file);
  const shapes = deepFmWeightShapes(arch);
  const total = shapes.reduce((s, [, shape]) => s + shape.reduce((x, d) => x * d, 1), 0);
  if (buf.byteLength !== total * 4) {
    throw new ConfigError(`${file} has ${buf.byteLength} bytes; the architecture in the manifest needs ${total * 4} (${total} float32)`);
  }
  let all: Float32Array;
  if (littleEndian) {
    // One copy into an aligned buffer; every tensor is a view of it.
    all = new Float32Array(total);
    new Uint8Array(all.buffer).set(buf);
  } else {
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    all = Float32Array.from({ length: total }, (_, i) => view.getFloat32(i * 4, true));
  }
  const weights: Record<string, Float32Array> = {};
  let at = 0;
  for (const [name, shape] of shapes) {
    const n = shape.reduce((x, d) => x * d, 1);
    weights[name] = all.subarray(at, at + n);
    at += n;
  }
  return { arch, weights };
}
