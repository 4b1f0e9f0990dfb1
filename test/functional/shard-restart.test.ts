import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { checkpointPath } from '../../server/checkpoint.js';
import { ShardServer } from '../../server/shard-server.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { forEachTransport } from '../helpers/transports.js';

const D = 10_000;

/**
 * A planned restart of a shard, as an operator does one (SIGTERM: the shard
 * answers what it has, writes its checkpoint, leaves; then starts again on
 * the same address from that file): a client's push sent while the shard is
 * down keeps retrying (for up to retryForMs, 30 s by default) and is applied
 * once the shard is back, found within about a second; nothing is lost or
 * applied twice. Before, the client gave up after five retries (≈ 1.5 s), and
 * a worker exited during a 5-second restart.
 */
forEachTransport('functional: a shard restarted while a client pushes', function (transport) {
  this.timeout(60_000);
  let cluster: TestCluster;
  let restarted: ShardServer | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-restart-'));
  after(async () => {
    await restarted?.close(100);
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a push sent while the shard is down for 3 s is applied once it is back, exactly once', async () => {
    cluster = await startCluster({ shards: 1, model: flatModel(D), slots: 16, optimizer: { name: 'sgd', learningRate: 1 }, transport, checkpointDir: dir });
    const client = await cluster.client({ workerId: 'w0' });
    const start = await client.pull();
    const one = new Float32Array(D).fill(1);
    await client.push(one);

    const shard = cluster.shards[0]!;
    const place = { id: shard.shard.id, listen: shard.address, bulkPort: Number(shard.bulkAddress.split(':').pop()) };
    await shard.close(0);
    const pushed = client.push(one);
    await new Promise((r) => setTimeout(r, 3_000));
    restarted = await ShardServer.start({ ...place, store: cluster.store, restore: checkpointPath(dir, place.id), checkpoints: { directory: dir, everyMs: 0 } });
    const ack = await pushed;
    expect(ack.appliedSlots, 'applied on the shard that came back').to.equal(16);

    const values = await client.pull();
    for (let i = 0; i < D; i++) expect(values[i], `element ${i}`).to.equal(Math.fround(Math.fround(start[i]! - 1) - 1));
  });
});

/**
 * A shard that comes back on another address (the `--listen` default is port
 * 0; a pod gets a new IP) writes its new address into the map, one epoch up,
 * and clients follow it; a second shard under the id of one that is alive is
 * refused. Before, the map kept the old address and every push failed while
 * `tessera status` showed nothing wrong.
 */
describe('functional: a shard restarted on another address', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  const extra: ShardServer[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'tessera-readdress-'));
  after(async () => {
    for (const s of extra) await s.close(100);
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the map follows it, clients too; nothing is lost', async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(D), slots: 16, optimizer: { name: 'sgd', learningRate: 1 }, checkpointDir: dir });
    const client = await cluster.client({ workerId: 'w0' });
    const start = await client.pull();
    const one = new Float32Array(D).fill(1);
    await client.push(one);
    const before = (await cluster.store.getMap())!;
    const old = cluster.shards[1]!;
    await old.close(0);
    const moved = await ShardServer.start({ id: old.shard.id, listen: '127.0.0.1:0', store: cluster.store, checkpoints: { directory: dir, everyMs: 0 }, resume: true });
    extra.push(moved);
    expect(moved.address).to.not.equal(before.addresses[old.shard.id]);
    const after = (await cluster.store.getMap())!;
    expect(after.epoch, 'one epoch up').to.equal(before.epoch + 1);
    expect(after.addresses[old.shard.id]).to.equal(moved.address);
    expect(after.owners, 'the same owners').to.deep.equal(before.owners);
    expect((await client.push(one)).appliedSlots, 'the client followed the map').to.equal(16);
    const values = await client.pull();
    for (let i = 0; i < D; i++) expect(values[i], `element ${i}`).to.equal(Math.fround(Math.fround(start[i]! - 1) - 1));
  });

  it('a second shard under a live shard’s id waits out the lease, then refuses to start', async () => {
    const lease = { ttlMs: 600, renewMs: 200 };
    const first = await ShardServer.start({ id: 'twin', listen: '127.0.0.1:0', store: cluster.store, lease });
    extra.push(first);
    const began = Date.now();
    const err = await ShardServer.start({ id: 'twin', listen: '127.0.0.1:0', store: cluster.store, lease }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(Error);
    expect((err as Error).message).to.match(new RegExp(`a shard with id twin is alive at ${first.address.replace(/\./g, '\\.')} \\(its lease is being renewed\\): stop it first, or give this one another --id`));
    expect(Date.now() - began, 'it waited for the lease to lapse first').to.be.at.least(lease.ttlMs);
  });
});

