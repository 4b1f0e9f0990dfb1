import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { checkpointCluster } from '../../client/checkpoint-client.js';
import { SparseClient } from '../../client/sparse-client.js';
import { CheckpointError } from '../../cluster/errors.js';
import { type ModelSpec, initialValues } from '../../cluster/model-spec.js';
import { checkpointPath, readCheckpoint } from '../../server/checkpoint.js';
import { ShardServer } from '../../server/shard-server.js';
import { waitFor } from '../helpers/cli.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { forEachTransport } from '../helpers/transports.js';

const D = 50_000;
const MODEL: ModelSpec = {
  name: 'ckpt',
  seed: 3,
  tensors: [{ name: 'w', shape: [D], init: { kind: 'uniform', low: -1, high: 1 } }],
  sparse: [{ name: 'emb', dim: 8, init: { kind: 'uniform', low: -0.1, high: 0.1 } }],
};
const IDS = BigUint64Array.from({ length: 3_000 }, (_, i) => BigInt(i) * 7919n);
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/**
 * Checkpoints on a real cluster and real files, dense values over each
 * transport: every shard writes its file; a cluster whose shards all stopped
 * comes back from those files with every dense value and row as it was, and a
 * retried push is still applied once; a directory the shard cannot write to
 * is a clear error that costs nothing.
 */
