import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { snapshotModel } from '../../client/model-snapshot.js';
import { SparseClient } from '../../client/sparse-client.js';
import { NotFoundError, ShardUnavailableError } from '../../cluster/errors.js';
import { dial } from '../../cluster/grpc-client.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { type ModelSpec, initialValues, layout } from '../../cluster/model-spec.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { shardAdminService } from '../../cluster/proto.js';
import { slotStart } from '../../cluster/slots.js';
import { idHalves, initialRow, tableHash } from '../../cluster/sparse-keys.js';
import { encodeCheckpoint } from '../../server/checkpoint-format.js';
import { snapshot } from '../../server/checkpoint.js';
import { dropSlots, importSlots } from '../../server/migration.js';
import { waitFor } from '../helpers/cli.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';

const SLOTS = 64;
const DIM = 8;
const MODEL: ModelSpec = {
  name: 'snap',
  seed: 11,
  tensors: [
    { name: 'w', shape: [300, 70], init: { kind: 'uniform', low: -1, high: 1 } },
    { name: 'b', shape: [77], init: { kind: 'uniform', low: -0.5, high: 0.5 } },
  ],
  sparse: [{ name: 'emb', dim: DIM, init: { kind: 'uniform', low: -0.1, high: 0.1 } }],
};
const D = layout(MODEL).elements;
const LR = 0.5;
/** Distinct ids, not in order, some above 2^32. */
const IDS = BigUint64Array.from({ length: 2_500 }, (_, i) => (BigInt(i) * 0x9e3779b97f4a7c15n) & 0xffff_ffff_ffffn);

/** `w` after `times` sgd updates with gradient `g`, as a shard computes them (float64, rounded once per update). */
function trained(initial: Float32Array, g: Float32Array, times: number): Float32Array {
  const w = initial.slice();
  for (let k = 0; k < times; k++) for (let i = 0; i < w.length; i++) w[i] = w[i]! - LR * g[i]!;
  return w;
}

/**
 * Taking the model's values out of a running cluster over real gRPC: every
 * dense value and row exactly as trained; a snapshot taken while a client
 * pushes holds, per slot, the values after a whole number of its pushes (a
 * shard's slots within one push of each other); under bsp one step on every
 * shard.
 */
