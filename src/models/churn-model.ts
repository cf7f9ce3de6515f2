/**
 * Churn risk: P(no purchase in the next 90 days), computed from a live
 * profile. This file is the contract between training (src/train/train-churn.ts),
 * evaluation (src/eval/churn-eval.ts) and the engine, which calls
 * `ChurnModel.predict(state, asOfMs)` at query time.
 *
 * Features (`churnFeatures`) are a pure function of the stored `UserState` and
 * the as-of time: they read nothing else, so a profile built from the events
 * before a cut-off gives exactly the features the model was trained on.
 * Days are 86,400,000 ms; `log` is the natural log; `log1p(x) = log(1 + x)`.
 * The features assume the default profile options (sessions split after 30
 * minutes without events); other options shift the session features.
 *
 * The model was trained on customers with at least one purchase. For a state
 * without purchases the recency is taken from the first event seen, which is
 * outside the training domain: callers may prefer to show no churn risk then.
 *
 * Artifact: `models/churn/<version>/manifest.json` (ModelManifest, format
 * "json") whose `files.model` names a JSON file holding a `ChurnModelSpec`.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { ContributionView as Contribution, ExplanationView as Explanation, UserState } from "../actors/user-profile.js";
import { ConfigError } from "../errors.js";
import { EventType } from "../wire/proto.js";
import { readManifest, type ModelManifest } from "./artifacts.js";
import { calibrate, sigmoid, validateCalibration, type Calibration } from "./calibration.js";

/** Names of the feature vector `churnFeatures` returns, in order. */
export const CHURN_FEATURE_NAMES = Object.freeze([
  /** log1p(days since the last purchase). */
  "recency_days_log",
  /** log1p(days since the first event). */
  "tenure_days_log",
  /** log1p(orders): distinct order ids of purchases. */
  "orders_log",
  /** log1p(purchase events), i.e. order lines. */
  "purchase_lines_log",
  /** sign(net) x log1p(|net|), net = purchased - refunded. */
  "monetary_log",
  /** log1p(purchased / orders). */
  "avg_order_value_log",
  /** log1p(purchase lines / orders). */
  "lines_per_order_log",
  /** log1p(refund events). */
  "refund_lines_log",
  /** refunded / purchased, clipped to [0, 1]. */
  "refund_share",
  /** log1p(days from the first event to the last purchase). */
  "active_span_days_log",
  /** log1p(mean days between orders) = log1p(span / (orders - 1)); with one order, log1p(tenure days). */
  "mean_gap_days_log",
  /** recency_days_log - mean_gap_days_log: how overdue the next order is. */
  "overdue_log",
  /** log1p(30 x orders / (tenure days + 1)): orders per month of tenure. */
  "orders_per_month_log",
  /** 1 when the customer has at most one order, else 0. */
  "single_order",
  /** log1p(sessions). */
  "sessions_log",
  /** log1p(mean events per session). */
  "session_events_log",
  /** log1p(events of the latest session). */
  "last_session_events_log",
  /** log1p(days since the last event of any kind, refunds included). */
  "last_seen_days_log",
  /** log1p(distinct recent items kept by the profile). */
  "recent_items_log",
  /** Distinct price bands in the price-band affinity table. */
  "price_bands",
] as const);
export type ChurnFeatureName = (typeof CHURN_FEATURE_NAMES)[number];

const MS_PER_DAY = 86_400_000;

function slog(x: number): number {
  return Math.sign(x) * Math.log1p(Math.abs(x));
}