/**
 * A shard that crashed (kill -9, OOM) resumes from its last timed checkpoint:
 * pushes it acknowledged after that are gone, and without replicas nothing
 * can bring them back. It says so: an error in its log, the roll-back in its
 * lease (`tessera status`: ROLLED BACK), and the map one epoch up so that
 * every client re-reads. A shard stopped cleanly (SIGTERM) writes a closing
 * checkpoint that holds every acknowledged push, and reports nothing.
 */
describe('functional: a shard that resumes from before its last acknowledgement says so', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  const extra: ShardServer[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'tessera-rollback-'));
  after(async () => {
    for (const s of extra) await s.close(100);
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('after a crash: logged, in its lease, the epoch moves on; after a clean stop: nothing', async () => {
    cluster = await startCluster({ shards: 1, model: flatModel(D), slots: 16, optimizer: { name: 'sgd', learningRate: 1 }, checkpointDir: dir });
    const client = await cluster.client({ workerId: 'w0' });
    const start = await client.pull();
    const one = new Float32Array(D).fill(1);
    await client.push(one);
    const shard = cluster.shards[0]!;
    const timed = await shard.checkpoint('');
    await client.push(one); // acknowledged after the last timed checkpoint
    const place = { id: shard.shard.id, listen: shard.address, bulkPort: Number(shard.bulkAddress.split(':').pop()) };
    // A crash: the newest file on disk is the timed one (a clean stop would have written a closing one over it).
    copyFileSync(timed.path, `${timed.path}.crash`);
    await shard.close(0);
    copyFileSync(`${timed.path}.crash`, timed.path);
    const epochBefore = (await cluster.store.getMap())!.epoch;

    const back = await ShardServer.start({ ...place, store: cluster.store, checkpoints: { directory: dir, everyMs: 0 }, resume: true });
    extra.push(back);
    const lease = (await cluster.store.members('shard')).find((m) => m.id === place.id);
    expect(lease?.rolledBack?.path).to.equal(timed.path);
    expect(Date.parse(lease!.rolledBack!.to)).to.be.a('number').and.not.NaN;
    expect((await cluster.store.getMap())!.epoch, 'the map moved on one epoch').to.equal(epochBefore + 1);
    const values = await client.pull();
    expect(client.epoch).to.equal(epochBefore + 1);
    for (let i = 0; i < D; i++) expect(values[i], `element ${i}: the push after the checkpoint is lost`).to.equal(Math.fround(start[i]! - 1));

    // A clean stop and resume: its closing checkpoint holds everything; nothing to report.
    await client.push(one);
    await back.close(0);
    extra.pop();
    const clean = await ShardServer.start({ ...place, store: cluster.store, checkpoints: { directory: dir, everyMs: 0 }, resume: true });
    extra.push(clean);
    const again = (await cluster.store.members('shard')).find((m) => m.id === place.id);
    expect(again?.rolledBack, 'nothing rolled back').to.equal(undefined);
    expect((await cluster.store.getMap())!.epoch).to.equal(epochBefore + 1);
  });
});
