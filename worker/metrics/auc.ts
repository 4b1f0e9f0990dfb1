import { InvalidArgumentError } from '../../cluster/errors.js';

/**
 * The area under the ROC curve of `scores` against binary `labels` (0 or 1):
 * the probability that a random positive example scores above a random
 * negative one, a tie counting one half. Computed from ranks (the
 * Mann–Whitney U statistic): sort by score, give tied scores their average
 * rank, then AUC = (R₊ − n₊(n₊ + 1)/2) / (n₊·n₋) with R₊ the positives' rank
 * sum. O(n log n) time, O(n) memory; `scores` and `labels` are not changed.
 *
 * 1 means every positive outscores every negative, 0 the reverse, 0.5 no
 * better than chance (or every score equal).
 *
 * @throws InvalidArgumentError when the lengths differ, a label is not 0 or
 * 1, a score is NaN, or the labels hold one class only (the AUC is then undefined).
 */
export function auc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  if (labels.length !== n) throw new InvalidArgumentError(`AUC needs one label per score: ${n} scores, ${labels.length} labels`);
  const s = new Float64Array(n);
  let positives = 0;
  for (let i = 0; i < n; i++) {
    const label = labels[i]!;
    if (label !== 0 && label !== 1) throw new InvalidArgumentError(`AUC takes labels 0 or 1; label ${label} at index ${i}`);
    positives += label;
    const score = scores[i]!;
    if (Number.isNaN(score)) throw new InvalidArgumentError(`AUC cannot rank score NaN at index ${i}`);
    s[i] = score;
  }
  const negatives = n - positives;
  if (positives === 0 || negatives === 0) {
    throw new InvalidArgumentError(`AUC needs both classes; the ${n} labels are all ${positives === 0 ? 0 : 1}`);
  }

  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => (s[a]! < s[b]! ? -1 : s[a]! > s[b]! ? 1 : 0)); // ±Infinity sorts too

  // Ranks are 1-based; a run of equal scores [i, j) shares the rank (i + 1 + j) / 2.
  let positiveRanks = 0;
  for (let i = 0; i < n; ) {
    const value = s[order[i]!]!;
    let j = i + 1;
    while (j < n && s[order[j]!]! === value) j++;
    let runPositives = 0;
    for (let k = i; k < j; k++) runPositives += labels[order[k]!]!;
    positiveRanks += (runPositives * (i + 1 + j)) / 2;
    i = j;
  }
  return (positiveRanks - (positives * (positives + 1)) / 2) / (positives * negatives);
}
