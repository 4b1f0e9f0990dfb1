import { expect } from 'chai';
import { loadPlan } from '../../../cluster/rebalance-plan.js';
import { type ShardMap, evenAssignment } from '../../../cluster/shard-map.js';

const mapOf = (owners: string[]): ShardMap => ({ epoch: 3, slots: owners.length, owners, addresses: Object.fromEntries([...new Set(owners)].map((id) => [id, `${id}:1`])) });
const ratio = (after: Record<string, number>, mean: number) => Math.max(...Object.values(after)) / mean;

describe('unit: the load-aware rebalance plan', () => {
  it('moves hot slots off the busiest shard until every shard is within the margin, with few moves', () => {
    const map = mapOf(evenAssignment(['a', 'b'], 16)); // a: 0-7, b: 8-15
    // a's slots are hot (slot 0 hottest), b's nearly idle.
    const load = new Map<number, number>([[0, 400], [1, 200], [2, 200], [3, 100], [4, 100], [5, 50], [6, 50], [7, 50], [8, 10], [9, 10]]);
    const plan = loadPlan(map, ['a', 'b'], load, 0.1);
    expect(plan.before).to.deep.equal({ a: 1150, b: 20 });
    expect(plan.mean).to.equal(585);
    expect(ratio(plan.after, plan.mean)).to.be.at.most(1.1);
    const moved = plan.moves.flatMap((m) => m.slots);
    expect(plan.moves.every((m) => m.from === 'a' && m.to === 'b')).to.equal(true);
    expect(moved.length, 'few moves: the hottest slots that fit go first').to.be.at.most(3);
    expect(plan.after['a']! + plan.after['b']!).to.equal(1170);
  });

  it('nothing to do when every shard is within the margin, or there is no traffic', () => {
    const map = mapOf(evenAssignment(['a', 'b'], 8));
    expect(loadPlan(map, ['a', 'b'], new Map([[0, 100], [5, 95]]), 0.1).moves).to.deep.equal([]);
    expect(loadPlan(map, ['a', 'b'], new Map(), 0.1).moves).to.deep.equal([]);
  });

  it('a single slot hotter than the margin allows stays put rather than bounce between shards', () => {
    const map = mapOf(evenAssignment(['a', 'b'], 8));
    const plan = loadPlan(map, ['a', 'b'], new Map([[0, 1000], [5, 10]]), 0.1);
    expect(plan.moves, 'moving slot 0 would only make b the hot one').to.deep.equal([]);
  });

  it('a shard being drained gives every slot away, each to the least loaded shard', () => {
    const map = mapOf(evenAssignment(['a', 'b', 'c'], 9)); // a 0-2, b 3-5, c 6-8
    const plan = loadPlan(map, ['a', 'b'], new Map([[6, 300], [7, 100], [8, 100], [0, 50]]), 0.5);
    const fromC = plan.moves.filter((m) => m.from === 'c').flatMap((m) => m.slots).sort();
    expect(fromC).to.deep.equal([6, 7, 8]);
    expect(plan.after['a']! + plan.after['b']!).to.equal(550);
  });
});
