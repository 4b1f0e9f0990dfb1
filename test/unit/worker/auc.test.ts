import { expect } from 'chai';
import { seededRandom } from '../../../worker/data/random.js';
import { auc } from '../../../worker/metrics/auc.js';
import { expectInvalid } from '../../helpers/expect-errors.js';

/** The AUC by its definition: over every (positive, negative) pair, 1 for a win, ½ for a tie. O(n²). */
function pairwiseAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  let wins = 0;
  let pairs = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i] !== 1) continue;
    for (let j = 0; j < scores.length; j++) {
      if (labels[j] !== 0) continue;
      pairs++;
      if (scores[i]! > scores[j]!) wins += 1;
      else if (scores[i] === scores[j]) wins += 0.5;
    }
  }
  return wins / pairs;
}

describe('worker/metrics: AUC', () => {
  it('is 1 when every positive outscores every negative, 0 when the order is reversed', () => {
    expect(auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])).to.equal(1);
    expect(auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1])).to.equal(0);
    expect(auc([-Infinity, 3, Infinity], [0, 1, 1])).to.equal(1);
  });

  it('is 0.5 when every score ties', () => {
    expect(auc([0.3, 0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0, 0])).to.equal(0.5);
  });

  it('matches small cases worked by hand', () => {
    // Positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 wins of 4 pairs.
    expect(auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])).to.equal(0.75);
    // Positives 0.5 and 0.9 against negatives 0.5 and 0.2: a tie and 3 wins, 3.5 of 4.
    expect(auc(Float32Array.of(0.5, 0.5, 0.2, 0.9), Int32Array.of(1, 0, 0, 1))).to.equal(0.875);
  });

  it('equals the pairwise definition on random scores with many ties', () => {
    const random = seededRandom(11);
    for (const n of [2, 7, 50, 400]) {
      const scores = Float64Array.from({ length: n }, () => Math.floor(random() * 10) / 10);
      const labels = Int32Array.from({ length: n }, (_, i) => (i < 2 ? i : random() < 0.3 ? 1 : 0));
      expect(auc(scores, labels)).to.be.closeTo(pairwiseAuc(scores, labels), 1e-12);
    }
  });

  it('leaves its inputs as they were', () => {
    const scores = [0.9, 0.1, 0.5];
    const labels = [1, 0, 0];
    auc(scores, labels);
    expect(scores).to.deep.equal([0.9, 0.1, 0.5]);
    expect(labels).to.deep.equal([1, 0, 0]);
  });

  it('rejects lengths that differ, one class only, labels other than 0 and 1, and NaN scores', () => {
    expectInvalid(() => auc([0.1, 0.2], [0, 1, 1]), /2 scores, 3 labels/);
    expectInvalid(() => auc([0.1, 0.2], [1, 1]), /both classes/);
    expectInvalid(() => auc([0.1, 0.2], [0, 0]), /both classes/);
    expectInvalid(() => auc([], []), /both classes/);
    expectInvalid(() => auc([0.1, 0.2], [0, 2]), /label 2/);
    expectInvalid(() => auc([0.1, NaN], [0, 1]), /NaN/);
  });
});
