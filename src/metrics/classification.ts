/**
 * Binary classification metrics shared by every evaluation (churn, CTR).
 *
 * Labels are 0/1 numbers (any other value is an error). Scores and
 * probabilities are plain numbers; any ArrayLike works (arrays, typed arrays).
 */

function checkInputs(name: string, values: ArrayLike<number>, labels: ArrayLike<number>): void {
  if (values.length !== labels.length) {
    throw new RangeError(`${name}: ${values.length} predictions but ${labels.length} labels`);
  }
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i];
    if (y !== 0 && y !== 1) throw new RangeError(`${name}: label ${i} is ${y}, expected 0 or 1`);
    if (Number.isNaN(values[i])) throw new RangeError(`${name}: prediction ${i} is NaN`);
  }
}

/**
 * Area under the ROC curve: the probability that a random positive scores
 * higher than a random negative, ties counting one half (the Mann-Whitney U
 * statistic, computed from average ranks in O(n log n)).
 *
 * Only the order of the scores matters. Returns NaN when all labels are the
 * same (the AUC is undefined then). Throws RangeError on length mismatch, a
 * label other than 0/1, or a NaN score.
 */
export function auc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  checkInputs("auc", scores, labels);
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a]! - scores[b]!);
  let positives = 0;
  let rankSum = 0;
  for (let i = 0; i < n; ) {
    let j = i + 1;
    while (j < n && scores[order[j]!] === scores[order[i]!]) j++;
    // Ranks i+1 .. j share their average.
    const avgRank = (i + 1 + j) / 2;
    for (let k = i; k < j; k++) {
      if (labels[order[k]!] === 1) {
        positives++;
        rankSum += avgRank;
      }
    }
    i = j;
  }
  const negatives = n - positives;
  if (positives === 0 || negatives === 0) return Number.NaN;
  return (rankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}

/**
 * Mean binary cross-entropy, natural log:
 * -mean(y log p + (1 - y) log(1 - p)), with p clipped to [eps, 1 - eps] so
 * one confident mistake costs at most -log(eps) instead of Infinity.
 * Returns NaN for empty input. Throws RangeError on length mismatch, a label
 * other than 0/1, or a NaN probability.
 */
export function logloss(probs: ArrayLike<number>, labels: ArrayLike<number>, eps = 1e-7): number {
  checkInputs("logloss", probs, labels);
  const n = probs.length;
  if (n === 0) return Number.NaN;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const p = Math.min(1 - eps, Math.max(eps, probs[i]!));
    sum -= labels[i] === 1 ? Math.log(p) : Math.log(1 - p);
  }
  return sum / n;
}
