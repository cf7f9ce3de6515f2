/**
 * Model artifacts: `models/<name>/<version>/` holds
 * - `manifest.json`: what the model is (ModelManifest below);
 * - `model.json` + `weights.bin`: the TF.js model (layers topology and weights),
 *   when the model is a TF.js model;
 * - `model.onnx`: the ONNX graph our exporter wrote from those weights, when
 *   the model is served by onnxruntime;
 * - other files a manifest names in `files`.
 *
 * Versions are strings like `2026-11-22.1`; `models/<name>/CURRENT` names the
 * default version, and the engine config can name another.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError, ErrorCode, PortraitError } from "../errors.js";

/**
 * The package's `models/` directory (bundled models): beside the nearest
 * package.json above this file, whether it runs from src/ (tsx, vitest),
 * dist/ or dist-bench/src/.
 */
export const BUNDLED_MODELS_DIR = ((): string => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) return resolve(dirname(fileURLToPath(import.meta.url)), "../../models");
    dir = up;
  }
  return join(dir, "models");
})();

export interface ModelMetric {
  /** Task and split, e.g. "next-click yoochoose train_tr->train_valid". */
  task: string;
  /** Metric name -> value, e.g. { "HR@20": 0.51, "MRR@20": 0.19 }. */
  values: Record<string, number>;
}

export interface ModelManifest {
  /** Model name: the directory under models/, e.g. "lstm", "deepfm", "churn". */
  name: string;
  version: string;
  /** ISO time the model was trained. */
  createdAt: string;
  /** Portrait version that trained it. */
  portraitVersion: string;
  /** What kind of artifact holds the weights: "tfjs-layers", "json". */
  format: string;
  /** Model-specific hyper-parameters and architecture (sizes, dims). */
  architecture: Record<string, unknown>;
  /** Feature schema: fields, encodings, vocabulary sizes (vocabularies themselves may live in files). */
  features: Record<string, unknown>;
  /** Training data: files, split, row counts. */
  training: {
    data: string[];
    split: string;
    seed: number;
    epochs?: number;
    rows?: Record<string, number>;
    backend?: string;
    seconds?: number;
    [k: string]: unknown;
  };
  metrics: ModelMetric[];
  /** Extra files in the version directory, by role. */
  files: Record<string, string>;
  /**
   * The promotion evidence: the challenger, the champion it would replace and the
   * simple baselines, all scored on the same later window of this shop's data.
   * Absent for models evaluated only on the public data sets (the bundled seeds).
   */
  evaluation?: ModelEvaluation;
  /** Set by the registry when this version was promoted (forced or on a win). */
  promotion?: ModelPromotion;
}

export interface ModelEvaluation {
  /** Where the examples came from: "stream:<stream name>" or "file:<format>". */
  source: string;
  /** The training window and the later window everything was scored on (ms since epoch, event time). */
  trainWindow: { fromMs: number; toMs: number };
  testWindow: { fromMs: number; toMs: number };
  /** Example counts per window. */
  counts: { train: number; test: number; [k: string]: number };
  /** The deciding metric, e.g. "AUC", "HR@20". */
  metric: string;
  higherIsBetter: boolean;
  challenger: number;
  /** The promoted version at training time scored on the same test window; absent when there was none. */
  champion?: { version: string; value: number };
  /** Baseline name -> value on the same test window, e.g. { popularity: 0.61, "rfm-logistic": 0.70 }. */
  baselines: Record<string, number>;
}

export interface ModelPromotion {
  /** ISO time of the promotion. */
  at: string;
  /** True when `--force` overrode a loss to the champion or a baseline. */
  forced: boolean;
  /** The version it replaced, when there was one. */
  replaced?: string;
  reason: string;
}

export function versionDir(root: string, name: string, version: string): string {
  return join(root, name, version);
}

/** The default version of `name` under `root`: the CURRENT file, else the newest directory. */
export function currentVersion(root: string, name: string): string | undefined {
  const dir = join(root, name);
  const cur = join(dir, "CURRENT");
  if (existsSync(cur)) return readFileSync(cur, "utf8").trim();
  if (!existsSync(dir)) return undefined;
  const versions = readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  return versions.at(-1);
}

/** Resolves "name[@version]" under root to the version directory and its manifest; throws CONFIG errors that say what exists. */
export function resolveModel(root: string, spec: string): { dir: string; manifest: ModelManifest } {
  const [name, wanted] = spec.split("@", 2) as [string, string | undefined];
  const version = wanted ?? currentVersion(root, name);
  if (version === undefined) throw new ConfigError(`no model "${name}" under ${root} (train one with \`portrait train ${name}\`)`);
  const dir = versionDir(root, name, version);
  const file = join(dir, "manifest.json");
  if (!existsSync(file)) {
    const have = existsSync(join(root, name)) ? readdirSync(join(root, name)).filter((v) => v !== "CURRENT") : [];
    throw new ConfigError(`model ${name}@${version} not found under ${root}; versions: ${have.join(", ") || "none"}`);
  }
  return { dir, manifest: readManifest(dir) };
}

export function readManifest(dir: string): ModelManifest {
  try {
    return JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ModelManifest;
  } catch (err) {
    throw new PortraitError(ErrorCode.CONFIG, `cannot read model manifest in ${dir}: ${(err as Error).message}`);
  }
}

/** Writes the manifest (pretty JSON) and, when `makeCurrent`, points CURRENT at this version. */
export function writeManifest(root: string, manifest: ModelManifest, makeCurrent: boolean): string {
  const dir = versionDir(root, manifest.name, manifest.version);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  if (makeCurrent) writeFileSync(join(root, manifest.name, "CURRENT"), manifest.version + "\n");
  return dir;
}

/** A new version string for today: `YYYY-MM-DD.N`, N one more than the highest existing for that day. */
export function nextVersion(root: string, name: string, now = new Date()): string {
  const day = now.toISOString().slice(0, 10);
  const dir = join(root, name);
  let n = 0;
  if (existsSync(dir)) {
    for (const v of readdirSync(dir)) {
      const m = /^(\d{4}-\d{2}-\d{2})\.(\d+)$/.exec(v);
      if (m !== null && m[1] === day) n = Math.max(n, Number(m[2]));
    }
  }
  return `${day}.${n + 1}`;
}
