/**
 * DeepFM artifacts and the serving loader: save -> load -> score on every
 * backend that works here, against deepfm-spec's forward on TF.js wasm.
 */
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, ErrorCode } from "../src/errors.js";
import { writeManifest, type ModelManifest } from "../src/models/artifacts.js";
import { loadDeepFmScorer, nvidiaGpuPresent } from "../src/models/deepfm-scorer.js";
import { deepFmWeightShapes, type DeepFmArchitecture } from "../src/models/deepfm-spec.js";
import { loadDeepFmWeights, saveDeepFmWeights } from "../src/models/deepfm-weights.js";
import { initTf } from "../src/models/tf.js";
import { deepFmPlain, deepFmReference, maxAbsDiff, randomDeepFmRows, randomDeepFmWeights } from "./helpers/deepfm-fixture.js";

const TOL = 1e-5;
const arch: DeepFmArchitecture = { fields: 6, vocab: 80, embDim: 4, denseDim: 3, hidden: [16, 8] };
const sparseArch: DeepFmArchitecture = { fields: 4, vocab: 40, embDim: 3, denseDim: 0, hidden: [8] };


function manifest(a: DeepFmArchitecture, version: string): ModelManifest {
  return {
    name: "deepfm", version, createdAt: new Date(0).toISOString(), portraitVersion: "test", format: "deepfm-f32",
    architecture: { ...a }, features: {}, training: { data: [], split: "none", seed: 1 }, metrics: [],
    files: { weights: "weights.bin", onnx: "model.onnx" },
  };
}

/** Whether this machine can run backend 1 at all; here it cannot, and the tests below say why. */
function gpuBackendUsable(): boolean {
  try {
    createRequire(import.meta.url)("@tensorflow/tfjs-node-gpu");
  } catch {
    return false;
  }
  return nvidiaGpuPresent();
}

let root: string;
const weights = randomDeepFmWeights(arch, 42);
const sparseWeights = randomDeepFmWeights(sparseArch, 43);
let dir: string;
let sparseDir: string;

beforeAll(async () => {
  await initTf("wasm");
  root = mkdtempSync(join(tmpdir(), "portrait-deepfm-"));
  dir = writeManifest(root, manifest(arch, "2026-01-01.1"), true);
  saveDeepFmWeights(dir, arch, weights);
  sparseDir = writeManifest(root, manifest(sparseArch, "2026-01-01.2"), false);
  saveDeepFmWeights(sparseDir, sparseArch, sparseWeights);
});

afterAll(() => {
  if (root !== undefined) rmSync(root, { recursive: true, force: true });
});

describe("deepfm weights - save and load", () => {
  it("deepfm weights - save -> load gives the architecture and bit-identical tensors", () => {
    const got = loadDeepFmWeights(dir);
    expect(got.arch).toEqual(arch);
    expect(Object.keys(got.weights)).toEqual(deepFmWeightShapes(arch).map(([n]) => n));
    for (const [name, w] of Object.entries(weights)) expect(Array.from(got.weights[name]!)).toEqual(Array.from(w));
  });

  it("deepfm weights - a weights.bin of the wrong size is a ConfigError with both sizes", () => {
    const bad = writeManifest(root, manifest(arch, "2026-01-01.9"), false);
    writeFileSync(join(bad, "weights.bin"), new Uint8Array(12));
    expect(() => loadDeepFmWeights(bad)).toThrow(ConfigError);
    expect(() => loadDeepFmWeights(bad)).toThrow(/has 12 bytes; .* needs \d+/);
  });

  it("deepfm weights - a manifest with a malformed architecture is a ConfigError naming the field", () => {
    const bad = writeManifest(root, { ...manifest(arch, "2026-01-01.8"), architecture: { ...arch, embDim: -1 } }, false);
    expect(() => loadDeepFmWeights(bad)).toThrow(/architecture\.embDim must be an integer >= 1/);
  });
});

