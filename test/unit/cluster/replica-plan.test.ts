import { expect } from 'chai';
import { firstBackups, rebuiltMap } from '../../../cluster/membership/reconcile.js';
import { failoverMap, nextBackups, withBackup } from '../../../cluster/replica-plan.js';
import { rebalancePlan } from '../../../cluster/rebalance-plan.js';
import { type ShardMap, backupsOf, validateMap } from '../../../cluster/shard-map.js';

const addresses = { a: 'h:1', b: 'h:2', c: 'h:3' };

/** Six slots: a owns 0–1 (backed by b), b owns 2–3 (backed by c), c owns 4–5 (backed by a). */
function ring(): ShardMap {
  return { epoch: 5, slots: 6, owners: ['a', 'a', 'b', 'b', 'c', 'c'], addresses: { ...addresses }, backups: [['b'], ['b'], ['c'], ['c'], ['a'], ['a']] };
}

describe('unit: replica placement and failover (cluster/replica-plan.ts)', () => {
  it('a dead primary\'s slots go to their first live backup, one epoch up; dead backups leave every list', () => {
    const change = failoverMap(ring(), new Set(['b', 'c']))!;
    expect(change.map.epoch).to.equal(6);
    expect(change.map.owners).to.deep.equal(['b', 'b', 'b', 'b', 'c', 'c']);
    expect(change.map.backups).to.deep.equal([[], [], ['c'], ['c'], [], []]);
    expect(change.promoted).to.deep.equal([{ slot: 0, from: 'a', to: 'b' }, { slot: 1, from: 'a', to: 'b' }]);
    expect(change.dropped).to.equal(2);
    expect(change.map.addresses, 'a holds nothing now').to.deep.equal({ b: 'h:2', c: 'h:3' });
    validateMap(change.map);
  });

  it('nothing changes while every holder is live, and a slot without a live backup keeps its dead owner', () => {
    expect(failoverMap(ring(), new Set(['a', 'b', 'c']))).to.equal(null);
    const change = failoverMap(ring(), new Set(['c']))!;
    expect(change.map.owners).to.deep.equal(['a', 'a', 'c', 'c', 'c', 'c']);
    expect(change.map.backups, 'no backups left: the list goes').to.equal(undefined);
  });

  it('a live backup that does not hold the slot (it restarted, not copied to again) is not given it', () => {
    const change = failoverMap(ring(), new Set(['b', 'c']), (id, s) => !(id === 'b' && s === 0))!;
    expect(change.map.owners.slice(0, 2), 'slot 0 waits for its owner or a copy; slot 1 goes to b').to.deep.equal(['a', 'b']);
  });

  it('with two backups the first live one in the list takes over, the other stays a backup', () => {
    const map: ShardMap = { epoch: 1, slots: 1, owners: ['a'], addresses: { ...addresses }, backups: [['b', 'c']] };
    expect(failoverMap(map, new Set(['b', 'c']))!.map).to.deep.include({ owners: ['b'], backups: [['c']] });
    expect(failoverMap(map, new Set(['c']))!.map).to.deep.include({ owners: ['c'] });
  });

  it('a new backup goes to a shard that holds none of the slot, in another failure domain when there is one, else the least loaded', () => {
    const map: ShardMap = { epoch: 1, slots: 4, owners: ['a', 'a', 'b', 'c'], addresses: { ...addresses, d: 'h:4' } };
    const candidates = [
      { id: 'a', address: 'h:1', topology: 'n1' },
      { id: 'b', address: 'h:2', topology: 'n1' },
      { id: 'c', address: 'h:3', topology: 'n2' },
      { id: 'd', address: 'h:4', topology: 'n1', state: 'draining' },
    ];
    const plan = nextBackups(map, 1, 'a', candidates)!;
    expect(plan.target.id, 'c: another node than a, though it holds as many slots as b').to.equal('c');
    expect(plan.slots).to.deep.equal([0, 1]);
    // Without domains, the least loaded.
    const plain = nextBackups(map, 1, 'a', candidates.map(({ id, address, state }) => ({ id, address, ...(state ? { state } : {}) })))!;
    expect(plain.target.id).to.equal('b');
    // Enough backups already: nothing to do.
    expect(nextBackups(withBackup(map, new Set([0, 1]), 'c', 'h:3'), 1, 'a', candidates)).to.equal(null);
    expect(nextBackups(map, 0, 'a', candidates)).to.equal(null);
  });

  it('withBackup lists the target once more per slot and validates', () => {
    const next = withBackup(ring(), new Set([0, 5]), 'c', 'h:3');
    expect(next.epoch).to.equal(6);
    expect(backupsOf(next, 0)).to.deep.equal(['b', 'c']);
    expect(() => validateMap(next)).to.throw(/slot 5's owner c is also listed as its backup/);
  });

  it('a map whose backups do not fit is refused with what is wrong', () => {
    const bad = (backups: unknown) => () => validateMap({ ...ring(), backups } as ShardMap);
    expect(bad([['b']])).to.throw(/backups for 1 slots, not 6/);
    expect(bad([['b'], ['b'], ['c'], ['c'], ['a'], ['zz']])).to.throw(/slot 5 has a backup without an address/);
    expect(bad([['b'], ['b', 'b'], ['c'], ['c'], ['a'], ['a']])).to.throw(/slot 1 lists a backup twice/);
    expect(bad([['b'], ['b'], 'c', ['c'], ['a'], ['a']])).to.throw(/slot 2's backups are not a list/);
  });

  it('a new cluster\'s first backups: the next shards in id order, other domains first', () => {
    expect(firstBackups(['a', 'a', 'b', 'c'], [{ id: 'a' }, { id: 'b' }, { id: 'c' }], 1)).to.deep.equal([['b'], ['b'], ['c'], ['a']]);
    expect(firstBackups(['a', 'b'], [{ id: 'a', topology: 'n1' }, { id: 'b', topology: 'n1' }, { id: 'c', topology: 'n2' }], 1)).to.deep.equal([['c'], ['c']]);
    expect(firstBackups(['a', 'b'], [{ id: 'a' }, { id: 'b' }], 3), 'no more backups than other shards').to.deep.equal([['b'], ['a']]);
  });

  it('a map rebuilt from the leases gives a dead owner\'s slots to a shard that backed them up', () => {
    const map = rebuiltMap(
      [
        { id: 'b', address: 'h:2', epoch: 5, owned: [{ begin: 2, end: 4 }], backed: [{ begin: 0, end: 2 }] },
        { id: 'c', address: 'h:3', epoch: 5, owned: [{ begin: 4, end: 6 }], backed: [{ begin: 2, end: 4 }] },
      ],
      6,
    )!;
    expect(map.epoch).to.equal(6);
    expect(map.owners).to.deep.equal(['b', 'b', 'b', 'b', 'c', 'c']);
    expect(map.backups).to.deep.equal([[], [], ['c'], ['c'], [], []]);
    validateMap(map);
  });

  it('a rebalance gives a shard slots it does not back up first', () => {
    const map: ShardMap = { epoch: 1, slots: 4, owners: ['a', 'a', 'a', 'a'], addresses: { a: 'h:1', b: 'h:2' }, backups: [['b'], ['b'], [], []] };
    expect(rebalancePlan(map, ['a', 'b'])).to.deep.equal([{ from: 'a', to: 'b', slots: [2, 3] }]);
  });

  it('given failure domains, a rebalance gives a shard slots whose backups are in other domains first', () => {
    const map: ShardMap = { epoch: 1, slots: 4, owners: ['a', 'a', 'a', 'a'], addresses: { a: 'h:1', b: 'h:2', c: 'h:3', d: 'h:4' }, backups: [['c'], ['c'], ['d'], ['d']] };
    const plan = rebalancePlan(map, ['a', 'b'], 64, new Map([['a', 'n1'], ['b', 'n2'], ['c', 'n2'], ['d', 'n3']]));
    expect(plan, 'b (node n2) takes slots backed up on n3, not those backed up on c, also on n2').to.deep.equal([{ from: 'a', to: 'b', slots: [2, 3] }]);
  });
});
