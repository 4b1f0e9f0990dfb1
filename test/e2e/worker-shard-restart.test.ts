import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { type Running, run, start, waitFor } from '../helpers/cli.js';
import { RedisServer, freePort } from '../helpers/redis-server.js';

const CLUSTER = 'restart';
const EPOCHS = 15;
/** mnist-mlp's training set: 16 blocks of 512 examples (the last one 320), 125 steps of 64 an epoch. */
const STEPS_PER_EPOCH = 125;
const OUTAGE_MS = 10_000;

interface StepEvent {
  event: 'step';
  step: number;
  epoch: number;
  /** When the test read it (the worker's events carry no time of their own). */
  at: number;
}

interface DoneEvent {
  event: 'done';
  steps: number;
  samples: number;
  lastLoss: number;
}

/**
 * A planned restart of one shard, as separate processes over a real Redis:
 * while a `tessera worker` trains, one of two shards stops (SIGTERM, writing
 * its closing checkpoint), stays away for 10 s, and comes back on the same
 * addresses with --resume. The worker waits the outage out rather than giving
 * up, trains on once the shard is back, and finishes its run (exit 0).
 */
describe('e2e: a worker survives a shard restart', function () {
  this.timeout(150_000);
  let redis: RedisServer;
  let store: RedisMembershipStore;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-shard-restart-'));
  const processes: Running[] = [];
  const at = (args: string[]) => [...args, '--redis', redis.url, '--cluster', CLUSTER];
  const info = { TESSERA_LOG_LEVEL: 'info' };

  before(async () => {
    redis = await RedisServer.start();
    store = new RedisMembershipStore({ url: redis.url, cluster: CLUSTER });
  });
  after(async () => {
    for (const p of processes) p.kill('SIGKILL');
    await Promise.all(processes.map((p) => p.finished));
    await store?.close();
    await redis?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  function launch(args: string[], env: NodeJS.ProcessEnv = info): Running {
    const p = start(at(args), 140_000, env);
    processes.push(p);
    return p;
  }

  function shard(id: string, listen: number, bulk: number, more: string[] = []): Running {
    return launch(['shard', '--id', id, '--listen', `127.0.0.1:${listen}`, '--bulk-port', String(bulk), '--checkpoint-dir', dir, '--checkpoint-every-s', '0', '--lease-ttl-ms', '2000', '--lease-renew-ms', '500', ...more]);
  }

  const serving = (ids: string[]) =>
    waitFor(`${ids.join(', ')} serving`, async () => {
      const members = await store.members('shard');
      return ids.every((id) => members.some((m) => m.id === id && m.state === 'serving'));
    }, 30_000, 100);

  /** `n` distinct free loopback ports. */
  async function freePorts(n: number): Promise<number[]> {
    const ports = new Set<number>();
    while (ports.size < n) ports.add(await freePort());
    return [...ports];
  }

  it('a tessera worker trains through a 10 s restart of one shard and finishes its run', async () => {
    const initialised = await run(at(['init', '--model', 'mnist-mlp', '--shards', '2', '--consistency', 'async', '--replicas', '0']));
    expect(initialised.code, initialised.stderr).to.equal(0);

    // Fixed ports (gRPC and bulk), so that the restarted shard comes back on the addresses the map names.
    const [grpc0, bulk0, grpc1, bulk1] = (await freePorts(4)) as [number, number, number, number];
    shard('shard-0', grpc0, bulk0);
    let restarting = shard('shard-1', grpc1, bulk1);
    await serving(['shard-0', 'shard-1']);

    // The worker's progress, read as it comes: a step event every 250 ms, and `done` at the end.
    const steps: StepEvent[] = [];
    let done: DoneEvent | undefined;
    const worker = launch(['worker', '--id', 'w0', '--epochs', String(EPOCHS), '--json']);
    let pending = '';
    worker.child.stdout!.on('data', (d: Buffer) => {
      pending += d.toString();
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines.filter((l) => l.startsWith('{'))) {
        const e = JSON.parse(line) as { event: string };
        if (e.event === 'step') steps.push({ ...(e as StepEvent), at: Date.now() });
        if (e.event === 'done') done = e as DoneEvent;
      }
    });

    // Training is under way (the worker holds a lease, and has reported steps), a good way short of its end.
    await waitFor('the worker to have stepped', async () => {
      const [w] = await store.members('worker');
      return w?.id === 'w0' && (steps.at(-1)?.step ?? 0) >= 100;
    }, 60_000, 50);
    expect(worker.child.exitCode, worker.stderr()).to.equal(null);

    // A planned restart: SIGTERM, the shard drains and writes its closing checkpoint.
    const stoppedAt = Date.now();
    const stepBefore = steps.at(-1)!.step;
    restarting.kill('SIGTERM');
    const stopped = await restarting.finished;
    expect(stopped.code, stopped.stderr).to.equal(0);
    const goneAt = Date.now();
    expect(existsSync(join(dir, 'shard-1.tessera-checkpoint')), 'the closing checkpoint').to.equal(true);
    expect(stepBefore, 'the stop came well before the end of the run').to.be.below(EPOCHS * STEPS_PER_EPOCH / 2);

    while (Date.now() - goneAt < OUTAGE_MS) await new Promise((r) => setTimeout(r, Math.max(10, OUTAGE_MS - (Date.now() - goneAt))));
    expect(worker.child.exitCode, `the worker gave up while shard-1 was away:\n${worker.stderr()}`).to.equal(null);

    // Back on the same addresses, from the checkpoint it wrote as it stopped.
    const restartedAt = Date.now();
    restarting = shard('shard-1', grpc1, bulk1, ['--resume']);
    await serving(['shard-0', 'shard-1']);
    const servingAgainAt = Date.now();

    const r = await worker.finished;
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.match(new RegExp(`worker w0: done after ${EPOCHS * STEPS_PER_EPOCH} steps, loss \\d`));
    expect(r.stderr).to.not.match(/stopped after|NaN/);
    // Every block of every epoch trained once: one worker, no block redone or dropped for the outage.
    expect(done, 'the run summary').to.not.equal(undefined);
    expect(done!.steps).to.equal(EPOCHS * STEPS_PER_EPOCH);
    expect(done!.lastLoss).to.be.a('number').and.below(1);

    expect(restartedAt - goneAt, 'the time shard-1 was down').to.be.at.least(OUTAGE_MS);
    expect(restarting.stderr()).to.match(/shard shard-1: resumed \d+ slots and 0 sparse rows from \S*shard-1\.tessera-checkpoint/);
    expect(restarting.stderr(), 'a clean shutdown loses no pushes').to.not.match(/not at a clean shutdown/);
    expect(restarting.child.exitCode, restarting.stderr()).to.equal(null);

    // Stepping before the stop and after the shard came back.
    const before = steps.filter((s) => s.at < stoppedAt);
    const after = steps.filter((s) => s.at > servingAgainAt);
    const away = steps.filter((s) => s.at >= stoppedAt && s.at <= servingAgainAt);
    expect(before.length, 'steps before the stop').to.be.greaterThan(0);
    // Every step pulls from both shards: while shard-1 was away the worker waited (a step or two in flight at most).
    expect(Math.max(stepBefore, ...away.map((s) => s.step)) - stepBefore, 'steps while shard-1 was away').to.be.below(STEPS_PER_EPOCH);
    expect(after.length, 'steps after the restart').to.be.greaterThan(0);
    expect(after.at(-1)!.step).to.be.greaterThan(before.at(-1)!.step);
    expect(after.at(-1)!.step - stepBefore, 'most of the run was trained after the restart').to.be.greaterThan(EPOCHS * STEPS_PER_EPOCH / 2);
  });
});
