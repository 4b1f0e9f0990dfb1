import { expect } from 'chai';
import { rebalancePlan } from '../../../cluster/rebalance-plan.js';
import { type ShardMap, evenAssignment, slotCounts } from '../../../cluster/shard-map.js';

function mapOf(owners: string[]): ShardMap {
  return { epoch: 1, slots: owners.length, owners, addresses: Object.fromEntries([...new Set(owners)].map((id) => [id, `${id}:1`])) };
}

/** The map after the moves, and how many slots moved. */
function apply(map: ShardMap, moves: ReturnType<typeof rebalancePlan>): { after: ShardMap; moved: number } {
  const owners = [...map.owners];
  let moved = 0;
  for (const m of moves) {
    for (const s of m.slots) {
      expect(owners[s], `slot ${s} moves from its owner`).to.equal(m.from);
      owners[s] = m.to;
      moved++;
    }
  }
  return { after: { ...map, owners }, moved };
}

const counts = (map: ShardMap) => Object.fromEntries([...slotCounts(map)].filter(([, n]) => n > 0));

describe('cluster/rebalance-plan', () => {
  it('a new shard takes its share, and only that moves', () => {
    const map = mapOf(evenAssignment(['a', 'b'], 64));
    const moves = rebalancePlan(map, ['a', 'b', 'c'], 8);
    const { after, moved } = apply(map, moves);
    expect(counts(after)).to.deep.equal({ a: 22, b: 21, c: 21 });
    expect(moved, 'the fewest slots that can even it out').to.equal(21);
    expect(moves.every((m) => m.to === 'c' && m.slots.length <= 8)).to.equal(true);
  });

  it('a drained shard gives everything away; an even map plans nothing', () => {
    const map = mapOf(evenAssignment(['a', 'b', 'c'], 30));
    const { after, moved } = apply(map, rebalancePlan(map, ['a', 'b']));
    expect(counts(after)).to.deep.equal({ a: 15, b: 15 });
    expect(moved).to.equal(10);
    expect(rebalancePlan(after, ['a', 'b'])).to.deep.equal([]);
    expect(rebalancePlan(map, [])).to.deep.equal([]);
  });

  it('keeps runs of slots together in a move', () => {
    const map = mapOf(evenAssignment(['a'], 16));
    const moves = rebalancePlan(map, ['a', 'b']);
    expect(moves).to.deep.equal([{ from: 'a', to: 'b', slots: [8, 9, 10, 11, 12, 13, 14, 15] }]);
  });
});