describe('functional: model snapshot', function () {
  this.timeout(60_000);

  describe('two shards, a dense model and a sparse table', () => {
    let cluster: TestCluster;
    before(async () => {
      cluster = await startCluster({ shards: 2, model: MODEL, optimizer: { name: 'sgd', learningRate: LR }, slots: SLOTS });
    });
    after(async () => {
      await cluster.close();
    });

    it('holds every dense value and every row, ids sorted, exactly as trained', async () => {
      const client = await cluster.client({ workerId: 'w0' });
      const sparse = new SparseClient(client);
      const g = Float32Array.from({ length: D }, (_, i) => Math.sin(i) * 0.1);
      const rowG = Float32Array.from({ length: IDS.length * DIM }, (_, i) => Math.cos(i) * 0.1);
      for (let k = 0; k < 3; k++) await client.push(g);
      for (let k = 0; k < 2; k++) await sparse.push('emb', IDS, rowG);

      const asked = new Date();
      const snap = await snapshotModel(cluster.store);
      const answered = new Date();

      const start = new Float32Array(D);
      initialValues(MODEL, 0, start);
      const want = trained(start, g, 3);
      expect(snap.dense.length).to.equal(D);
      for (let i = 0; i < D; i++) if (snap.dense[i] !== want[i]) expect(snap.dense[i], `element ${i}`).to.equal(want[i]);

      const table = snap.tables.get('emb')!;
      const sorted = [...IDS].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      expect([...table.ids]).to.deep.equal(sorted);
      expect(table.rows.length).to.equal(IDS.length * DIM);
      const position = new Map([...IDS].map((id, i) => [id, i]));
      const hash = tableHash('emb');
      const row = new Float32Array(DIM);
      for (let r = 0; r < table.ids.length; r++) {
        const id = table.ids[r]!;
        const [lo, hi] = idHalves(id);
        initialRow(MODEL.sparse![0]!.init, DIM, MODEL.seed, hash, lo, hi, row, 0);
        const i = position.get(id)!;
        const expected = trained(row, rowG.subarray(i * DIM, (i + 1) * DIM), 2);
        for (let c = 0; c < DIM; c++) expect(table.rows[r * DIM + c], `row ${id} column ${c}`).to.equal(expected[c]);
      }

      expect(snap.epoch).to.equal(1);
      expect(snap.closedSteps).to.equal(0);
      expect(snap.config.model.name).to.equal('snap');
      expect(snap.shards.map((s) => s.id).sort()).to.deep.equal(['shard-0', 'shard-1']);
      expect(snap.shards.reduce((n, s) => n + s.slots, 0)).to.equal(SLOTS);
      expect(snap.shards.reduce((n, s) => n + s.rows, 0)).to.equal(IDS.length);
      for (const s of snap.shards) {
        expect(s.epoch).to.equal(1);
        expect(s.address).to.equal(cluster.shards.find((x) => x.shard.id === s.id)!.address);
        expect(s.snapshotMs).to.be.at.least(0);
      }
      // Taken between the request and its answer (the shards' clocks are this host's).
      expect(snap.takenAt.getTime()).to.be.within(asked.getTime(), answered.getTime());
      // The same values a pull reads.
      const pulled = await client.pull();
      expect(Buffer.from(pulled.buffer).equals(Buffer.from(snap.dense.buffer))).to.equal(true);
    });

    it('leaves out slots a shard holds only as the target of a move', async () => {
      const [a, b] = cluster.shards;
      const owned = a!.shard.owned()[0]!.begin;
      // b receives a copy of one of a's slots, as the target of a move does, and it drifts.
      importSlots(Buffer.concat(encodeCheckpoint(snapshot(a!.shard, a!.sparse, undefined, new Set([owned])))), b!.shard, b!.sparse);
      b!.shard.store.get(owned)!.values.fill(42);
      try {
        const snap = await snapshotModel(cluster.store);
        const client = await cluster.client({ workerId: 'w-move' });
        const pulled = await client.pull();
        expect(Buffer.from(pulled.buffer).equals(Buffer.from(snap.dense.buffer)), 'the owner’s values, not the copy').to.equal(true);
        expect(snap.dense[slotStart(owned, D, SLOTS)]).to.not.equal(42);
        expect(snap.shards.find((s) => s.id === b!.shard.id)!.ownedSlots).to.not.include(owned);
      } finally {
        dropSlots(b!.shard, b!.sparse, [owned]);
      }
    });
  });

  it('while a client pushes on, each slot is at a whole number of pushes, between those acked before and after; a shard’s slots within one push of each other', async () => {
    const elements = 1 << 20; // 4 MB of values
    const model = flatModel(elements, 'busy');
    const cluster = await startCluster({ shards: 2, model, optimizer: { name: 'sgd', learningRate: LR }, slots: 128 });
    try {
      const client = await cluster.client({ workerId: 'pusher' });
      const ones = new Float32Array(elements).fill(1);
      let acked = 0;
      let stop = false;
      const pushing = (async () => {
        while (!stop) {
          await client.push(ones);
          acked++;
        }
      })();
      while (acked < 5) await new Promise((r) => setTimeout(r, 5));
      const before = acked;
      const snap = await snapshotModel(cluster.store);
      stop = true;
      await pushing;
      // The push in flight when the snapshot came back may have been applied before it: count it.
      const after = acked;

      // Per shard, the k of initial − LR·k its values are at, with each update rounded as the shard does.
      const start = new Float32Array(elements);
      initialValues(model, 0, start);
      const cur = start.slice();
      // A shard applies each slot of a push as its bytes arrive, so the copy may fall between two slots of one push.
      const found = new Map<number, number>();
      const at = (slot: number) => [slotStart(slot, elements, 128), slotStart(slot + 1, elements, 128)] as const;
      for (let k = 0; k <= after; k++) {
        if (k >= before) {
          for (let slot = 0; slot < 128; slot++) {
            const [b, e] = at(slot);
            if (!found.has(slot) && Buffer.from(cur.buffer, b * 4, (e - b) * 4).equals(Buffer.from(snap.dense.buffer, b * 4, (e - b) * 4))) found.set(slot, k);
          }
        }
        for (let i = 0; i < elements; i++) cur[i] = cur[i]! - LR;
      }
      expect(found.size, `every slot at some k in [${before}, ${after}]`).to.equal(128);
      for (const s of snap.shards) {
        // In the order the shard applies a push's slots: a run at k + 1, then the rest at k.
        const ks = [...s.ownedSlots].sort((a, b) => a - b).map((slot) => found.get(slot)!);
        expect(Math.max(...ks) - Math.min(...ks), `${s.id}: slots within one push of each other (${ks.join(' ')})`).to.be.at.most(1);
        for (let i = 1; i < ks.length; i++) expect(ks[i]!, `${s.id}: the slots ahead come first`).to.be.at.most(ks[i - 1]!);
      }
    } finally {
      await cluster.close();
    }
  });

  it('under bsp every element of both shards is at the same step, while the workers train on', async () => {
    const N = 4096;
    const bsp = await startCluster({ shards: 2, model: flatModel(N), optimizer: { name: 'sgd', learningRate: 1 }, consistency: 'bsp', initialWorkers: 2, slots: 32 });
    let stop = false;
    try {
      // Each step, both workers push −1 everywhere: the mean is −1, so after t steps every value is its initial value + t.
      const work = [0, 1].map(async (w) => {
        const id = `bsp-${w}`;
        await bsp.store.register('worker', { id, state: 'training' }, 60_000);
        const c = await bsp.client({ workerId: id });
        const values = new Float32Array(N);
        const minusOne = new Float32Array(N).fill(-1);
        for (let clock = 0; !stop; clock++) {
          await c.pull(values, { clock, join: clock === 0 });
          await c.push(minusOne, undefined, clock);
        }
        await bsp.store.deregister('worker', id);
      });
      await new Promise((r) => setTimeout(r, 300));
      const snap = await snapshotModel(bsp.store);
      stop = true;
      const t = snap.closedSteps;
      expect(t, 'training was under way').to.be.greaterThan(0);
      expect(snap.shards.map((s) => s.closedSteps)).to.deep.equal([t, t]);
      const start = new Float32Array(N);
      initialValues(flatModel(N), 0, start);
      for (let i = 0; i < N; i++) {
        let want = start[i]!;
        for (let k = 0; k < t; k++) want = Math.fround(want + 1);
        if (snap.dense[i] !== want) expect(snap.dense[i], `element ${i} after ${t} steps`).to.equal(want);
      }
      await Promise.all(work);
      // The workers gone, the clocks stand still: taken at once, at the step they stopped at.
      const idle = await snapshotModel(bsp.store);
      expect(idle.closedSteps).to.be.greaterThan(t);
      expect(idle.shards.map((s) => s.closedSteps)).to.deep.equal([idle.closedSteps, idle.closedSteps]);
    } finally {
      stop = true;
      await bsp.close();
    }
  });

  it('slots larger than one message come in several, and arrive whole', async () => {
    const elements = 3 << 20; // two slots of 6 MB
    const model: ModelSpec = { ...flatModel(elements, 'big'), sparse: [{ name: 'wide', dim: 64, init: { kind: 'uniform', low: -1, high: 1 } }] };
    const cluster = await startCluster({ shards: 2, model, slots: 2 });
    try {
      const client = await cluster.client({ workerId: 'big' });
      const sparse = new SparseClient(client);
      const ids = BigUint64Array.from({ length: 40_000 }, (_, i) => BigInt(i) * 104_729n + 3n); // ≈ 5 MB of rows per slot
      // Zero gradients under sgd: the rows are created, at their first values.
      for (let at = 0; at < ids.length; at += 10_000) await sparse.push('wide', ids.subarray(at, at + 10_000), new Float32Array(10_000 * 64));
      await client.push(Float32Array.from({ length: elements }, (_, i) => (i % 7) - 3));
      const snap = await snapshotModel(cluster.store);
      expect(Buffer.from((await client.pull()).buffer).equals(Buffer.from(snap.dense.buffer))).to.equal(true);
      const table = snap.tables.get('wide')!;
      expect(table.ids.length).to.equal(ids.length);
      const rows = new Float32Array(ids.length * 64);
      for (let at = 0; at < ids.length; at += 10_000) rows.set(await sparse.pull('wide', table.ids.subarray(at, at + 10_000), { readOnly: true }), at * 64);
      expect(Buffer.from(rows.buffer).equals(Buffer.from(table.rows.buffer))).to.equal(true);
    } finally {
      await cluster.close();
    }
  });

  it('a cancelled export lets go of the step it was waiting for', async () => {
    const cluster = await startCluster({ shards: 1, model: flatModel(1000), consistency: 'bsp', slots: 8 });
    const stub = dial(shardAdminService(), cluster.shards[0]!.address) as grpc.Client & { exportModel(req: object): grpc.ClientReadableStream<object> };
    try {
      const gate = cluster.shards[0]!.shard.gate as unknown as { holds: number[] };
      const call = stub.exportModel({ atStep: 5 });
      const ended = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
      call.on('error', () => undefined);
      await waitFor('the export to hold step 5', () => gate.holds.length === 1, 5_000, 10);
      call.cancel();
      expect((await ended).code).to.equal(grpc.status.CANCELLED);
      await waitFor('the hold let go', () => gate.holds.length === 0, 5_000, 10);
    } finally {
      stub.close();
      await cluster.close();
    }
  });

  it('a shard that cannot answer is a typed error naming it; no map is NotFoundError', async () => {
    const cluster = await startCluster({ shards: 2, model: flatModel(1000), slots: 16 });
    try {
      await cluster.shards[1]!.close(0);
      const err = await snapshotModel(cluster.store, { deadlineMs: 3_000 }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(ShardUnavailableError);
      expect((err as Error).message).to.match(/shard-1/);
    } finally {
      await cluster.close();
    }
    const empty = new MemoryMembershipStore();
    try {
      await empty.createCluster({ name: 'empty', slots: 4, model: flatModel(10), optimizer: optimizerWithDefaults({ name: 'sgd' }), consistency: 'async' });
      const err = await snapshotModel(empty).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(NotFoundError);
    } finally {
      await empty.close();
    }
  });
});