describe("deepfm scorer - backends", () => {
  it("deepfm scorer - auto picks onnxruntime here, says why tfjs-node-gpu was skipped, and equals the spec forward", async () => {
    if (gpuBackendUsable()) return expect((await loadDeepFmScorer(dir)).backend).toBe("tfjs-node-gpu");
    const s = await loadDeepFmScorer(dir);
    expect(s.backend).toBe("onnxruntime");
    expect(s.version).toBe("2026-01-01.1");
    expect(s.arch).toEqual(arch);
    expect(s.skipped).toHaveLength(1);
    expect(s.skipped[0]).toMatch(/^tfjs-node-gpu: (@tensorflow\/tfjs-node-gpu does not load: .+|no NVIDIA GPU is present)/);
    for (const rows of [1, 257]) {
      const { ids, dense } = randomDeepFmRows(arch, rows, rows);
      const got = await s.score(ids, dense, rows);
      expect(got).toHaveLength(rows);
      expect(maxAbsDiff(got, await deepFmReference(arch, weights, ids, dense, rows))).toBeLessThan(TOL);
    }
    await s.close();
  });

  it("deepfm scorer - forcing wasm works and agrees with onnxruntime, with and without dense input", async () => {
    for (const [d, a, w] of [[dir, arch, weights], [sparseDir, sparseArch, sparseWeights]] as const) {
      const wasm = await loadDeepFmScorer(d, { backend: "wasm" });
      const onnx = await loadDeepFmScorer(d, { backend: "onnxruntime", threads: 2 });
      expect(wasm.backend).toBe("wasm");
      expect(wasm.skipped).toEqual([]);
      const { ids, dense } = randomDeepFmRows(a, 257, 5);
      const p = await wasm.score(ids, dense, 257);
      expect(maxAbsDiff(p, await onnx.score(ids, dense, 257))).toBeLessThan(TOL);
      // The TF.js reference may run on the same wasm backend as this scorer: compare with plain loops as well.
      expect(maxAbsDiff(p, await deepFmReference(a, w, ids, dense, 257))).toBeLessThan(TOL);
      expect(maxAbsDiff(p, deepFmPlain(a, w, ids, dense, 257))).toBeLessThan(TOL);
      expect(Math.max(...p) - Math.min(...p)).toBeGreaterThan(0.05);
      await wasm.close();
      await onnx.close();
    }
  });

  it("deepfm scorer - forcing tfjs-node-gpu where it cannot run is a ConfigError with the reason", async () => {
    if (gpuBackendUsable()) return;
    const err = await loadDeepFmScorer(dir, { backend: "tfjs-node-gpu" }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe(ErrorCode.CONFIG);
    expect((err as Error).message).toMatch(/^tfjs-node-gpu: (@tensorflow\/tfjs-node-gpu does not load: .{10,}|no NVIDIA GPU is present)/);
  });

  it("deepfm scorer - without model.onnx, onnxruntime exports the graph from weights.bin and scores the same", async () => {
    const copy = writeManifest(root, manifest(arch, "2026-01-01.3"), false);
    copyFileSync(join(dir, "weights.bin"), join(copy, "weights.bin"));
    const s = await loadDeepFmScorer(copy, { backend: "onnxruntime" });
    const { ids, dense } = randomDeepFmRows(arch, 64, 9);
    expect(maxAbsDiff(await s.score(ids, dense, 64), await deepFmReference(arch, weights, ids, dense, 64))).toBeLessThan(TOL);
    await s.close();
  });
});

describe("deepfm scorer - input checks and lifecycle", () => {
  it("deepfm scorer - bad options, out-of-range ids and wrong sizes are rejected with clear messages", async () => {
    await expect(loadDeepFmScorer(dir, { threads: 0 })).rejects.toThrow(/options.threads must be a positive integer/);
    await expect(loadDeepFmScorer(dir, { gpu: true } as never)).rejects.toThrow(/options.gpu is not a DeepFM scorer option/);
    await expect(loadDeepFmScorer(dir, { backend: "webgl" as never })).rejects.toThrow(/options.backend must be/);
    await expect(loadDeepFmScorer(join(root, "nope"))).rejects.toThrow(/has no manifest.json/);

    const s = await loadDeepFmScorer(dir, { backend: "onnxruntime" });
    const { ids, dense } = randomDeepFmRows(arch, 2, 1);
    ids[7] = arch.vocab;
    await expect(s.score(ids, dense, 2)).rejects.toMatchObject({ code: ErrorCode.BAD_REQUEST, message: `ids[7] = ${arch.vocab} is outside [0, 80)` });
    ids[7] = 0;
    await expect(s.score(ids, dense, 3)).rejects.toThrow(/ids has 12 values; 3 rows x 6 fields need 18/);
    await expect(s.score(ids, undefined, 2)).rejects.toThrow(/dense has no values; 2 rows x 3 dense need 6/);
    expect(await s.score(new Int32Array(0), new Float32Array(0), 0)).toHaveLength(0);
    const pending = s.score(ids, dense, 2); // close waits for it
    await s.close();
    expect(await pending).toHaveLength(2);
    await s.close();
    await expect(s.score(ids, dense, 2)).rejects.toThrow(/closed/);
  });
});
