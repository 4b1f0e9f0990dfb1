import { expect } from 'chai';
import { checkCoverage } from '../../../client/model-snapshot.js';

/*
 * The check a model snapshot passes before it is assembled: the shards'
 * answers cover every slot exactly once, at one map epoch (and, under bsp,
 * at one step). Anything else means slots moved between two shards'
 * snapshots, and the whole snapshot is taken again.
 */
describe('client: model snapshot coverage', () => {
  const h = (shardId: string, epoch: number, slots: number[], closedSteps = 0) => ({ shardId, epoch, slots, closedSteps });

  it('accepts every slot once at one epoch, in any order and split', () => {
    expect(checkCoverage(6, [h('a', 3, [0, 1, 5]), h('b', 3, [4, 2, 3])])).to.equal(null);
    expect(checkCoverage(4, [h('a', 1, [0, 1, 2, 3]), h('empty', 1, [])])).to.equal(null);
  });

  it('refuses a slot owned by nobody that answered', () => {
    expect(checkCoverage(8, [h('a', 2, [0, 1]), h('b', 2, [2, 5, 6])])).to.match(/epoch 2 no shard that answered owns slots 3-4,7/);
  });

  it('refuses a slot owned twice', () => {
    expect(checkCoverage(4, [h('a', 2, [0, 1, 2]), h('b', 2, [2, 3])])).to.match(/slot 2 by a and b/);
    expect(checkCoverage(2, [h('a', 2, [0, 1, 1])])).to.match(/slot 1 by a and a/);
  });

  it('refuses answers at different map epochs, even if they cover every slot', () => {
    expect(checkCoverage(4, [h('a', 2, [0, 1]), h('b', 3, [2, 3])])).to.match(/different map epochs \(a at 2, b at 3\)/);
  });

  it('under bsp, refuses answers at different steps', () => {
    const headers = [h('a', 1, [0, 1], 7), h('b', 1, [2, 3], 8)];
    expect(checkCoverage(4, headers)).to.equal(null);
    expect(checkCoverage(4, headers, true)).to.match(/different steps \(a at 7, b at 8\)/);
    expect(checkCoverage(4, [h('a', 1, [0, 1], 7), h('b', 1, [2, 3], 7)], true)).to.equal(null);
  });

  it('refuses slots outside the key space, and no answer at all', () => {
    expect(checkCoverage(4, [h('a', 1, [0, 1, 2, 3, 4])])).to.match(/slot 4, outside 0…3/);
    expect(checkCoverage(4, [])).to.match(/no shard answered/);
  });
});
