/**
 * The small statistics shared by the synthetic generator (bench/generator.ts),
 * its calibration (bench/fit-generator.ts) and its tests: the Zipf exponent
 * estimator, the normal CDF, and the "ceil-lognormal" session-length law.
 * Fitting and re-estimating with the same code is what makes the tests'
 * "the marginals match the fitted parameters" meaningful.
 */

/** Minimum count of a rank that the rank-frequency fit uses (see zipfExponent). */
export const ZIPF_MIN_COUNT = 3;

/**
 * Zipf exponent s of a rank-frequency law count(r) ∝ r^-s, by least squares
 * of ln(count) on ln(rank) over the ranks whose count is ≥ minCount (the tail
 * of 1s and 2s is flat by discreteness, not by popularity, and would pull the
 * slope towards 0). `counts` is any iterable of per-key counts, unordered.
 */
export function zipfExponent(counts: Iterable<number>, minCount = ZIPF_MIN_COUNT): { s: number; ranks: number } {
  const c = [...counts].filter((x) => x >= minCount).sort((a, b) => b - a);
  const n = c.length;
  if (n < 3) return { s: Number.NaN, ranks: n };
  let sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (let i = 0; i < n; i++) {
    const x = Math.log(i + 1);
    const y = Math.log(c[i]!);
    sx += x; sy += y; sxx += x * x; sxy += x * y;
  }
  const slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
  return { s: -slope, ranks: n };
}

/** Counts of each key in `keys`. */
export function countBy<K>(keys: Iterable<K>): Map<K, number> {
  const m = new Map<K, number>();
  for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1);
  return m;
}

/** Standard normal CDF (Abramowitz & Stegun 7.1.26 erf, |error| < 1.5e-7). */
export function normCdf(z: number): number {
  if (z === Number.POSITIVE_INFINITY) return 1;
  if (z === Number.NEGATIVE_INFINITY) return 0;
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + y) : 0.5 * (1 - y);
}

/**
 * P(L = k) of the session-length law L = min(max, ceil(exp(mu + sigma·Z))),
 * Z standard normal, k in 1..max (the tail beyond max is lumped into max).
 */
export function ceilLognormalPmf(k: number, mu: number, sigma: number, max: number): number {
  const hi = k >= max ? 1 : normCdf((Math.log(k) - mu) / sigma);
  const lo = k <= 1 ? 0 : normCdf((Math.log(k - 1) - mu) / sigma);
  return Math.max(hi - lo, 0);
}

/** E[L] of the ceil-lognormal session-length law. */
export function ceilLognormalMean(mu: number, sigma: number, max: number): number {
  let m = 0;
  for (let k = 1; k <= max; k++) m += k * ceilLognormalPmf(k, mu, sigma, max);
  return m;
}

/** E[X] of a lognormal(mu, sigma) truncated to [lo, hi]. */
export function truncatedLognormalMean(mu: number, sigma: number, lo: number, hi: number): number {
  const a = (Math.log(lo) - mu) / sigma;
  const b = (Math.log(hi) - mu) / sigma;
  const z = normCdf(b) - normCdf(a);
  return (Math.exp(mu + (sigma * sigma) / 2) * (normCdf(b - sigma) - normCdf(a - sigma))) / z;
}

/**
 * Two-parameter maximum likelihood by grid search: a coarse grid over the
 * box, then two finer grids around the best point. Deterministic; fine for
 * smooth, unimodal 2-D likelihoods like the ones fitted here.
 */
export function gridMaximize(
  f: (a: number, b: number) => number,
  a: [number, number],
  b: [number, number],
  steps = 60,
): { a: number; b: number; value: number } {
  let best = { a: a[0], b: b[0], value: Number.NEGATIVE_INFINITY };
  let [a0, a1] = a;
  let [b0, b1] = b;
  for (let round = 0; round < 3; round++) {
    const da = (a1 - a0) / steps;
    const db = (b1 - b0) / steps;
    for (let i = 0; i <= steps; i++) {
      for (let j = 0; j <= steps; j++) {
        const x = a0 + i * da;
        const y = b0 + j * db;
        const v = f(x, y);
        if (v > best.value) best = { a: x, b: y, value: v };
      }
    }
    a0 = best.a - 2 * da; a1 = best.a + 2 * da;
    b0 = Math.max(b[0], best.b - 2 * db); b1 = best.b + 2 * db;
  }
  return best;
}
