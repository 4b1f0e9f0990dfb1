import { expect } from 'chai';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { startGrpcServer, type TesseraGrpcServer } from '../../cluster/grpc-server.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { membershipImplementation } from '../../cluster/membership/membership-service.js';
import { RemoteMembershipStore } from '../../cluster/membership/remote-store.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService } from '../../cluster/proto.js';
import { type ShardMap, evenAssignment } from '../../cluster/shard-map.js';
import { MEMBERSHIP_RULES } from '../../cluster/tls/authorization.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { ShardServer } from '../../server/shard-server.js';
import { flatModel } from '../helpers/cluster.js';

/*
 * A shard map the cluster cannot use must not take its processes down. As
 * `tessera local` runs it: the embedded store served over gRPC, shards and a
 * client reading it through RemoteMembershipStore. A map of another slot count
 * written to the store (here past its own checks, as a store that did not
 * check would hold it) reaches every watcher: each logs it and serves on with
 * the map it has; the store itself refuses such a map from a writer.
 */
describe('functional: a shard map that does not fit the cluster', function () {
  this.timeout(30_000);
  const SLOTS = 16;
  let store: MemoryMembershipStore;
  let membership: TesseraGrpcServer;
  const remotes: RemoteMembershipStore[] = [];
  const shards: ShardServer[] = [];

  before(async () => {
    store = new MemoryMembershipStore();
    await store.createCluster({ name: 'bad-map', slots: SLOTS, model: flatModel(1024), optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 1 }), consistency: 'async', initialShards: 2 });
    membership = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(store), rules: MEMBERSHIP_RULES }]);
    for (const id of ['shard-0', 'shard-1']) {
      const remote = new RemoteMembershipStore(`127.0.0.1:${membership.port}`);
      remotes.push(remote);
      shards.push(await ShardServer.start({ id, listen: '127.0.0.1:0', store: remote }));
    }
    for (const s of shards) await s.refresh();
  });
  after(async () => {
    for (const s of shards) await s.close(50);
    for (const r of remotes) await r.close();
    await membership.close(50);
    await store.close();
  });

  it('the store refuses a map of another slot count from a writer', async () => {
    const map = (await store.getMap())!;
    const bad: ShardMap = { ...map, epoch: map.epoch + 1, slots: 8, owners: evenAssignment(['shard-0', 'shard-1'], 8) };
    const err = await store.casMap(map.epoch, bad).then(
      () => null,
      (e: Error) => e,
    );
    expect(err).to.be.instanceOf(InvalidArgumentError);
    expect(err?.message).to.match(/8 slots but the cluster has 16/);
  });

  it('shards and clients that are sent one anyway log it and serve on with the map they hold', async () => {
    const remote = new RemoteMembershipStore(`127.0.0.1:${membership.port}`);
    remotes.push(remote);
    const client = await TesseraClient.connect({ store: remote, workerId: 'w-bad-map' });
    try {
      const before = await client.pull();
      const map = (await store.getMap())!;
      const bad: ShardMap = { ...map, epoch: map.epoch + 1, slots: 8, owners: evenAssignment(['shard-0', 'shard-1'], 8) };
      // Past the store's checks: what a store that did not check would hand to every watcher.
      const internals = store as unknown as { map: ShardMap; listeners: Set<(m: ShardMap) => void> };
      internals.map = bad;
      for (const l of internals.listeners) l(structuredClone(bad));
      // Time for the watch streams to carry it to the shards and the client.
      await new Promise((r) => setTimeout(r, 300));
      for (const s of shards) expect(s.shard.epoch, `${s.shard.id} kept its map`).to.equal(map.epoch);
      expect(client.epoch).to.equal(map.epoch);
      // The data plane goes on: a push and a pull under the map held.
      internals.map = map;
      expect(await client.push(new Float32Array(1024).fill(1))).to.include({ appliedSlots: SLOTS });
      const after = await client.pull();
      for (let i = 0; i < 1024; i += 31) expect(after[i]).to.equal(Math.fround(before[i]! - 1));
    } finally {
      await client.close();
    }
  });
});
