import { expect } from 'chai';
import { progressText } from '../../../cli/local/progress.js';

describe('unit: the progress line of tessera local', () => {
  const at = (steps: number, elapsedS: number) => progressText({ steps, epoch: 0, epochs: 2, loss: 0.5, samplesPerSec: 1000, elapsedS }, 1000);

  it('shows the time left at the pace so far once 2 % is done', () => {
    expect(at(250, 10)).to.match(/ 25%  step 250\/1000  epoch 1\/2  loss 0\.5000  1,000 samples\/s  10\.0 s  ETA 30 s$/);
    expect(at(100, 40)).to.match(/ETA 6 min 00 s$/);
    expect(at(20, 100)).to.match(/ETA 1 h 21 min$/);
  });

  it('no ETA before 2 % (too early to tell) or once done', () => {
    expect(at(10, 5)).to.not.match(/ETA/);
    expect(at(1000, 60)).to.not.match(/ETA/);
  });
});
