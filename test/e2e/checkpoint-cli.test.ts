import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { TesseraClient } from '../../client/tessera-client.js';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { type Running, run, start, waitFor } from '../helpers/cli.js';
import { RedisServer } from '../helpers/redis-server.js';

/**
 * The operator's checkpoint, as separate processes over a real Redis:
 * `tessera checkpoint` has every shard write its file after a worker trained,
 * the shard processes stop (writing checkpoints of their own as they do),
 * `tessera shard --restore` brings them back with the trained weights from
 * either; wrong command lines and directories get clear errors.
 */
describe('e2e: tessera checkpoint and tessera shard --restore', function () {
  this.timeout(120_000);
  let redis: RedisServer;
  let store: RedisMembershipStore;
  const shards: Running[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'tessera-ckpt-cli-'));
  const at = (args: string[]) => [...args, '--redis', redis.url, '--cluster', 'ck'];

  before(async () => {
    redis = await RedisServer.start();
    store = new RedisMembershipStore({ url: redis.url, cluster: 'ck' });
  });
  after(async () => {
    for (const s of shards) s.kill('SIGKILL');
    await store.close();
    await redis.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  const serving = (n: number) =>
    waitFor(`${n} shards serving`, async () => {
      const members = await store.members('shard');
      return members.filter((m) => m.state === 'serving').length === n ? members : undefined;
    }, 30_000, 100);

  async function pullAll(): Promise<Float32Array> {
    const client = await TesseraClient.connect({ store, workerId: 'reader' });
    try {
      return await client.pull();
    } finally {
      await client.close();
    }
  }

  it('checkpoints a trained cluster, and restarted shards serve the trained weights', async () => {
    const init = await run(at(['init', '--model', 'logreg', '--shards', '2', '--slots', '64']));
    expect(init.code, init.stderr).to.equal(0);
    const own = join(dir, 'own');
    mkdirSync(own);
    // Each shard also keeps checkpoints of its own; with no timer, one as it shuts down.
    for (const id of ['shard-0', 'shard-1']) shards.push(start(at(['shard', '--id', id, '--checkpoint-dir', own, '--checkpoint-every-s', '0'])));
    const members = await serving(2);
    const worker = await run(at(['worker', '--id', 'w0', '--model', 'logreg', '--epochs', '1', '--eval', '--json']));
    expect(worker.code, worker.stderr).to.equal(0);
    const trained = await pullAll();
    // With --eval, the run's summary has the final model's held-out metric; `tessera eval` measures the same model alike.
    const final = worker.stdout.trim().split('\n').map((l) => JSON.parse(l) as { event: string; final?: boolean; metrics?: Record<string, number> }).find((e) => e.event === 'eval' && e.final);
    expect(final?.metrics?.['test_accuracy'], 'the final held-out accuracy').to.be.greaterThan(0.8);
    const evaluated = await run(at(['eval', '--json']));
    expect(evaluated.code, evaluated.stderr).to.equal(0);
    expect((JSON.parse(evaluated.stdout) as { metrics: Record<string, number> }).metrics).to.deep.equal(final!.metrics);
    // A worker that comes once the run is over says so (no "done after 0 steps, loss NaN").
    const late = await run(at(['worker', '--id', 'w-late', '--model', 'logreg', '--epochs', '1']));
    expect(late.code, late.stderr).to.equal(0);
    expect(late.stderr).to.match(/worker w-late: nothing to train: every block of the run's 1 epochs was already done/);
    expect(late.stderr).to.not.match(/NaN/);

    // Named, beside the files the shards write as they stop.
    const ck = await run(at(['checkpoint', '--name', 'trained']));
    expect(ck.code, ck.stderr).to.equal(0);
    expect(ck.stdout).to.match(/shard-0 .*shard-0\.trained\.tessera-checkpoint {2}32 slots, 0 rows/);
    expect(ck.stdout).to.match(/shard-1 .*shard-1\.trained\.tessera-checkpoint {2}32 slots/);
    const status = await waitFor('tessera status to show the checkpoints', async () => {
      const r = await run(at(['status', '--json']));
      const s = JSON.parse(r.stdout) as { shards: { id: string; last_checkpoint: { path: string } | null }[] };
      return s.shards.every((x) => x.last_checkpoint) ? s : undefined;
    }, 20_000, 500);
    expect(status.shards.map((x) => x.last_checkpoint!.path)).to.deep.equal([join(own, 'shard-0.trained.tessera-checkpoint'), join(own, 'shard-1.trained.tessera-checkpoint')]);

    // --watch prints it again and again, until Ctrl-C.
    const watching = start(at(['status', '--json', '--watch', '0.5']));
    await waitFor('two refreshes', () => watching.stdout().trim().split('\n').filter((l) => l.startsWith('{')).length >= 2, 20_000, 100);
    watching.child.kill('SIGINT');
    const watched = await watching.finished;
    expect(watched.code, watched.stderr).to.equal(0);
    for (const line of watched.stdout.trim().split('\n')) expect((JSON.parse(line) as { cluster: string }).cluster).to.be.a('string');

    for (const s of shards.splice(0)) {
      s.kill('SIGTERM');
      await s.finished;
    }
    expect(readdirSync(own).sort(), 'the named checkpoints and the shutdown ones').to.deep.equal(['shard-0.tessera-checkpoint', 'shard-0.trained.tessera-checkpoint', 'shard-1.tessera-checkpoint', 'shard-1.trained.tessera-checkpoint']);
    // shard-0 comes back from `tessera checkpoint`'s file (and keeps no checkpoints of its own), shard-1 from the one it wrote as it stopped (--resume).
    const from: Record<string, string[]> = { 'shard-0': ['--restore', join(own, 'shard-0.trained.tessera-checkpoint')], 'shard-1': ['--checkpoint-dir', own, '--resume'] };
    for (const m of members) shards.push(start(at(['shard', '--id', m.id, '--listen', m.address!, ...from[m.id]!])));
    await serving(2);
    const back = await pullAll();
    expect(Buffer.from(back.buffer).equals(Buffer.from(trained.buffer)), 'the trained weights, bit for bit').to.equal(true);
    expect(trained.some((v) => v !== 0), 'logreg starts at zero: these were trained').to.equal(true);
  });

  it('wrong command lines and shards without a checkpoint directory get a clear message and a non-zero exit', async () => {
    const oldDir = await run(at(['checkpoint', '--dir', dir]));
    expect(oldDir.code).to.equal(2);
    expect(oldDir.stderr).to.match(/--dir is no longer taken by `tessera checkpoint`: each shard writes only into its own --checkpoint-dir/);

    const path = await run(at(['checkpoint', '--name', '../../etc/x']));
    expect(path.code).to.equal(2);
    expect(path.stderr).to.match(/--name: a checkpoint name is 1–64 letters.*never a path/);

    // shard-0 came back with --restore alone: it keeps no checkpoints; shard-1 writes its own.
    const partial = await run(at(['checkpoint']));
    expect(partial.code).to.equal(1);
    expect(partial.stderr).to.match(/shard-0 \(127\.0\.0\.1:\d+\): shard shard-0 keeps no checkpoints: start it with --checkpoint-dir DIR/);
    expect(partial.stdout).to.match(/shard-1 .*shard-1\.tessera-checkpoint/);
    expect(partial.stderr).to.match(/1 of 2 shards wrote no checkpoint; the other one did/);

    const resume = await run(at(['shard', '--id', 'shard-9', '--resume']));
    expect(resume.code).to.equal(2);
    expect(resume.stderr).to.match(/--resume needs --checkpoint-dir/);

    const restore = await run(at(['shard', '--id', 'shard-9', '--restore', join(dir, 'nope.tessera-checkpoint')]));
    expect(restore.code).to.equal(1);
    expect(restore.stderr).to.match(/cannot read the checkpoint .*nope\.tessera-checkpoint/);
  });
});