forEachTransport('functional: checkpoints', function (transport) {
  this.timeout(60_000);
  let cluster: TestCluster | undefined;
  const restarted: ShardServer[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'tessera-checkpoint-'));
  after(async () => {
    for (const s of restarted) await s.close(100);
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the shards stop and come back from their checkpoints with every value, row and applied push', async () => {
    cluster = await startCluster({ shards: 2, model: MODEL, optimizer: { name: 'adam', learningRate: 0.01 }, slots: 64, transport, checkpointDir: dir });
    const client = await cluster.client({ workerId: 'w0' });
    const sparse = new SparseClient(client);
    const g = Float32Array.from({ length: D }, (_, i) => Math.sin(i) * 0.1);
    const rowGradients = Float32Array.from({ length: IDS.length * 8 }, (_, i) => Math.cos(i) * 0.1);
    for (let k = 0; k < 3; k++) {
      await client.push(g);
      await sparse.push('emb', IDS, rowGradients);
    }
    const seq = client.nextSeq();
    await client.push(g, seq);

    // Named, so that the checkpoints the shards write of their own as they close do not replace it.
    const outcomes = await checkpointCluster(cluster.store, 'manual');
    expect(outcomes.map((o) => o.ok)).to.deep.equal([true, true]);
    for (const o of outcomes) {
      if (!o.ok) continue;
      expect(o.checkpoint.path).to.equal(checkpointPath(dir, o.checkpoint.shardId, 'manual'));
      expect(statSync(o.checkpoint.path).size).to.equal(o.checkpoint.bytes);
      expect(o.checkpoint.slots).to.equal(32);
    }
    expect(outcomes.reduce((n, o) => n + (o.ok ? o.checkpoint.rows : 0), 0), 'every row, on one shard or the other').to.equal(IDS.length);
    // Each shard publishes its latest checkpoint with its lease (tessera status shows it).
    const published = await waitFor('the checkpoints in the leases', async () => {
      const members = await cluster!.store.members('shard');
      return members.every((m) => m.checkpoint) ? members : undefined;
    });
    expect(published.map((m) => m.checkpoint!.path).sort()).to.deep.equal([checkpointPath(dir, 'shard-0', 'manual'), checkpointPath(dir, 'shard-1', 'manual')]);
    const dense = await client.pull();
    const rows = await sparse.pull('emb', IDS, { readOnly: true });

    // Every shard stops; new ones with the same ids and ports start from the files.
    const places = cluster.shards.map((s) => ({ id: s.shard.id, listen: s.address, bulkPort: Number(s.bulkAddress.split(':').pop()) }));
    for (const s of cluster.shards) await s.close(0);
    for (const p of places) restarted.push(await ShardServer.start({ ...p, store: cluster.store, restore: checkpointPath(dir, p.id, 'manual') }));

    const again = await cluster.client({ workerId: 'w0-reader' });
    expect(bits(await again.pull()).equals(bits(dense)), 'dense values as they were').to.equal(true);
    expect(bits(await new SparseClient(again).pull('emb', IDS, { readOnly: true })).equals(bits(rows)), 'rows as they were').to.equal(true);
    expect(restarted.reduce((n, s) => n + s.sparse.stats()[0]!.rows, 0), 'no row created, none lost').to.equal(IDS.length);
    // The worker retries its last push, acknowledged before the checkpoint: still applied once.
    const retry = await client.push(g, seq);
    expect(retry.appliedSlots).to.equal(0);
    expect(bits(await again.pull()).equals(bits(dense))).to.equal(true);
  });

  it('a request names a file in the shard’s own directory at most: a path is refused, nothing is written elsewhere, values unchanged', async () => {
    const client = await cluster!.client({ workerId: 'w1' });
    const before = await client.pull();
    const outside = mkdtempSync(join(tmpdir(), 'tessera-outside-'));
    const listed = () => [readdirSync(dir).sort(), readdirSync(outside)];
    const was = listed();
    try {
      for (const name of ['../escape', join(outside, 'x'), '..', '.hidden', 'a/b', 'a\\b', 'x'.repeat(65), ' spaced']) {
        const outcomes = await checkpointCluster(cluster!.store, name);
        expect(outcomes, name).to.have.length(2);
        for (const o of outcomes) {
          expect(o.ok, name).to.equal(false);
          if (o.ok) continue;
          expect(o.error.code, name).to.equal(3); // INVALID_ARGUMENT
          expect(o.error.message, name).to.match(/names a file in the shard's --checkpoint-dir, never a path/);
        }
      }
      expect(listed(), 'nothing written, in the shards’ directory or outside it').to.deep.equal(was);
      expect(bits(await client.pull()).equals(bits(before))).to.equal(true);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it('under bsp every shard writes the same step, while the workers train on', async () => {
    const aligned = join(dir, `aligned-${transport}`);
    mkdirSync(aligned);
    const bsp = await startCluster({ shards: 2, model: flatModel(4096), optimizer: { name: 'sgd', learningRate: 1 }, consistency: 'bsp', initialWorkers: 2, slots: 32, transport, checkpointDir: aligned });
    let stop = false;
    try {
      // Each step, both workers push −1 everywhere: the mean is −1, so after t steps every value is its initial value + t.
      const work = [0, 1].map(async (w) => {
        const id = `bsp-${w}`;
        await bsp.store.register('worker', { id, state: 'training' }, 60_000);
        const c = await bsp.client({ workerId: id });
        const values = new Float32Array(4096);
        const minusOne = new Float32Array(4096).fill(-1);
        for (let clock = 0; !stop; clock++) {
          await c.pull(values, { clock, join: clock === 0 });
          await c.push(minusOne, undefined, clock);
        }
        // Leave so the other's last step can close.
        await bsp.store.deregister('worker', id);
      });
      await new Promise((r) => setTimeout(r, 300));
      const outcomes = await checkpointCluster(bsp.store);
      stop = true;
      const steps = outcomes.map((o) => (o.ok ? o.checkpoint.closedSteps : -1));
      expect(outcomes.map((o) => (o.ok ? 'ok' : o.error.message))).to.deep.equal(['ok', 'ok']);
      expect(steps[0], 'training was under way').to.be.greaterThan(0);
      expect(steps[1], 'both shards at the same step').to.equal(steps[0]);
      const start = new Float32Array(4096);
      initialValues(flatModel(4096), 0, start);
      const restored = new Float32Array(4096);
      for (const id of ['shard-0', 'shard-1']) {
        const image = await readCheckpoint(checkpointPath(aligned, id));
        for (const d of image.dense) restored.set(d.values, Math.floor((d.slot * 4096) / 32));
      }
      const t = steps[0]!;
      for (let i = 0; i < 4096; i++) {
        let want = start[i]!;
        for (let k = 0; k < t; k++) want = Math.fround(want + 1);
        expect(restored[i], `element ${i} after ${t} steps`).to.equal(want);
      }
      await Promise.all(work);
      // With the workers gone the clocks stand still: the checkpoint is taken at once, at the step they stopped at.
      const idle = await checkpointCluster(bsp.store);
      const idleSteps = idle.map((o) => (o.ok ? o.checkpoint.closedSteps : -1));
      expect(idleSteps[0]).to.be.greaterThan(t);
      expect(idleSteps[1]).to.equal(idleSteps[0]);
    } finally {
      stop = true;
      await bsp.close();
    }
  });
});

/** What a shard does with checkpoints on its own: no client, so once, whatever the transport. */
describe('functional: checkpoints of a shard', function () {
  this.timeout(60_000);
  let cluster: TestCluster | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-checkpoint-'));
  before(async () => {
    cluster = await startCluster({ shards: 2, model: MODEL, slots: 64 });
  });
  after(async () => {
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a shard with a checkpoint directory writes one on a timer, and one as it closes', async () => {
    const own = join(dir, 'own');
    mkdirSync(own);
    const path = checkpointPath(own, 'shard-7');
    // It joins a running cluster: the map keeps its slots with their owners, so it holds none; what it writes is its (empty) own.
    const shard = await ShardServer.start({ id: 'shard-7', listen: '127.0.0.1:0', store: cluster!.store, checkpoints: { directory: own, everyMs: 100 } });
    const first = await waitFor('a timed checkpoint', () => existsSync(path) && statSync(path).mtimeMs, 10_000, 20);
    await waitFor('a second timed checkpoint', () => existsSync(path) && statSync(path).mtimeMs > first, 10_000, 20);
    await shard.close(0);
    expect((await readCheckpoint(path)).header.shard).to.equal('shard-7');

    // With no timer, the only checkpoint is the one written as the shard closes.
    const quiet = await ShardServer.start({ id: 'shard-6', listen: '127.0.0.1:0', store: cluster!.store, checkpoints: { directory: own, everyMs: 0 } });
    await new Promise((r) => setTimeout(r, 300));
    expect(existsSync(checkpointPath(own, 'shard-6')), 'none before closing').to.equal(false);
    await quiet.close(0);
    expect((await readCheckpoint(checkpointPath(own, 'shard-6'))).header.shard).to.equal('shard-6');
    // shard-7 wrote at least three (two timed, one closing): it keeps the newest and the two before it.
    expect(readdirSync(own).sort(), 'three of shard-7’s, no temporary file left').to.deep.equal(['shard-6.tessera-checkpoint', 'shard-7.tessera-checkpoint', 'shard-7.tessera-checkpoint.1', 'shard-7.tessera-checkpoint.2']);
    expect((await readCheckpoint(`${path}.2`)).header.shard, 'the older ones are whole checkpoints').to.equal('shard-7');

    const err = await ShardServer.start({ id: 'shard-8', listen: '127.0.0.1:0', store: cluster!.store, checkpoints: { directory: join(own, 'missing'), everyMs: 0 } }).catch((e: unknown) => e);
    expect(err, 'a checkpoint directory that does not exist is refused at start').to.be.instanceOf(CheckpointError);
  });

  it('resuming, a damaged newest checkpoint falls back to the one before; none whole refuses to start; none at all starts afresh', async () => {
    const own = join(dir, 'resume');
    mkdirSync(own);
    const first = await ShardServer.start({ id: 'shard-5', listen: '127.0.0.1:0', store: cluster!.store, checkpoints: { directory: own, everyMs: 0 }, resume: true });
    await first.checkpoint('');
    await first.close(0);
    const [newest, older] = [checkpointPath(own, 'shard-5'), `${checkpointPath(own, 'shard-5')}.1`];
    expect(existsSync(older), 'the one written on request, kept as the closing one replaced it').to.equal(true);
    const damage = (file: string) => {
      const bytes = readFileSync(file);
      bytes[bytes.length - 10] ^= 0xff;
      writeFileSync(file, bytes);
    };
    damage(newest);
    const again = await ShardServer.start({ id: 'shard-5', listen: '127.0.0.1:0', store: cluster!.store, checkpoints: { directory: own, everyMs: 0 }, resume: true });
    // Its closing checkpoint replaces the damaged one; the older ones move down.
    await again.close(0);
    expect((await readCheckpoint(newest)).header.shard).to.equal('shard-5');
    for (const f of readdirSync(own)) writeFileSync(join(own, f), readFileSync(join(own, f)).subarray(0, 100));
    const err = await ShardServer.start({ id: 'shard-5', listen: '127.0.0.1:0', store: cluster!.store, checkpoints: { directory: own, everyMs: 0 }, resume: true }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(CheckpointError);
    expect((err as Error).message).to.match(/shard shard-5 has checkpoints in .* but none it can restore: .*shard-5\.tessera-checkpoint cannot be restored .*; restore one by hand \(--restore FILE\) or move them away to start afresh/);
    rmSync(own, { recursive: true });
    mkdirSync(own);
    const fresh = await ShardServer.start({ id: 'shard-5', listen: '127.0.0.1:0', store: cluster!.store, checkpoints: { directory: own, everyMs: 0 }, resume: true });
    await fresh.close(0);
  });

  it('a shard started without a checkpoint directory refuses checkpoint requests, whatever they name', async () => {
    for (const name of ['', 'nightly']) {
      const outcomes = await checkpointCluster(cluster!.store, name);
      expect(outcomes).to.have.length(2);
      for (const o of outcomes) {
        expect(o.ok).to.equal(false);
        if (o.ok) continue;
        expect(o.error).to.be.instanceOf(CheckpointError);
        expect(o.error.message).to.match(/shard shard-\d keeps no checkpoints: start it with --checkpoint-dir DIR/);
      }
    }
  });

  it('a shard refuses to start from a file that is not its model’s checkpoint', async () => {
    const err = await ShardServer.start({ id: 'shard-9', listen: '127.0.0.1:0', store: cluster!.store, restore: join(dir, 'nothing-here') }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(CheckpointError);
    expect((err as Error).message).to.match(/cannot read the checkpoint .*nothing-here/);
  });
});
