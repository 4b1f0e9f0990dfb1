import { expect } from 'chai';
import { dial, unary } from '../../cluster/grpc-client.js';
import { shardAdminService } from '../../cluster/proto.js';
import { backupsOf } from '../../cluster/shard-map.js';
import { ChaosCluster } from '../helpers/chaos.js';

/** The first element that differs from `want`, or -1. */
function firstOff(values: Float32Array, want: number): number {
  return values.findIndex((v) => v !== want);
}

/**
 * The counting workload against replicated shards (`--replicas 1`), each a
 * `tessera shard` process, Redis real: whatever is killed with SIGKILL,
 * every element ends equal to the pushes acknowledged — nothing acknowledged
 * lost, nothing applied twice — and writes resume without an operator.
 * `npm run test:chaos` runs longer rounds of the same.
 */
describe('functional: replicated shards under kill -9 (counting workload)', function () {
  this.timeout(240_000);
  let c: ChaosCluster | undefined;
  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && c) process.stderr.write(c.logs().slice(-20_000));
    await c?.close();
    c = undefined;
  });

  it('a primary killed during continuous pushes, three times, each a different shard', async () => {
    c = await ChaosCluster.start({ shards: 3, replicas: 1, elements: 1 << 16, slots: 32 });
    await c.whole();
    const writers = [await c.writer('w0'), await c.writer('w1')];
    await writers[0]!.advance(20);
    for (const victim of ['shard-0', 'shard-1', 'shard-2']) {
      const before = await c.map();
      c.kill(victim);
      // Writes resume by themselves: the victim's slots go to their backups.
      for (const w of writers) await w.advance(20);
      const after = await c.map();
      expect(after.owners.includes(victim), `${victim}'s slots have a new primary`).to.equal(false);
      expect(after.epoch).to.be.greaterThan(before.epoch);
      // It comes back and is made a backup again, caught up from a snapshot.
      c.startShard(victim);
      await c.whole();
      for (const w of writers) await w.advance(10);
    }
    const { values, acknowledged } = await c.settle();
    expect(acknowledged).to.be.greaterThan(100);
    const off = firstOff(values, acknowledged);
    expect(off, off < 0 ? '' : `element ${off} is ${values[off]}, ${acknowledged} pushes were acknowledged`).to.equal(-1);
    expect(c.logs()).to.match(/takes over slots/);
  });

  it('a shard killed in the middle of a slot move: the source, then the target', async () => {
    c = await ChaosCluster.start({ shards: 3, replicas: 1, elements: 1 << 20, slots: 32 });
    await c.whole();
    const writers = [await c.writer('w0'), await c.writer('w1')];
    await writers[0]!.advance(10);
    for (const victim of ['source', 'target'] as const) {
      const map = await c.whole();
      // Slots of one shard that a third shard (neither their owner nor their backup) is to receive.
      const source = map.owners[0]!;
      const target = Object.keys(map.addresses).find((id) => id !== source && !backupsOf(map, 0).includes(id))!;
      const slots = map.owners.flatMap((o, s) => (o === source && !backupsOf(map, s).includes(target) ? [s] : []));
      const admin = dial(shardAdminService(), map.addresses[source]!);
      const move = unary(admin, 'moveSlots', { slots, targetId: target, targetAddress: map.addresses[target] }, 60_000).then(
        () => 'moved',
        (err: Error) => err.message,
      );
      await new Promise((r) => setTimeout(r, 5 + Math.floor(Math.random() * 40)));
      const killed = victim === 'source' ? source : target;
      c.kill(killed);
      await move;
      admin.close();
      for (const w of writers) await w.advance(20);
      c.startShard(killed);
      await c.whole();
      for (const w of writers) await w.advance(10);
    }
    const { values, acknowledged } = await c.settle();
    const off = firstOff(values, acknowledged);
    expect(off, off < 0 ? '' : `element ${off} is ${values[off]}, ${acknowledged} pushes were acknowledged`).to.equal(-1);
  });

  it('Redis and one shard killed together, Redis back empty: the map is rebuilt from the leases, the dead primary\'s backups promoted', async () => {
    c = await ChaosCluster.start({ shards: 3, replicas: 1, elements: 1 << 16, slots: 32 });
    const before = await c.whole();
    const writers = [await c.writer('w0'), await c.writer('w1')];
    await writers[0]!.advance(20);
    c.kill('shard-1');
    await c.redis.kill();
    await new Promise((r) => setTimeout(r, 300));
    await c.redis.restart();
    for (const w of writers) await w.advance(20);
    const rebuilt = await c.map();
    expect(rebuilt.epoch).to.be.greaterThan(before.epoch);
    expect(rebuilt.owners.includes('shard-1')).to.equal(false);
    c.startShard('shard-1');
    await c.whole();
    for (const w of writers) await w.advance(10);
    const { values, acknowledged } = await c.settle();
    const off = firstOff(values, acknowledged);
    expect(off, off < 0 ? '' : `element ${off} is ${values[off]}, ${acknowledged} pushes were acknowledged`).to.equal(-1);
  });
});
