import { expect } from 'chai';
import { backupsOf } from '../../cluster/shard-map.js';
import { type ShardServer } from '../../server/shard-server.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';

const D = 4_096;
const SLOTS = 16;

/** Every backup's copy of every slot it backs, bit for bit the primary's. */
function expectReplicasEqual(shards: readonly ShardServer[]): number {
  const byId = new Map(shards.filter((s) => s.state !== 'gone').map((s) => [s.shard.id, s]));
  let compared = 0;
  for (const primary of byId.values()) {
    const map = primary.shard.currentMap!;
    for (let s = 0; s < SLOTS; s++) {
      if (map.owners[s] !== primary.shard.id) continue;
      for (const b of backupsOf(map, s)) {
        const backup = byId.get(b);
        if (!backup) continue;
        const mine = primary.shard.store.get(s)!;
        const theirs = backup.shard.store.get(s);
        expect(theirs, `slot ${s} on backup ${b}`).to.not.equal(undefined);
        expect(Buffer.from(theirs!.values.buffer, theirs!.values.byteOffset, theirs!.values.byteLength).equals(Buffer.from(mine.values.buffer, mine.values.byteOffset, mine.values.byteLength)), `slot ${s}: backup ${b} equals primary ${primary.shard.id}`).to.equal(true);
        compared++;
      }
    }
  }
  return compared;
}

describe('functional: replicated shards (--replicas)', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  afterEach(async () => cluster?.close());

  it('the first map gives every slot a backup on another shard, and pushes reach it before they are acknowledged', async () => {
    cluster = await startCluster({ shards: 3, model: flatModel(D), slots: SLOTS, optimizer: { name: 'adam', learningRate: 0.01 }, replicas: 1 });
    const map = cluster.shards[0]!.shard.currentMap!;
    for (let s = 0; s < SLOTS; s++) {
      expect(backupsOf(map, s), `slot ${s}`).to.have.length(1);
      expect(backupsOf(map, s)[0]).to.not.equal(map.owners[s]);
    }
    const client = await cluster.client({ workerId: 'w0' });
    for (let i = 0; i < 20; i++) await client.push(new Float32Array(D).map((_, k) => Math.sin(k + i)));
    expect(expectReplicasEqual(cluster.shards)).to.equal(SLOTS);
  });
});
