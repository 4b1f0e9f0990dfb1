import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { dial, unary } from '../../cluster/grpc-client.js';
import { shardAdminService } from '../../cluster/proto.js';
import { backupsOf } from '../../cluster/shard-map.js';
import { type ClusterStatus } from '../../cli/cluster-status.js';
import { ChaosCluster } from '../helpers/chaos.js';
import { run } from '../helpers/cli.js';

/** Stops the writers and checks that every element equals the pushes they had acknowledged; returns how many. */
async function expectEveryPushOnce(c: ChaosCluster): Promise<number> {
  const { values, acknowledged } = await c.settle();
  const off = values.findIndex((v) => v !== acknowledged);
  expect(off, off < 0 ? '' : `element ${off} is ${values[off]}, ${acknowledged} pushes were acknowledged`).to.equal(-1);
  return acknowledged;
}

/** Kill-and-restart rounds of the first case: 3 in the suite, more under `npm run test:chaos`. */
const ROUNDS = Number(process.env['TESSERA_CHAOS_ROUNDS'] ?? 3);

/**
 * The counting workload, each shard a `tessera shard` process, Redis real.
 * With replicas (`--replicas 1`): whatever is killed with SIGKILL, every
 * element ends equal to the pushes acknowledged — nothing acknowledged lost,
 * nothing applied twice — and writes resume without an operator. Without:
 * what a kill loses is exactly the pushes since the shard's checkpoint, and
 * it is reported. `npm run test:chaos` runs longer rounds of the same.
 */
describe('functional: the counting workload under kill -9', function () {
  this.timeout(240_000);
  let c: ChaosCluster | undefined;
  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && c) process.stderr.write(c.logs().slice(-20_000));
    await c?.close();
    c = undefined;
  });

  it(`--replicas 1: a primary killed during continuous pushes, ${ROUNDS} times in a row, each time another shard`, async function () {
    this.timeout(60_000 + ROUNDS * 30_000);
    c = await ChaosCluster.start({ shards: 3, replicas: 1, elements: 1 << 16, slots: 32 });
    await c.whole();
    const writers = [await c.writer('w0'), await c.writer('w1')];
    await writers[0]!.advance(20);
    let last = '';
    for (let round = 0; round < ROUNDS; round++) {
      // A primary, not the shard killed last: the one that serves the most slots now.
      const before = await c.map();
      const counts = new Map<string, number>();
      for (const o of before.owners) if (o !== last) counts.set(o, (counts.get(o) ?? 0) + 1);
      const victim = [...counts].sort((a, b) => b[1] - a[1])[0]![0];
      last = victim;
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
    // What an operator sees of it: every slot with a live backup, each backup's lag, nothing under-replicated.
    const status = JSON.parse((await run(['status', '--redis', c.redis.url, '--cluster', c.config.name, '--json'])).stdout) as ClusterStatus;
    expect(status.replicas).to.equal(1);
    expect(status.under_replicated_slots).to.equal(0);
    expect(status.replica_sets.reduce((n, r) => n + r.slots.end - r.slots.begin, 0)).to.equal(32);
    expect(status.replica_sets.every((r) => r.backups.length === 1 && r.backups[0]!.alive && r.backups[0]!.id !== r.primary)).to.equal(true);
    expect(status.shards.reduce((n, x) => n + x.backed_slots, 0)).to.equal(32);
    expect(await expectEveryPushOnce(c)).to.be.greaterThan(50 * ROUNDS);
    expect(c.logs()).to.match(/takes over slots/);
  });

  it('--replicas 1: a shard killed in the middle of a slot move: the source, then the target', async () => {
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
    await expectEveryPushOnce(c);
  });

  it('--replicas 1: a primary paused past its lease (SIGSTOP), its slots taken over, then resumed: it acknowledges nothing of theirs afterwards', async () => {
    c = await ChaosCluster.start({ shards: 3, replicas: 1, elements: 1 << 16, slots: 32 });
    const before = await c.whole();
    const writers = [await c.writer('w0'), await c.writer('w1')];
    await writers[0]!.advance(20);
    const victim = before.owners[0]!;
    c.pause(victim);
    for (const w of writers) await w.advance(20);
    const during = await c.map();
    expect(during.owners.includes(victim), `${victim}'s slots were taken over while it was frozen`).to.equal(false);
    // It wakes up with pushes in its sockets and the old map: whatever it applies it cannot get acknowledged.
    c.resume(victim);
    for (const w of writers) await w.advance(30);
    await c.whole();
    for (const w of writers) await w.advance(10);
    await expectEveryPushOnce(c);
  });

  it('--replicas 1: Redis and one shard killed together, Redis back empty: the map is rebuilt from the leases, the dead primary\'s backups promoted', async () => {
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
    await expectEveryPushOnce(c);
  });

  it('no replicas: a kill loses exactly the pushes since the checkpoint, and says so (log, lease, epoch, the writers)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-chaos-'));
    try {
      c = await ChaosCluster.start({ shards: 2, replicas: 0, elements: 1 << 16, slots: 32, checkpointDir: dir });
      const writer = await c.writer('w0');
      await writer.advance(30);
      await writer.stop();
      const before = writer.acknowledged;
      const map = await c.map();
      const admin = dial(shardAdminService(), map.addresses['shard-1']!);
      await unary(admin, 'checkpoint', { name: '' });
      admin.close();
      // Pushes the checkpoint does not hold, then the crash.
      const lost = await c.writer('w1');
      await lost.advance(25);
      await lost.stop();
      c.kill('shard-1');
      c.startShard('shard-1', ['--resume']);
      const after = await c.writer('w2');
      await after.advance(10);
      const { values, acknowledged } = await c.settle();
      const theirs = new Set(map.owners.flatMap((o, s) => (o === 'shard-1' ? [s] : [])));
      const per = values.length / 32;
      for (let i = 0; i < values.length; i++) {
        const want = theirs.has(Math.floor(i / per)) ? acknowledged - lost.acknowledged : acknowledged;
        if (values[i] !== want) expect.fail(`element ${i} is ${values[i]}, want ${want} (${acknowledged} acknowledged, ${lost.acknowledged} after the checkpoint of ${before})`);
      }
      expect(c.logs()).to.match(/shard shard-1: resumed from .* not at a clean shutdown: pushes it acknowledged after that are lost/);
      const lease = (await c.observer.members('shard')).find((m) => m.id === 'shard-1');
      expect(lease?.rolledBack?.path).to.match(/shard-1\.tessera-checkpoint$/);
      expect((await c.map()).epoch, 'the epoch moved on').to.be.greaterThan(map.epoch);
      // A writer that was there before sees the roll-back as it reads the new map.
      await lost.client.refreshMap();
      expect(lost.client.rollBacks.map((n) => n.shard)).to.deep.equal(['shard-1']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
