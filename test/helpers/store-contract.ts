import { expect } from 'chai';
import { type ClusterConfig } from '../../cluster/cluster-config.js';
import { ClusterExistsError, InvalidArgumentError, MapConflictError } from '../../cluster/errors.js';
import { type MembershipStore } from '../../cluster/membership/store.js';
import { type ShardMap, evenAssignment, validateMap } from '../../cluster/shard-map.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';

/** One store under test, on a cluster no other test touches. */
export interface StoreHandle {
  store: MembershipStore;
  /** The cluster name the store holds (a configuration must carry it). */
  cluster: string;
  /** Another store on the same cluster: a second instance (its own connections) where the backend allows, else the same one. */
  peer(): MembershipStore;
  /** Closes the store and every peer. */
  close(): Promise<void>;
}

export function testConfig(name: string, slots = 8): ClusterConfig {
  return {
    name,
    slots,
    model: { name: 'm', seed: 7, tensors: [{ name: 'w', shape: [64], init: { kind: 'uniform', low: -1, high: 1 } }] },
    optimizer: optimizerWithDefaults({ name: 'sgd' }),
    consistency: 'async',
  };
}

/** A valid map at `epoch`: `slots` slots spread over `shards`. */
export function testMap(epoch: number, shards: readonly string[] = ['a', 'b'], slots = 8): ShardMap {
  return { epoch, slots, owners: evenAssignment(shards, slots), addresses: Object.fromEntries(shards.map((s, i) => [s, `127.0.0.1:${7000 + i}`])) };
}

