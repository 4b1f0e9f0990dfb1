import { expect } from 'chai';
import { type ClusterConfig } from '../../../cluster/cluster-config.js';
import { type Consistency } from '../../../cluster/consistency.js';
import { InvalidArgumentError, MovedError, StaleEpochError } from '../../../cluster/errors.js';
import { type ModelSpec } from '../../../cluster/model-spec.js';
import { optimizerWithDefaults } from '../../../cluster/optimizer-config.js';
import { type ShardMap, evenAssignment } from '../../../cluster/shard-map.js';
import { idHalves, rowSlot, tableHash } from '../../../cluster/sparse-keys.js';
import { toIdHalves } from '../../../cluster/wire/sparse-values.js';
import { type DensePullAdmission, admitPull, admitSparsePull } from '../../../server/admission.js';
import { Shard } from '../../../server/shard.js';
import { SparseStore } from '../../../server/sparse-store.js';

/*
 * Pull admission (server/admission.ts) with no network: a 16-slot cluster,
 * shards a and b splitting the slots evenly at map epoch 3 (a owns 0-7). The
 * gate's waits are driven by telling it of pushes directly.
 */

const SLOTS = 16;
const EPOCH = 3;
const MODEL: ModelSpec = {
  name: 'unit-admission',
  seed: 3,
  tensors: [{ name: 'w', shape: [SLOTS, 4], init: { kind: 'constant', value: 0.5 } }],
  sparse: [{ name: 'items', dim: 4, init: { kind: 'constant', value: 0.25 } }],
};

function config(consistency: Consistency): ClusterConfig {
  return { name: 'unit', slots: SLOTS, model: MODEL, optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 0.1 }), consistency };
}

function map(epoch = EPOCH): ShardMap {
  return { epoch, slots: SLOTS, owners: evenAssignment(['b', 'a'], SLOTS), addresses: { a: '127.0.0.1:7001', b: '127.0.0.1:7002' } };
}

/** Whether `p` settles within a few event-loop turns. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return done;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  return expect.fail('expected the promise to reject');
}

/** An id of table `items` whose row lives in a slot shard a owns. */
function ownedId(): bigint {
  const t = tableHash('items');
  for (let i = 0n; ; i++) {
    const [lo, hi] = idHalves(i);
    if (rowSlot(t, lo, hi, SLOTS) < 8) return i;
  }
}

describe('server/admission', () => {
  let shards: Shard[] = [];
  const shardA = (consistency: Consistency = 'async') => {
    const shard = new Shard('a', config(consistency));
    shard.setMap(map());
    shards.push(shard);
    return shard;
  };
  afterEach(() => {
    for (const s of shards) s.gate.close();
    shards = [];
  });

  const pull = (over: Partial<DensePullAdmission> = {}): DensePullAdmission => ({ epoch: EPOCH, ranges: [{ begin: 0, end: 8 }], model: MODEL.name, workerId: 'w1', ...over });

  describe('admitPull', () => {
    it('admits an unclocked pull of owned slots and refuses others with the typed error Shard.check gives', async () => {
      const shard = shardA('ssp:0');
      await admitPull(shard, pull());
      expect(await rejection(admitPull(shard, pull({ ranges: [{ begin: 7, end: 9 }] })))).to.be.instanceOf(MovedError);
      expect(await rejection(admitPull(shard, pull({ epoch: EPOCH - 1 })))).to.be.instanceOf(StaleEpochError);
      expect(await rejection(admitPull(shard, pull({ model: 'other' })))).to.be.instanceOf(InvalidArgumentError).with.property('message').match(/unknown model "other"/);
      expect(shard.gate.clocks().size, 'an unclocked pull never joins the gate').to.equal(0);
    });

    it('refuses a bad clocked pull at once, before it joins the gate', async () => {
      const shard = shardA('ssp:0');
      expect(await rejection(admitPull(shard, pull({ clock: 0, join: true, ranges: [{ begin: 8, end: 9 }] })))).to.be.instanceOf(MovedError);
      expect(shard.gate.clocks().size).to.equal(0);
    });

    it('holds a clocked pull at the gate until the slower worker catches up (ssp:0)', async () => {
      const shard = shardA('ssp:0');
      await admitPull(shard, pull({ workerId: 'w1', clock: 0, join: true }));
      await admitPull(shard, pull({ workerId: 'w2', clock: 0, join: true }));
      shard.gate.afterPush('w1', 0);
      const ahead = admitPull(shard, pull({ workerId: 'w1', clock: 1 }));
      expect(await settled(ahead), 'w1 at 1 while w2 is at 0').to.equal(false);
      shard.gate.afterPush('w2', 0);
      expect(await settled(ahead)).to.equal(true);
      await ahead;
    });

    it('checks again after the wait: a map that moved on meanwhile refuses the pull', async () => {
      const shard = shardA('ssp:0');
      await admitPull(shard, pull({ workerId: 'w1', clock: 0, join: true }));
      await admitPull(shard, pull({ workerId: 'w2', clock: 0, join: true }));
      shard.gate.afterPush('w1', 0);
      const ahead = admitPull(shard, pull({ workerId: 'w1', clock: 1 }));
      expect(await settled(ahead)).to.equal(false);
      shard.setMap(map(EPOCH + 1));
      shard.gate.afterPush('w2', 0);
      expect(await rejection(ahead)).to.be.instanceOf(StaleEpochError);
    });
  });

  describe('admitSparsePull', () => {
    const sparse = (shard: Shard) => new SparseStore(config('ssp:0'), shard);
    const req = (over: { table?: string; epoch?: number; workerId?: string; clock?: number; join?: boolean } = {}) => ({
      epoch: EPOCH,
      model: MODEL.name,
      table: 'items',
      ids: toIdHalves([ownedId()]),
      workerId: 'w1',
      ...over,
    });

    it('refuses a bad clocked pull at once (SparseStore.checkPull), before it joins the gate', async () => {
      const shard = shardA('ssp:0');
      const store = sparse(shard);
      expect(await rejection(admitSparsePull(store, shard.gate, req({ table: 'nope', clock: 0, join: true })))).to.be.instanceOf(InvalidArgumentError).with.property('message').match(/unknown sparse table "nope"/);
      expect(shard.gate.clocks().size).to.equal(0);
    });

    it('leaves an unclocked pull to store.pull, which makes every check', async () => {
      const shard = shardA('ssp:0');
      const store = sparse(shard);
      await admitSparsePull(store, shard.gate, req({ table: 'nope' }));
      expect(() => store.pull(req({ table: 'nope' }))).to.throw(InvalidArgumentError, /unknown sparse table "nope"/);
    });

    it('waits at the gate as a dense pull does; the check after the wait is store.pull’s', async () => {
      const shard = shardA('ssp:0');
      const store = sparse(shard);
      await admitSparsePull(store, shard.gate, req({ workerId: 'w1', clock: 0, join: true }));
      await admitSparsePull(store, shard.gate, req({ workerId: 'w2', clock: 0, join: true }));
      shard.gate.afterPush('w1', 0);
      const ahead = admitSparsePull(store, shard.gate, req({ workerId: 'w1', clock: 1 }));
      expect(await settled(ahead)).to.equal(false);
      shard.setMap(map(EPOCH + 1));
      shard.gate.afterPush('w2', 0);
      await ahead;
      expect(() => store.pull(req())).to.throw(StaleEpochError);
    });
  });
});
