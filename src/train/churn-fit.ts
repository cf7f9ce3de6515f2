/**
 * Fitting the churn models on plain feature rows: L2 logistic regression by
 * Newton's method, and gradient-boosted shallow trees (second-order, on
 * histogram bins, logloss). Both deterministic; the trees' row subsampling
 * uses a seeded generator.
 */
import { sigmoid, type GbdtSpec, type LogisticSpec, type TreeSpec } from "../models/churn-model.js";
import { seededRandom } from "../models/seeded-random.js";

/** Rows as vectors over one feature list, and 0/1 labels. */
export interface Dataset {
  features: string[];
  x: ArrayLike<number>[];
  y: ArrayLike<number>;
}


/** Solves A z = b for symmetric positive definite A (Cholesky); A is n x n row-major. */
function solveSpd(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * n + j]!;
      for (let k = 0; k < j; k++) s -= l[i * n + k]! * l[j * n + k]!;
      if (i === j) {
        if (!(s > 0)) throw new Error("logistic regression: Hessian is not positive definite");
        l[i * n + i] = Math.sqrt(s);
      } else {
        l[i * n + j] = s / l[j * n + j]!;
      }
    }
  }
  const z = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = b[i]!;
    for (let k = 0; k < i; k++) s -= l[i * n + k]! * z[k]!;
    z[i] = s / l[i * n + i]!;
  }
  for (let i = n - 1; i >= 0; i--) {
    let s = z[i]!;
    for (let k = i + 1; k < n; k++) s -= l[k * n + i]! * z[k]!;
    z[i] = s / l[i * n + i]!;
  }
  return z;
}

/**
 * Logistic regression on standardised features, minimising
 * sum_i logloss_i + l2/2 * |w|^2 (bias not penalised) by Newton's method.
 * Features with zero variance get std 1 (their weight stays 0).
 */
export function fitLogistic(data: Dataset, l2: number, maxIter = 50): LogisticSpec {
  const n = data.x.length;
  const d = data.features.length;
  if (n === 0) throw new Error("logistic regression: no rows");
  const mean = new Array<number>(d).fill(0);
  const std = new Array<number>(d).fill(0);
  for (const r of data.x) for (let j = 0; j < d; j++) mean[j]! += r[j]! / n;
  for (const r of data.x) for (let j = 0; j < d; j++) std[j]! += (r[j]! - mean[j]!) ** 2 / n;
  for (let j = 0; j < d; j++) std[j] = std[j]! > 1e-12 ? Math.sqrt(std[j]!) : 1;
  // z[i] = [1, standardised row]; parameter 0 is the bias.
  const m = d + 1;
  const z = data.x.map((r) => {
    const v = new Float64Array(m);
    v[0] = 1;
    for (let j = 0; j < d; j++) v[j + 1] = (r[j]! - mean[j]!) / std[j]!;
    return v;
  });
  const beta = new Float64Array(m);
  for (let iter = 0; iter < maxIter; iter++) {
    const grad = new Float64Array(m);
    const hess = new Float64Array(m * m);
    for (let i = 0; i < n; i++) {
      const v = z[i]!;
      let s = 0;
      for (let k = 0; k < m; k++) s += beta[k]! * v[k]!;
      const p = sigmoid(s);
      const g = p - data.y[i]!;
      const h = Math.max(p * (1 - p), 1e-12);
      for (let a = 0; a < m; a++) {
        grad[a]! += g * v[a]!;
        const hv = h * v[a]!;
        for (let b = 0; b <= a; b++) hess[a * m + b]! += hv * v[b]!;
      }
    }
    for (let a = 0; a < m; a++) {
      for (let b = 0; b < a; b++) hess[b * m + a] = hess[a * m + b]!;
      if (a > 0) {
        grad[a]! += l2 * beta[a]!;
        hess[a * m + a]! += l2;
      }
    }
    hess[0]! += 1e-9;
    const step = solveSpd(hess, grad, m);
    let maxStep = 0;
    for (let k = 0; k < m; k++) {
      beta[k]! -= step[k]!;
      maxStep = Math.max(maxStep, Math.abs(step[k]!));
    }
    if (maxStep < 1e-9) break;
  }
  return {
    kind: "logistic", features: [...data.features], mean, std,
    weights: Array.from(beta.subarray(1)), bias: beta[0]!, l2,
  };
}

export interface GbdtParams {
  /** Number of trees. */
  trees: number;
  /** Maximum depth (1 = stumps). */
  depth: number;
  /** Shrinkage applied to each leaf value. */
  learningRate: number;
  /** L2 on leaf values (lambda). */
  l2: number;
  /** Minimum hessian sum in a child. */
  minChildWeight: number;
  /** Fraction of rows each tree sees (sampled without replacement). */
  subsample: number;
  /** Histogram bins per feature. */
  maxBins: number;
  seed: number;
}

export const GBDT_DEFAULTS: Readonly<GbdtParams> = Object.freeze({
  trees: 300, depth: 3, learningRate: 0.05, l2: 1, minChildWeight: 5, subsample: 0.8, maxBins: 64, seed: 1,
});