/** Records every map a watcher is given; `until(epoch)` waits for one. */
export function recordMaps(store: MembershipStore): { maps: ShardMap[]; stop: () => void; until(epoch: number, timeoutMs?: number): Promise<ShardMap> } {
  const maps: ShardMap[] = [];
  const waiters = new Set<() => void>();
  const stop = store.watchMap((m) => {
    maps.push(m);
    for (const w of [...waiters]) w();
  });
  return {
    maps,
    stop,
    until(epoch, timeoutMs = 2_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = maps.find((m) => m.epoch === epoch);
          if (!hit) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(hit);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no map with epoch ${epoch} within ${timeoutMs} ms (got epochs ${maps.map((m) => m.epoch).join(', ') || 'none'})`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the call to reject, but it resolved');
}

/**
 * The behaviour every MembershipStore shares (store.ts): run it against the
 * embedded store and the Redis store alike.
 */
export function describeStoreContract(name: string, open: () => Promise<StoreHandle>): void {
  describe(`membership store contract: ${name}`, function () {
    this.timeout(10_000);
    let h: StoreHandle;
    beforeEach(async () => {
      h = await open();
    });
    afterEach(async () => h.close());

    describe('configuration', () => {
      it('is null before the cluster is created, then reads back as written', async () => {
        expect(await h.store.getConfig()).to.equal(null);
        await h.store.createCluster(testConfig(h.cluster));
        expect(await h.store.getConfig()).to.deep.equal(testConfig(h.cluster));
      });

      it('a second create fails with ClusterExistsError naming --force, and changes nothing', async () => {
        await h.store.createCluster(testConfig(h.cluster, 8));
        const err = await rejection(h.store.createCluster(testConfig(h.cluster, 16)));
        expect(err).to.be.instanceOf(ClusterExistsError);
        expect(err.message).to.match(/--force/);
        expect((await h.store.getConfig())!.slots).to.equal(8);
      });

      it('force overwrites the configuration and drops the map', async () => {
        await h.store.createCluster(testConfig(h.cluster, 8));
        await h.store.casMap(0, testMap(1));
        await h.store.createCluster(testConfig(h.cluster, 16), true);
        expect((await h.store.getConfig())!.slots).to.equal(16);
        expect(await h.store.getMap()).to.equal(null);
        await h.store.casMap(0, testMap(1, ['c'], 16));
        expect((await h.store.getMap())!.owners[0]).to.equal('c');
      });

      it('an invalid configuration is refused and nothing is written', async () => {
        const bad = { ...testConfig(h.cluster), slots: 0 };
        expect(await rejection(h.store.createCluster(bad))).to.be.instanceOf(InvalidArgumentError);
        expect(await h.store.getConfig()).to.equal(null);
      });
    });

    describe('shard map', () => {
      it('is null at first; casMap from epoch 0 writes it', async () => {
        expect(await h.store.getMap()).to.equal(null);
        await h.store.casMap(0, testMap(1));
        expect(await h.store.getMap()).to.deep.equal(testMap(1));
      });

      it('a stale expected epoch fails with MapConflictError and leaves the map unchanged', async () => {
        await h.store.casMap(0, testMap(1, ['a']));
        await h.store.casMap(1, testMap(2, ['a', 'b']));
        const err = await rejection(h.store.casMap(1, testMap(2, ['x'])));
        expect(err).to.be.instanceOf(MapConflictError);
        expect((err as MapConflictError).expectedEpoch).to.equal(1);
        expect((err as MapConflictError).actualEpoch).to.equal(2);
        expect(await h.store.getMap()).to.deep.equal(testMap(2, ['a', 'b']));
      });

      it('a next map whose epoch is not above the expected one, or that leaves a slot without an owner, is refused', async () => {
        await h.store.casMap(0, testMap(1));
        expect(await rejection(h.store.casMap(1, testMap(1, ['x'])))).to.be.instanceOf(InvalidArgumentError);
        const orphan = { ...testMap(2), addresses: { a: '127.0.0.1:7000' } };
        expect(await rejection(h.store.casMap(1, orphan))).to.be.instanceOf(InvalidArgumentError);
        expect(await h.store.getMap()).to.deep.equal(testMap(1));
      });

      it('a map rebuilt after a loss may jump epochs (from 0 straight to a higher one), and watchers get it', async () => {
        await h.store.casMap(0, testMap(7));
        expect(await h.store.getMap()).to.deep.equal(testMap(7));
        const rec = recordMaps(h.store);
        await rec.until(7);
        await h.store.casMap(7, testMap(9, ['c']));
        expect(await rec.until(9)).to.deep.equal(testMap(9, ['c']));
        expect(rec.maps.map((m) => m.epoch)).to.deep.equal([7, 9]);
        rec.stop();
      });

      it('of concurrent writers with the same expected epoch exactly one wins, every round', async () => {
        const stores = [h.store, h.peer(), h.peer(), h.peer()];
        await h.store.casMap(0, testMap(1));
        for (let epoch = 1; epoch <= 5; epoch++) {
          const candidates = stores.map((_, i) => testMap(epoch + 1, [`w${i}-${epoch}`, 'z']));
          const results = await Promise.allSettled(stores.map((s, i) => s.casMap(epoch, candidates[i]!)));
          const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
          expect(won, `round ${epoch}`).to.have.length(1);
          for (const r of results) if (r.status === 'rejected') expect(r.reason).to.be.instanceOf(MapConflictError);
          const map = (await h.store.getMap())!;
          validateMap(map);
          expect(map).to.deep.equal(candidates[won[0]!]);
        }
      });
    });

    describe('leases', () => {
      it('a registered member is listed with its info, under its kind only, until deregistered', async () => {
        await h.store.register('shard', { id: 's1', address: '127.0.0.1:7000', state: 'serving', bytes: 12 }, 10_000);
        await h.store.register('shard', { id: 's0', address: '127.0.0.1:7001' }, 10_000);
        await h.store.register('worker', { id: 'w0', step: 3, backend: 'cpu' }, 10_000);
        expect(await h.store.members('shard')).to.deep.equal([
          { id: 's0', address: '127.0.0.1:7001' },
          { id: 's1', address: '127.0.0.1:7000', state: 'serving', bytes: 12 },
        ]);
        expect(await h.peer().members('worker')).to.deep.equal([{ id: 'w0', step: 3, backend: 'cpu' }]);
        await h.store.deregister('shard', 's1');
        expect((await h.store.members('shard')).map((m) => m.id)).to.deep.equal(['s0']);
        await h.store.deregister('shard', 'never-registered');
      });

      it('a renewal replaces the info', async () => {
        await h.store.register('worker', { id: 'w0', step: 1 }, 10_000);
        await h.store.register('worker', { id: 'w0', step: 2 }, 10_000);
        expect(await h.store.members('worker')).to.deep.equal([{ id: 'w0', step: 2 }]);
      });

      it('a lease not renewed within its TTL is gone; one renewed in time stays; a re-registration is listed again', async () => {
        await h.store.register('shard', { id: 'short' }, 300);
        await h.store.register('shard', { id: 'renewed' }, 300);
        expect((await h.store.members('shard')).map((m) => m.id)).to.deep.equal(['renewed', 'short']);
        await sleep(200);
        await h.store.register('shard', { id: 'renewed' }, 300);
        await sleep(200);
        expect((await h.store.members('shard')).map((m) => m.id)).to.deep.equal(['renewed']);
        await h.store.register('shard', { id: 'short' }, 300);
        expect((await h.store.members('shard')).map((m) => m.id)).to.deep.equal(['renewed', 'short']);
      });

      it('a member without an id is refused', async () => {
        expect(await rejection(h.store.register('shard', { id: '' }, 1_000))).to.be.instanceOf(InvalidArgumentError);
      });
    });

    describe('map watch', () => {
      it('delivers the current map soon after watching, then each new one in order, until stopped', async () => {
        await h.store.casMap(0, testMap(1));
        const rec = recordMaps(h.store);
        expect(await rec.until(1)).to.deep.equal(testMap(1));
        await h.store.casMap(1, testMap(2, ['b']));
        await h.store.casMap(2, testMap(3, ['c']));
        expect(await rec.until(3)).to.deep.equal(testMap(3, ['c']));
        expect(rec.maps.map((m) => m.epoch)).to.deep.equal([1, 2, 3]);
        rec.stop();
        await h.store.casMap(3, testMap(4));
        await sleep(150);
        expect(rec.maps.map((m) => m.epoch)).to.deep.equal([1, 2, 3]);
      });

      it('a watch started before any map gets the first one', async () => {
        const rec = recordMaps(h.store);
        await sleep(100);
        expect(rec.maps).to.deep.equal([]);
        await h.peer().casMap(0, testMap(1));
        expect(await rec.until(1)).to.deep.equal(testMap(1));
        rec.stop();
      });

      it('watchers on two stores both get every map, whichever store writes it', async () => {
        await h.store.casMap(0, testMap(1));
        const other = h.peer();
        const a = recordMaps(h.store);
        const b = recordMaps(other);
        await Promise.all([a.until(1), b.until(1)]);
        await other.casMap(1, testMap(2, ['b']));
        await h.store.casMap(2, testMap(3, ['c']));
        for (const rec of [a, b]) {
          expect(await rec.until(3)).to.deep.equal(testMap(3, ['c']));
          expect(rec.maps.map((m) => m.epoch)).to.deep.equal([1, 2, 3]);
          rec.stop();
        }
      });
    });

    describe('work queue', () => {
      const plan = { epochs: 2, blocksPerEpoch: 3 };
      const claim = async (store: MembershipStore, worker: string) => {
        const c = await store.claimWork(worker, plan, 0);
        if (c.kind !== 'item') throw new Error(`${worker}'s claim was ${c.kind}`);
        return c.item;
      };

      it('hands out every item once, in order, to workers holding one at a time; then wait while items are held, finished once all are done', async () => {
        await h.store.register('worker', { id: 'a' }, 60_000);
        await h.store.register('worker', { id: 'b' }, 60_000);
        expect(await h.store.workProgress()).to.equal(null);
        const other = h.peer();
        const got = [await claim(h.store, 'a'), await claim(other, 'b')];
        for (let i = 2; i < 6; i++) {
          const [worker, store] = i % 2 === 0 ? ['a', h.store] as const : ['b', other] as const;
          expect(await store.completeWork(worker, got[i - 2]!)).to.equal(true);
          got.push(await claim(store, worker));
        }
        expect(got).to.deep.equal([0, 1, 2, 3, 4, 5]);
        expect(await h.store.completeWork('a', 4)).to.equal(true);
        expect(await h.store.completeWork('a', 4), 'twice').to.equal(false);
        expect(await h.store.completeWork('a', 5), "another's item").to.equal(false);
        expect(await h.store.claimWork('a', plan, 0)).to.deep.equal({ kind: 'wait' });
        const progress = (await h.store.workProgress())!;
        expect(progress).to.deep.equal({ plan, handedOut: 6, held: { b: [5] } });
        expect(await other.completeWork('b', 5)).to.equal(true);
        expect(await h.store.claimWork('a', plan, 0)).to.deep.equal({ kind: 'finished' });
      });

      it("a dead worker's item goes to the next claimer, lowest first; a restarted worker gets its own back; a late completion does not count", async () => {
        await h.store.register('worker', { id: 'a' }, 60_000);
        await h.store.register('worker', { id: 'dead1' }, 150);
        await h.store.register('worker', { id: 'dead2' }, 150);
        expect(await claim(h.store, 'dead1')).to.equal(0);
        expect(await claim(h.store, 'dead2')).to.equal(1);
        await new Promise((r) => setTimeout(r, 300));
        // Within the grace a holder without a lease (a store that lost its data) keeps its block.
        expect(await h.store.claimWork('a', plan, 0, 60_000)).to.deep.equal({ kind: 'item', item: 2, handedOut: 3 });
        expect(await h.store.completeWork('a', 2)).to.equal(true);
        expect(await h.store.claimWork('a', plan, 0, 250)).to.deep.equal({ kind: 'item', item: 0, handedOut: 3 });
        expect(await claim(h.store, 'a'), 'a restarted: its own item again').to.equal(0);
        expect(await h.store.completeWork('dead1', 0)).to.equal(false);
        expect(await h.store.completeWork('a', 0)).to.equal(true);
        expect(await h.store.claimWork('a', plan, 0, 250)).to.deep.equal({ kind: 'item', item: 1, handedOut: 3 });
      });

      it('a claim with another plan is refused naming both; a floor moves the queue forward', async () => {
        await h.store.register('worker', { id: 'a' }, 60_000);
        await h.store.claimWork('a', plan, 0);
        const err = await h.store.claimWork('a', { epochs: 3, blocksPerEpoch: 3 }, 0).catch((e: unknown) => e);
        expect(err).to.be.instanceOf(InvalidArgumentError);
        expect((err as Error).message).to.match(/2 epochs of 3 blocks.*asks for 3 of 3/);
        await h.store.completeWork('a', 0);
        expect(await h.store.claimWork('a', plan, 4)).to.deep.equal({ kind: 'item', item: 4, handedOut: 5 });
      });

      it('force re-creating the cluster empties the queue', async () => {
        await h.store.register('worker', { id: 'a' }, 60_000);
        await h.store.claimWork('a', plan, 0);
        await h.store.createCluster(testConfig(h.cluster), true);
        expect(await h.store.workProgress()).to.equal(null);
      });
    });
  });
}