/** The feature vector of `state` at `asOfMs` (see CHURN_FEATURE_NAMES); always finite. */
export function churnFeatures(s: UserState, asOfMs: number): Float64Array {
  const lines = s.counts[EventType.PURCHASE] ?? 0;
  const refundLines = s.counts[EventType.REFUND] ?? 0;
  const orders = s.orders;
  const first = s.firstSeenMs > 0 ? s.firstSeenMs : asOfMs;
  const last = s.lastPurchaseMs > 0 ? s.lastPurchaseMs : first;
  const tenure = Math.max(0, asOfMs - first) / MS_PER_DAY;
  const recency = Math.max(0, asOfMs - last) / MS_PER_DAY;
  const span = Math.max(0, last - first) / MS_PER_DAY;
  const gap = orders > 1 ? span / (orders - 1) : tenure;
  const sessionEvents = s.sEventsDone + s.sEvents;
  const lastSeen = s.lastSeenMs > 0 ? Math.max(0, asOfMs - s.lastSeenMs) / MS_PER_DAY : tenure;
  const x = new Float64Array(CHURN_FEATURE_NAMES.length);
  x[0] = Math.log1p(recency);
  x[1] = Math.log1p(tenure);
  x[2] = Math.log1p(orders);
  x[3] = Math.log1p(lines);
  x[4] = slog(s.purchased - s.refunded);
  x[5] = Math.log1p(Math.max(0, s.purchased) / Math.max(1, orders));
  x[6] = Math.log1p(lines / Math.max(1, orders));
  x[7] = Math.log1p(refundLines);
  x[8] = s.purchased > 0 ? Math.min(1, Math.max(0, s.refunded / s.purchased)) : 0;
  x[9] = Math.log1p(span);
  x[10] = Math.log1p(gap);
  x[11] = x[0] - x[10];
  x[12] = Math.log1p((30 * orders) / (tenure + 1));
  x[13] = orders <= 1 ? 1 : 0;
  x[14] = Math.log1p(s.sCount);
  x[15] = Math.log1p(s.sCount > 0 ? sessionEvents / s.sCount : 0);
  x[16] = Math.log1p(s.sEvents);
  x[17] = Math.log1p(lastSeen);
  x[18] = Math.log1p(s.recent.length);
  x[19] = s.band.keys.length;
  return x;
}

/** Logistic regression on standardised features: p = sigmoid(bias + sum_j w_j (x_j - mean_j) / std_j). */
export interface LogisticSpec {
  kind: "logistic";
  /** Feature names used, a subset of CHURN_FEATURE_NAMES, in this order. */
  features: string[];
  mean: number[];
  std: number[];
  weights: number[];
  bias: number;
  /** L2 strength used in training (sum over weights of lambda/2 w^2 added to the summed loss). */
  l2: number;
}

/**
 * One regression tree, nodes as parallel arrays, root at 0. A node with
 * `feature[i] = -1` is a leaf whose output is `value[i]`; otherwise rows with
 * x[feature] <= threshold go to `left[i]`, the others to `right[i]`.
 */
export interface TreeSpec {
  feature: number[];
  threshold: number[];
  left: number[];
  right: number[];
  value: number[];
}

/** Gradient-boosted trees on the logit: p = sigmoid(base + sum of tree outputs); tree features index `features`. */
export interface GbdtSpec {
  kind: "gbdt";
  features: string[];
  base: number;
  trees: TreeSpec[];
  /** Hyper-parameters, for the record. */
  params: Record<string, number>;
}

export type ChurnModelSpec = (LogisticSpec | GbdtSpec) & {
  /** Platt scaling fitted on a validation window (models trained from a shop's stream); absent = the plain sigmoid. */
  calibration?: Calibration;
};

export { sigmoid };

function treeOutput(t: TreeSpec, x: ArrayLike<number>): number {
  let i = 0;
  while (t.feature[i]! >= 0) i = x[t.feature[i]!]! <= t.threshold[i]! ? t.left[i]! : t.right[i]!;
  return t.value[i]!;
}

/** The logit of a spec for `x`, a vector over the spec's own `features` (not the full feature vector). */
export function specLogit(spec: ChurnModelSpec, x: ArrayLike<number>): number {
  if (spec.kind === "logistic") {
    let z = spec.bias;
    for (let j = 0; j < spec.weights.length; j++) z += (spec.weights[j]! * (x[j]! - spec.mean[j]!)) / spec.std[j]!;
    return z;
  }
  let z = spec.base;
  for (const t of spec.trees) z += treeOutput(t, x);
  return z;
}

export type { Contribution, Explanation };

/** Inputs listed per explanation. */
export const EXPLAIN_TOP = 5;