/** Split points per feature: midpoints between neighbouring distinct values at about equal-count quantiles. */
function binEdges(values: Float64Array, maxBins: number): number[] {
  const v = Float64Array.from(values).sort();
  const n = v.length;
  const edges: number[] = [];
  for (let k = 1; k < maxBins; k++) {
    let i = Math.floor((k * n) / maxBins) - 1;
    if (i < 0) continue;
    const lo = v[i]!;
    while (i < n && v[i]! === lo) i++;
    if (i >= n) break;
    const edge = (lo + v[i]!) / 2;
    if (edges.length === 0 || edge > edges.at(-1)!) edges.push(edge);
  }
  return edges;
}

/** Index of the first edge >= x (= the bin of x; x <= edges[b] iff bin(x) <= b). */
function binOf(edges: readonly number[], x: number): number {
  let lo = 0;
  let hi = edges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (edges[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

interface Split {
  gain: number;
  feature: number;
  bin: number;
}

/**
 * Gradient-boosted trees for logloss. `onTree(k, logits)` is called after
 * tree k with the updated training logits (optional, for progress and for
 * tracking a validation set by the caller).
 */
export function fitGbdt(
  data: Dataset, params: Partial<GbdtParams> = {}, onTree?: (k: number, spec: GbdtSpec) => void,
): GbdtSpec {
  const p: GbdtParams = { ...GBDT_DEFAULTS, ...params };
  const n = data.x.length;
  const d = data.features.length;
  if (n === 0) throw new Error("gbdt: no rows");
  const edges: number[][] = [];
  const bins: Uint8Array[] = [];
  for (let j = 0; j < d; j++) {
    const col = Float64Array.from(data.x, (r) => r[j]!);
    const e = binEdges(col, Math.min(p.maxBins, 256));
    edges.push(e);
    bins.push(Uint8Array.from(col, (x) => binOf(e, x)));
  }
  let pos = 0;
  for (let i = 0; i < n; i++) pos += data.y[i]!;
  const rate = Math.min(1 - 1e-6, Math.max(1e-6, pos / n));
  const base = Math.log(rate / (1 - rate));
  const logit = new Float64Array(n).fill(base);
  const g = new Float64Array(n);
  const h = new Float64Array(n);
  const rnd = seededRandom(p.seed);
  const spec: GbdtSpec = {
    kind: "gbdt", features: [...data.features], base, trees: [],
    params: { ...p },
  };
  const all = Int32Array.from({ length: n }, (_, i) => i);

  const bestSplit = (rows: Int32Array, gSum: number, hSum: number): Split | undefined => {
    let best: Split | undefined;
    const parent = (gSum * gSum) / (hSum + p.l2);
    for (let j = 0; j < d; j++) {
      const nb = edges[j]!.length + 1;
      if (nb < 2) continue;
      const hg = new Float64Array(nb);
      const hh = new Float64Array(nb);
      const b = bins[j]!;
      for (const i of rows) {
        hg[b[i]!]! += g[i]!;
        hh[b[i]!]! += h[i]!;
      }
      let gl = 0;
      let hl = 0;
      for (let k = 0; k < nb - 1; k++) {
        gl += hg[k]!;
        hl += hh[k]!;
        const gr = gSum - gl;
        const hr = hSum - hl;
        if (hl < p.minChildWeight || hr < p.minChildWeight) continue;
        const gain = (gl * gl) / (hl + p.l2) + (gr * gr) / (hr + p.l2) - parent;
        if (gain > 1e-12 && (best === undefined || gain > best.gain)) best = { gain, feature: j, bin: k };
      }
    }
    return best;
  };

  for (let k = 0; k < p.trees; k++) {
    for (let i = 0; i < n; i++) {
      const q = sigmoid(logit[i]!);
      g[i] = q - data.y[i]!;
      h[i] = Math.max(q * (1 - q), 1e-12);
    }
    let rows = all;
    if (p.subsample < 1) {
      const keep: number[] = [];
      for (let i = 0; i < n; i++) if (rnd() < p.subsample) keep.push(i);
      rows = Int32Array.from(keep);
    }
    const tree: TreeSpec = { feature: [], threshold: [], left: [], right: [], value: [] };
    const grow = (nodeRows: Int32Array, depth: number): number => {
      const id = tree.feature.length;
      let gSum = 0;
      let hSum = 0;
      for (const i of nodeRows) {
        gSum += g[i]!;
        hSum += h[i]!;
      }
      tree.feature.push(-1);
      tree.threshold.push(0);
      tree.left.push(-1);
      tree.right.push(-1);
      tree.value.push((-gSum / (hSum + p.l2)) * p.learningRate);
      const split = depth < p.depth ? bestSplit(nodeRows, gSum, hSum) : undefined;
      if (split === undefined) return id;
      const b = bins[split.feature]!;
      const l = nodeRows.filter((i) => b[i]! <= split.bin);
      const r = nodeRows.filter((i) => b[i]! > split.bin);
      tree.feature[id] = split.feature;
      tree.threshold[id] = edges[split.feature]![split.bin]!;
      tree.value[id] = 0;
      tree.left[id] = grow(l, depth + 1);
      tree.right[id] = grow(r, depth + 1);
      return id;
    };
    grow(rows, 0);
    spec.trees.push(tree);
    for (let i = 0; i < n; i++) {
      const x = data.x[i]!;
      let node = 0;
      while (tree.feature[node]! >= 0) node = x[tree.feature[node]!]! <= tree.threshold[node]! ? tree.left[node]! : tree.right[node]!;
      logit[i]! += tree.value[node]!;
    }
    onTree?.(k, spec);
  }
  return spec;
}
