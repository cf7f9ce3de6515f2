/**
 * Probability calibration of a binary classifier's logit, fitted on a
 * validation window that lies between the training and the test windows in
 * time, and stored in the model file beside the spec (`calibration`).
 *
 * - Platt: p = sigmoid(a x logit + b), a and b by Newton's method on the
 *   validation logloss (a small L2 on a - 1 and b keeps it finite when the
 *   validation window separates perfectly).
 * - Reliability: the expected calibration error (ECE) over equal-width bins of
 *   the predicted probability: sum over bins of (bin rows / rows) x
 *   |mean predicted - observed rate|.
 */

/** The logistic function, stable for large |z|. */
export function sigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

/** A fitted Platt scaling: p = sigmoid(a x logit + b). */
export interface PlattCalibration {
  kind: "platt";
  a: number;
  b: number;
  /** Validation rows it was fitted on, for the record. */
  rows: number;
}

export type Calibration = PlattCalibration;

/** Fits Platt scaling on (logit, label) pairs. Throws RangeError without both labels. */
export function fitPlatt(logits: ArrayLike<number>, labels: ArrayLike<number>, l2 = 1e-3, maxIter = 100): PlattCalibration {
  const n = logits.length;
  let pos = 0;
  for (let i = 0; i < n; i++) pos += labels[i]!;
  if (pos === 0 || pos === n) throw new RangeError(`platt: the validation window needs both labels (${pos} positives of ${n})`);
  // Newton's method with step halving: a full step can overshoot when the logits are far off.
  const loss = (a: number, b: number) => {
    let l = 0.5 * l2 * ((a - 1) ** 2 + b * b);
    for (let i = 0; i < n; i++) {
      const z = a * logits[i]! + b;
      // log(1 + e^z) - y z, computed without overflow.
      l += (z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z))) - labels[i]! * z;
    }
    return l;
  };
  let a = 1;
  let b = 0;
  let current = loss(a, b);
  for (let it = 0; it < maxIter; it++) {
    let ga = l2 * (a - 1);
    let gb = l2 * b;
    let haa = l2;
    let hab = 0;
    let hbb = l2;
    for (let i = 0; i < n; i++) {
      const z = logits[i]!;
      const p = sigmoid(a * z + b);
      const g = p - labels[i]!;
      const h = Math.max(p * (1 - p), 1e-12);
      ga += g * z;
      gb += g;
      haa += h * z * z;
      hab += h * z;
      hbb += h;
    }
    const det = haa * hbb - hab * hab;
    if (!(det > 0)) break;
    const da = (hbb * ga - hab * gb) / det;
    const db = (haa * gb - hab * ga) / det;
    let step = 1;
    let next = loss(a - da, b - db);
    while (next > current && step > 1e-6) {
      step /= 2;
      next = loss(a - step * da, b - step * db);
    }
    if (next > current) break;
    a -= step * da;
    b -= step * db;
    const moved = step * (Math.abs(da) + Math.abs(db));
    current = next;
    if (moved < 1e-10) break;
  }
  return { kind: "platt", a, b, rows: n };
}

/** The calibrated probability of a logit (the plain sigmoid without a calibration). */
export function calibrate(c: Calibration | undefined, logit: number): number {
  return c === undefined ? sigmoid(logit) : sigmoid(c.a * logit + c.b);
}

/** Expected calibration error over `bins` equal-width probability bins. */
export function expectedCalibrationError(probs: ArrayLike<number>, labels: ArrayLike<number>, bins = 10): number {
  const n = probs.length;
  if (n === 0) return Number.NaN;
  const sumP = new Float64Array(bins);
  const sumY = new Float64Array(bins);
  const count = new Float64Array(bins);
  for (let i = 0; i < n; i++) {
    const k = Math.min(bins - 1, Math.max(0, Math.floor(probs[i]! * bins)));
    sumP[k]! += probs[i]!;
    sumY[k]! += labels[i]!;
    count[k]! += 1;
  }
  let ece = 0;
  for (let k = 0; k < bins; k++) if (count[k]! > 0) ece += Math.abs(sumP[k]! - sumY[k]!) / n;
  return ece;
}

/** Checks a parsed calibration; returns undefined for undefined, throws Error saying what is wrong. */
export function validateCalibration(c: unknown): Calibration | undefined {
  if (c === undefined) return undefined;
  const x = c as Partial<PlattCalibration>;
  if (x?.kind !== "platt" || !Number.isFinite(x.a) || !Number.isFinite(x.b)) {
    throw new Error(`calibration must be {kind: "platt", a, b} with finite a and b, got ${JSON.stringify(c)}`);
  }
  return x as PlattCalibration;
}
