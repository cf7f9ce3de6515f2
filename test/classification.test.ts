import { describe, expect, it } from "vitest";
import { auc, logloss } from "../src/metrics/classification.js";
import { seededRandom } from "../src/models/seeded-random.js";

/** The definition: over all (positive, negative) pairs, 1 if the positive scores higher, 1/2 on a tie. */
function pairwiseAuc(scores: number[], labels: number[]): number {
  let sum = 0;
  let pairs = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i] !== 1) continue;
    for (let j = 0; j < scores.length; j++) {
      if (labels[j] !== 0) continue;
      pairs++;
      sum += scores[i]! > scores[j]! ? 1 : scores[i] === scores[j] ? 0.5 : 0;
    }
  }
  return sum / pairs;
}

describe("classification - auc", () => {
  it("auc - perfect ranking is 1, reversed is 0, all ties are 0.5", () => {
    expect(auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])).toBe(1);
    expect(auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1])).toBe(0);
    expect(auc([0.3, 0.3, 0.3, 0.3, 0.3], [0, 1, 0, 1, 1])).toBe(0.5);
  });

  it("auc - small hand-computed cases, with and without ties", () => {
    // Positives 0.35, 0.8; negatives 0.1, 0.4: 3 of 4 pairs ordered.
    expect(auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])).toBe(0.75);
    // Positives 0.5, 0.9; negatives 0.5, 0.2: the 0.5/0.5 pair counts 1/2 -> 3.5 / 4.
    expect(auc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1])).toBe(0.875);
  });

  it("auc - matches the pairwise definition on random scores with many ties", () => {
    const rnd = seededRandom(7);
    const scores = Array.from({ length: 300 }, () => Math.floor(rnd() * 20) / 20);
    const labels = scores.map((s) => (rnd() < 0.3 + 0.4 * s ? 1 : 0));
    expect(auc(scores, labels)).toBeCloseTo(pairwiseAuc(scores, labels), 12);
    expect(auc(Float64Array.from(scores), Uint8Array.from(labels))).toBeCloseTo(pairwiseAuc(scores, labels), 12);
  });

  it("auc - depends only on the order of the scores", () => {
    const scores = [0.1, 0.7, 0.3, 0.9, 0.5, 0.2];
    const labels = [0, 1, 0, 1, 1, 0];
    expect(auc(scores.map((s) => Math.exp(5 * s) - 3), labels)).toBe(auc(scores, labels));
  });

  it("auc - is NaN with one class, and rejects bad input", () => {
    expect(auc([0.1, 0.2], [1, 1])).toBeNaN();
    expect(() => auc([0.1, 0.2], [1])).toThrow(/2 predictions but 1 labels/);
    expect(() => auc([0.1, 0.2], [1, 2])).toThrow(/expected 0 or 1/);
    expect(() => auc([0.1, Number.NaN], [1, 0])).toThrow(/NaN/);
  });
});

describe("classification - logloss", () => {
  it("logloss - known values", () => {
    expect(logloss([0.9, 0.2], [1, 0])).toBeCloseTo(-(Math.log(0.9) + Math.log(0.8)) / 2, 12);
    expect(logloss([0.9, 0.2], [1, 0])).toBeCloseTo(0.1642520, 6);
    expect(logloss([0.5, 0.5, 0.5], [1, 0, 1])).toBeCloseTo(Math.LN2, 12);
  });

  it("logloss - clips probabilities to [eps, 1 - eps]", () => {
    expect(logloss([0], [1])).toBeCloseTo(-Math.log(1e-7), 9);
    expect(logloss([1], [0], 1e-3)).toBeCloseTo(-Math.log(1e-3), 9);
    expect(Number.isFinite(logloss([0, 1], [1, 0]))).toBe(true);
  });

  it("logloss - is NaN when empty, and rejects bad input", () => {
    expect(logloss([], [])).toBeNaN();
    expect(() => logloss([0.5], [0.5])).toThrow(/expected 0 or 1/);
    expect(() => logloss([0.5, 0.5], [0])).toThrow(/2 predictions but 1 labels/);
  });
});
