import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { SparseClient } from '../../client/sparse-client.js';
import { type TesseraClient } from '../../client/tessera-client.js';
import { initialValues } from '../../cluster/model-spec.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { rawSparse, rawSparseClient, u64 } from '../helpers/raw-sparse.js';
import { forEachTransport } from '../helpers/transports.js';

const D = 4096;
const spec = flatModel(D);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The clocked consistency models on a real cluster, dense values over each
 * transport, with values as counters: under sgd with learning rate 1, worker
 * w pushes −1 at its own marker elements (one on each shard), so the pulled
 * value of a marker, less its initial value, is exactly how many of w's
 * pushes the pull saw.
 */
forEachTransport('functional: ssp and bsp clocks', function (transport) {
  this.timeout(60_000);
  let cluster: TestCluster | undefined;
  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  const start = new Float32Array(D);
  initialValues(spec, 0, start);
  /** Marker elements of worker w: one in the first slots (shard 0), one in the last (shard 1). */
  const markers = (w: number) => [w, D - 1 - w];
  const gradientOf = (w: number) => {
    const g = new Float32Array(D);
    for (const m of markers(w)) g[m] = -1;
    return g;
  };
  const seen = (values: Float32Array, w: number) => Math.min(...markers(w).map((m) => Math.round(values[m]! - start[m]!)));

  async function worker(id: string, ttlMs = 60_000): Promise<TesseraClient> {
    await cluster!.store.register('worker', { id, state: 'training' }, ttlMs);
    return cluster!.client({ workerId: id });
  }

  it('ssp:2 with one worker slowed: no pull ever misses a push more than 2 clocks old, and the fast worker does run ahead', async () => {
    const K = 2;
    const steps = 30;
    cluster = await startCluster({ shards: 2, model: spec, optimizer: { name: 'sgd', learningRate: 1 }, consistency: `ssp:${K}`, initialWorkers: 2, transport });
    const fast = await worker('fast');
    const slow = await worker('slow');
    let maxLead = 0;
    const run = async (c: TesseraClient, self: number, other: number, delayMs: number) => {
      const values = new Float32Array(D);
      for (let clock = 0; clock < steps; clock++) {
        await c.pull(values, { clock, join: clock === 0 });
        // Every push of the other worker at clocks < clock − K must be in what this pull returned.
        expect(seen(values, other), `${c.options.workerId}'s pull at clock ${clock} saw the other's pushes`).to.be.at.least(clock - K);
        expect(seen(values, self), 'its own pushes').to.equal(clock);
        maxLead = Math.max(maxLead, clock - seen(values, other));
        if (delayMs) await sleep(delayMs);
        await c.push(gradientOf(self), undefined, clock);
      }
    };
    await Promise.all([run(fast, 0, 1, 0), run(slow, 1, 0, 25)]);
    // Bounded, not lock-step: the fast worker read weights missing some of the slow one's recent pushes.
    expect(maxLead, 'most clocks the fast worker ran ahead of what it saw').to.equal(K);
  });

  it('ssp:2 for rows of a sparse table too: a row pull never misses a row push more than 2 clocks old', async () => {
    const K = 2;
    const steps = 20;
    const rowsSpec = { ...spec, name: 'flat-rows', sparse: [{ name: 'm', dim: 1, init: { kind: 'zeros' as const } }] };
    cluster = await startCluster({ shards: 2, model: rowsSpec, optimizer: { name: 'sgd', learningRate: 1 }, consistency: `ssp:${K}`, initialWorkers: 2, transport });
    // A bad clocked row pull is refused before it waits (here it would wait up to 30 s for the run to start), and joins no one.
    const shard = cluster.shards[0]!;
    const raw = rawSparseClient(shard.address);
    const req = { epoch: shard.shard.epoch, model: rowsSpec.name, table: 'nope', workerId: 'ghost', ids: u64([1n]), clocked: true, clock: 1000, join: true };
    const bad = await rawSparse(raw, 'pull', req, { deadline: Date.now() + 5_000 });
    raw.close();
    expect(bad.ok).to.equal(false);
    expect(!bad.ok && bad.error.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(shard.shard.gate.clocks().has('ghost')).to.equal(false);
    // Worker w's marker rows: 64 ids, so both shards hold some; each push adds 1 to every one of them.
    const rowsOf = (w: number) => BigUint64Array.from({ length: 64 }, (_, i) => BigInt(1000 * w + i));
    const seenRows = (values: Float32Array) => Math.min(...values);
    let maxLead = 0;
    const run = async (id: string, self: number, other: number, delayMs: number) => {
      const c = await worker(id);
      const rows = new SparseClient(c);
      const dense = new Float32Array(D);
      const minusOne = new Float32Array(64).fill(-1);
      for (let clock = 0; clock < steps; clock++) {
        const at = { clock, join: clock === 0 };
        const [, theirs, mine] = await Promise.all([c.pull(dense, at), rows.pull('m', rowsOf(other), { at }), rows.pull('m', rowsOf(self), { at })]);
        expect(seenRows(theirs), `${id}'s row pull at clock ${clock} saw the other's row pushes`).to.be.at.least(clock - K);
        expect(seenRows(mine), 'its own row pushes').to.equal(clock);
        maxLead = Math.max(maxLead, clock - seenRows(theirs));
        if (delayMs) await sleep(delayMs);
        // A step's rows first, acknowledged, then the dense push that moves the worker's clock.
        await rows.push('m', rowsOf(self), minusOne, undefined, clock);
        await c.push(new Float32Array(D), undefined, clock);
      }
    };
    await Promise.all([run('fast', 0, 1, 0), run('slow', 1, 0, 25)]);
    expect(maxLead, 'most clocks the fast worker ran ahead of what it saw').to.equal(K);
  });

  it('bsp: a step waits for every live worker, and a worker whose lease expires stops holding it back within the TTL', async () => {
    cluster = await startCluster({ shards: 2, model: spec, optimizer: { name: 'sgd', learningRate: 1 }, consistency: 'bsp', initialWorkers: 2, transport });
    const a = await worker('a');
    const ttlMs = 1_000;
    const b = await worker('b', ttlMs); // never renewed: b "dies" after step 0
    const values = new Float32Array(D);
    await Promise.all([a.pull(values, { clock: 0, join: true }), b.pull(new Float32Array(D), { clock: 0, join: true })]);
    await Promise.all([a.push(gradientOf(0), undefined, 0), b.push(gradientOf(1), undefined, 0)]);
    // Step 0 is closed: its mean (−½ at each marker, so +½ with sgd) is applied.
    await a.pull(values, { clock: 1 });
    expect(values[markers(0)[0]!]! - start[markers(0)[0]!]!).to.be.closeTo(0.5, 1e-6);
    // Step 1: only a pushes; the step stays open while b's lease lives, then closes without it.
    await a.push(gradientOf(0), undefined, 1);
    // Answered once b's lease has expired (the test's timeout bounds the wait; the clock-wait bound is far longer).
    await a.pull(values, { clock: 2 });
    expect(values[markers(0)[0]!]! - start[markers(0)[0]!]!, 'step 1 applied as a alone').to.be.closeTo(1.5, 1e-6);
    expect(values[markers(1)[0]!]! - start[markers(1)[0]!]!, 'b contributed to step 0 only').to.be.closeTo(0.5, 1e-6);
  });
});