/**
 * Every input's contribution to a spec's logit for `x` (a vector over the
 * spec's own features): for a logistic spec the exact terms
 * w_j (x_j - mean_j) / std_j, which with the bias sum to the logit; for
 * boosted trees, occlusion: logit(x) - logit(x with input j at 0).
 */
export function specContributions(spec: ChurnModelSpec, x: ArrayLike<number>): { method: string; base: number; contributions: Contribution[] } {
  const out: Contribution[] = [];
  if (spec.kind === "logistic") {
    for (let j = 0; j < spec.weights.length; j++) {
      out.push({ input: spec.features[j]!, value: x[j]!, contribution: (spec.weights[j]! * (x[j]! - spec.mean[j]!)) / spec.std[j]! });
    }
    return { method: "exact (linear): logit = base + sum of contributions, each w x (value - mean) / std", base: spec.bias, contributions: out };
  }
  const full = specLogit(spec, x);
  const y = Float64Array.from(x as ArrayLike<number>);
  for (let j = 0; j < spec.features.length; j++) {
    const keep = y[j]!;
    y[j] = 0;
    out.push({ input: spec.features[j]!, value: keep, contribution: full - specLogit(spec, y) });
    y[j] = keep;
  }
  return { method: "occlusion (boosted trees): logit(x) - logit(x with the input at 0)", base: spec.base, contributions: out };
}

/** The explanation of a spec's logit: the top EXPLAIN_TOP contributions by size. */
export function explainSpec(spec: ChurnModelSpec, x: ArrayLike<number>, top = EXPLAIN_TOP): Explanation {
  const c = specContributions(spec, x);
  return { method: c.method, unit: "logit", base: c.base, contributions: topContributions(c.contributions, top) };
}

/** The `top` contributions with the largest magnitude, largest first (ties by input name). */
export function topContributions(c: Contribution[], top = EXPLAIN_TOP): Contribution[] {
  return c.slice().sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution) || (a.input < b.input ? -1 : 1)).slice(0, top);
}

/** Indices of `names` in `known` (default CHURN_FEATURE_NAMES); throws ConfigError naming an unknown one. */
export function featureIndices(names: readonly string[], known: readonly string[] = CHURN_FEATURE_NAMES, model = "churn"): number[] {
  return names.map((n) => {
    const i = known.indexOf(n);
    if (i < 0) throw new ConfigError(`${model} model uses unknown feature ${JSON.stringify(n)}; known: ${known.join(", ")}`);
    return i;
  });
}

function isNumberArray(a: unknown, length?: number): a is number[] {
  return Array.isArray(a) && (length === undefined || a.length === length) && a.every((v) => typeof v === "number" && Number.isFinite(v));
}

/** Checks a parsed spec's shape (features from `known`, default CHURN_FEATURE_NAMES); throws ConfigError saying what is wrong. */
export function validateSpec(spec: unknown, where: string, known: readonly string[] = CHURN_FEATURE_NAMES, model = "churn"): ChurnModelSpec {
  const bad = (why: string): never => {
    throw new ConfigError(`invalid ${model} model in ${where}: ${why}`);
  };
  if (typeof spec !== "object" || spec === null) return bad("not a JSON object");
  const s = spec as Partial<LogisticSpec> & Partial<Omit<GbdtSpec, "kind">> & { kind?: unknown };
  if (!Array.isArray(s.features) || s.features.length === 0 || !s.features.every((f) => typeof f === "string")) {
    return bad("features must be a non-empty array of names");
  }
  featureIndices(s.features, known, model);
  const d = s.features.length;
  try {
    validateCalibration((spec as { calibration?: unknown }).calibration);
  } catch (err) {
    return bad((err as Error).message);
  }
  if (s.kind === "logistic") {
    if (!isNumberArray(s.mean, d) || !isNumberArray(s.std, d) || !isNumberArray(s.weights, d)) {
      return bad(`mean, std and weights must be ${d} finite numbers each`);
    }
    if (s.std.some((v) => v <= 0)) return bad("std must be positive");
    if (typeof s.bias !== "number" || !Number.isFinite(s.bias)) return bad("bias must be a finite number");
    return s as LogisticSpec;
  }
  if (s.kind === "gbdt") {
    if (typeof s.base !== "number" || !Number.isFinite(s.base)) return bad("base must be a finite number");
    if (!Array.isArray(s.trees)) return bad("trees must be an array");
    s.trees.forEach((t, k) => {
      const n = Array.isArray(t?.feature) ? t.feature.length : -1;
      if (n < 1 || ![t.feature, t.threshold, t.left, t.right, t.value].every((a) => isNumberArray(a, n))) {
        bad(`tree ${k}: feature, threshold, left, right, value must be equal-length arrays of numbers`);
      }
      for (let i = 0; i < n; i++) {
        const f = t.feature[i]!;
        if (f === -1) continue;
        const l = t.left[i]!;
        const r = t.right[i]!;
        // Children come after their parent, so walking a tree always ends.
        if (!Number.isInteger(f) || f < 0 || f >= d || !(l > i && l < n) || !(r > i && r < n)) {
          bad(`tree ${k}: node ${i} has a bad feature or child index`);
        }
      }
    });
    return s as unknown as GbdtSpec;
  }
  return bad(`kind must be "logistic" or "gbdt", got ${JSON.stringify(s.kind)}`);
}

