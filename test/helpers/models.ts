/** Tiny seeded model fixtures (untrained weights, real artifacts) for engine tests. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { subjects } from "../../src/bus/subjects.js";
import { readManifest, writeManifest } from "../../src/models/artifacts.js";
import { streamSource } from "../../src/models/evidence.js";
import { BAND_SLOTS, GAP_BUCKETS, TYPE_SLOTS } from "../../src/models/lstm-features.js";
import { buildLstmModel, saveLayersModel } from "../../src/models/lstm-model.js";
import type { LstmArchitecture } from "../../src/models/lstm-spec.js";
import { initTf } from "../../src/models/tf.js";
import { VERSION } from "../../src/version.js";

/** Writes models/lstm/<version>/ under modelsDir: a seeded, untrained LSTM over the given item and category ids. */
export async function writeLstmFixture(modelsDir: string, version: string, items: string[], categories: string[], seed = 1): Promise<string> {
  await initTf();
  const arch: LstmArchitecture = {
    hidden: 8,
    embDims: { type: 2, category: 3, item: 4, band: 2, gap: 2 },
    vocab: { type: TYPE_SLOTS, category: categories.length + 2, item: items.length + 2, band: BAND_SLOTS, gap: GAP_BUCKETS },
  };
  const model = buildLstmModel(arch, seed);
  const dir = writeManifest(modelsDir, {
    name: "lstm", version, createdAt: new Date().toISOString(), portraitVersion: VERSION, format: "tfjs-layers",
    architecture: arch as unknown as Record<string, unknown>, features: {},
    training: { data: ["fixture: untrained, seeded"], split: "none", seed }, metrics: [],
    files: { topology: "model.json", weights: "weights.bin", vocab: "vocab.json" },
  }, true);
  await saveLayersModel(model, dir);
  writeFileSync(join(dir, "vocab.json"), JSON.stringify({ items, categories }));
  model.dispose();
  return dir;
}

/**
 * Gives the model in `dir` an evaluation on the stream of `prefix` (a winning
 * one, and a calibration note), so that an engine on that prefix serves its
 * predictions (src/models/evidence.ts). Rewrites the manifest in place.
 */
export function evaluateOnStream(dir: string, prefix: string, challenger = 0.8, baseline = 0.6): void {
  const m = readManifest(dir);
  m.evaluation = {
    source: streamSource(subjects(prefix).eventStream),
    trainWindow: { fromMs: 0, toMs: 1 }, testWindow: { fromMs: 1, toMs: 2 }, counts: { train: 10, test: 10 },
    metric: "AUC", higherIsBetter: true, challenger, baselines: { popularity: baseline },
  };
  m.training.calibration = "fixture: softmax taken as calibrated";
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(m, null, 2) + "\n");
}
