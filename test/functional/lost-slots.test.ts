import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { SlotLostError } from '../../cluster/errors.js';
import { dial, unary } from '../../cluster/grpc-client.js';
import { shardAdminService } from '../../cluster/proto.js';
import { checkpointPath } from '../../server/checkpoint.js';
import { ShardServer } from '../../server/shard-server.js';
import { rejection } from '../helpers/expect-errors.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';

const D = 8_192;
const SLOTS = 16;

/**
 * A shard never serves a slot whose values it cannot account for. A shard
 * that comes back without the values of slots the map gives it — started
 * without a checkpoint, or from one older than a move that gave it slots —
 * refuses those slots with `slot-lost` naming the way out, shows them in its
 * lease (`tessera status`), and serves them again only once restored or reset
 * on purpose (`ShardAdmin.ResetSlots`, `tessera reset-slots`). Before, it
 * served them from their initial values while nothing looked wrong.
 */
describe('functional: slots a shard cannot account for', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  const extra: ShardServer[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'tessera-lost-'));
  after(async () => {
    for (const s of extra) await s.close(100);
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('slots moved to a shard after its checkpoint, then the shard restored from it: refused, listed, reset on request', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(D), slots: SLOTS, optimizer: { name: 'sgd', learningRate: 1 }, checkpointDir: dir });
    const client = await cluster.client({ workerId: 'w0', retryForMs: 1_000 });
    const start = await client.pull();
    await client.push(new Float32Array(D).fill(1));
    const [s0, s1] = cluster.shards as [ShardServer, ShardServer];
    await s1.checkpoint('before-move');
    // shard-0 hands two of its slots to shard-1, which then dies without a newer checkpoint.
    const given = s0.shard.owned()[0]!.begin;
    await s0.moveSlots([given, given + 1], s1.shard.id, s1.address);
    await client.push(new Float32Array(D).fill(1));
    const place = { id: s1.shard.id, listen: s1.address, bulkPort: Number(s1.bulkAddress.split(':').pop()) };
    await s1.close(0);
    const back = await ShardServer.start({ ...place, store: cluster.store, restore: checkpointPath(dir, s1.shard.id, 'before-move') });
    extra.push(back);
    expect([...back.shard.lost].sort((a, b) => a - b), 'the two slots it received after its checkpoint').to.deep.equal([given, given + 1]);

    const err = await rejection(client.pull());
    expect(err).to.be.instanceOf(SlotLostError);
    expect(err.message).to.match(new RegExp(`slot ${given} is shard shard-1's by the map .* holds no values for it: .*Restart the shard from a checkpoint that holds it \\(--resume, or --restore FILE\\), or accept the loss: \`tessera reset-slots --shard shard-1\``));
    expect(await rejection(client.push(new Float32Array(D).fill(1)))).to.be.instanceOf(SlotLostError);
    const lease = (await cluster.store.members('shard')).find((m) => m.id === 'shard-1');
    expect(lease?.lost, 'its lease lists them, for tessera status').to.deep.equal([{ begin: given, end: given + 2 }]);
    // A move of a lost slot is refused too (there is nothing to hand over).
    expect((await rejection(back.moveSlots([given], s0.shard.id, s0.address))).message).to.match(/is lost on shard shard-1/);

    // The operator declares them lost: they start again from their initial values; every other value is as trained.
    const admin = dial(shardAdminService(), back.address);
    const reply = await unary<object, { slots: number[] }>(admin, 'resetSlots', { slots: [] });
    admin.close();
    expect(reply.slots).to.deep.equal([given, given + 1]);
    expect(back.shard.lost.size).to.equal(0);
    const values = await client.pull();
    const slotLength = D / SLOTS;
    for (let i = 0; i < D; i++) {
      const slot = Math.floor(i / slotLength);
      const restoredOld = slot !== given && slot !== given + 1 && s0.shard.ownerOf(slot) !== 'shard-0';
      // shard-1's own slots come back as its checkpoint had them (one push); shard-0's took all three (the
      // push refused for the lost slots was applied on the other shard, as a push is, shard by shard); the reset ones start over.
      let want = start[i]!;
      if (restoredOld) want = Math.fround(want - 1);
      else if (slot !== given && slot !== given + 1) for (let k = 0; k < 3; k++) want = Math.fround(want - 1);
      expect(values[i], `element ${i} (slot ${slot})`).to.equal(want);
    }
    await waitLeaseClear();

    async function waitLeaseClear(): Promise<void> {
      for (let k = 0; k < 50; k++) {
        const m = (await cluster.store.members('shard')).find((x) => x.id === 'shard-1');
        if (m && (m.lost ?? []).length === 0) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('the lease still lists lost slots');
    }
  });
});