/** A loaded churn model: predicts P(no purchase in the next 90 days) from a profile. */
export class ChurnModel {
  readonly version: string;
  readonly spec: ChurnModelSpec;
  readonly manifest: ModelManifest | undefined;
  readonly #index: number[];
  readonly #x: Float64Array;

  constructor(spec: ChurnModelSpec, version: string, manifest?: ModelManifest) {
    this.spec = validateSpec(spec, `model ${version}`);
    this.version = version;
    this.manifest = manifest;
    this.#index = featureIndices(spec.features);
    this.#x = new Float64Array(this.#index.length);
  }

  /**
   * Loads `dir/manifest.json` (name "churn", format "json") and the spec file
   * its `files.model` names. Throws ConfigError when either is missing,
   * unreadable or malformed.
   */
  static load(dir: string): ChurnModel {
    if (!existsSync(join(dir, "manifest.json"))) throw new ConfigError(`no churn model manifest at ${join(dir, "manifest.json")}`);
    let manifest: ModelManifest;
    try {
      manifest = readManifest(dir);
    } catch (err) {
      throw new ConfigError((err as Error).message, { cause: err });
    }
    if (manifest.name !== "churn") throw new ConfigError(`${dir} holds model "${manifest.name}", not "churn"`);
    if (manifest.format !== "json") throw new ConfigError(`churn model ${dir} has format "${manifest.format}", expected "json"`);
    const file = manifest.files?.model;
    if (typeof file !== "string") throw new ConfigError(`churn manifest in ${dir} names no files.model`);
    let spec: unknown;
    try {
      spec = JSON.parse(readFileSync(join(dir, file), "utf8"));
    } catch (err) {
      throw new ConfigError(`cannot read churn model ${join(dir, file)}: ${(err as Error).message}`, { cause: err });
    }
    return new ChurnModel(validateSpec(spec, join(dir, file)), manifest.version, manifest);
  }

  /** P(no purchase in [asOfMs, asOfMs + 90 days)) for the profile `state`. */
  predict(state: UserState, asOfMs: number): number {
    return this.predictFeatures(churnFeatures(state, asOfMs));
  }

  /** The same from a full feature vector (CHURN_FEATURE_NAMES order); calibrated when the model carries a calibration. */
  predictFeatures(full: ArrayLike<number>): number {
    return calibrate(this.spec.calibration, this.logitFeatures(full));
  }

  /** The uncalibrated logit for a full feature vector. */
  logitFeatures(full: ArrayLike<number>): number {
    for (let j = 0; j < this.#index.length; j++) this.#x[j] = full[this.#index[j]!]!;
    return specLogit(this.spec, this.#x);
  }

  /** The top inputs of the logit for the profile `state` (explainSpec). */
  explain(state: UserState, asOfMs: number): Explanation {
    const full = churnFeatures(state, asOfMs);
    return explainSpec(this.spec, this.#index.map((i) => full[i]!));
  }
}
