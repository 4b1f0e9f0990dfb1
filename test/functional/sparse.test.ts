import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { InvalidArgumentError, MovedError, TooManyRedirectionsError } from '../../cluster/errors.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { type ModelSpec } from '../../cluster/model-spec.js';
import { evenAssignment } from '../../cluster/shard-map.js';
import { idHalves, initialRow, slotOfId, tableHash } from '../../cluster/sparse-keys.js';
import { type SparseTableStats } from '../../server/sparse-store.js';
import { SparseClient } from '../../client/sparse-client.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { f32 } from '../helpers/raw-shard.js';
import { type SparsePullReply, type SparsePushAck, rawSparse, rawSparseClient, snapshotSparse, u64 } from '../helpers/raw-sparse.js';

/**
 * Sparse tables end to end over real gRPC: two shards, a model with a small
 * dense tensor and a sparse table of dim 16, the SparseClient on a
 * TesseraClient. Counters on the shards show what travelled.
 */

const SLOTS = 64;
const DIM = 16;
const LR = 0.5;
const MAX = 0xffffffffffffffffn;
const MODEL: ModelSpec = {
  name: 'emb',
  seed: 3,
  tensors: [{ name: 'w', shape: [8, 8], init: { kind: 'uniform', low: -1, high: 1 } }],
  sparse: [
    { name: 'items', dim: DIM, init: { kind: 'uniform', low: -0.1, high: 0.1 } },
    { name: 'users', dim: 4, init: { kind: 'zeros' } },
  ],
};

/** `n` distinct ids counting up from `from` and down from 2^64−1−from, alternately (from 0: 0, 2^64−1, 1, 2^64−2…). */
function distinctIds(from: bigint, n: number): bigint[] {
  const out: bigint[] = [];
  for (let i = 0n; out.length < n; i++) out.push(i % 2n === 0n ? from + i / 2n : MAX - from - i / 2n);
  return out;
}

function expectedRows(ids: readonly bigint[]): Float32Array {
  const out = new Float32Array(ids.length * DIM);
  ids.forEach((id, i) => initialRow(MODEL.sparse![0]!.init, DIM, MODEL.seed, tableHash('items'), ...idHalves(id), out, i * DIM));
  return out;
}

/** Multiples of 1/64: w − 0.5·g is then one rounding, whatever the order. */
function gradients(n: number, seed: number): Float32Array {
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) g[i] = (((i * 37 + seed * 11) % 129) - 64) / 64;
  return g;
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('functional: sparse tables', function () {
  this.timeout(20_000);

  describe('on a steady map', () => {
    let cluster: TestCluster;
    let sparse: SparseClient;

    before(async () => {
      cluster = await startCluster({ shards: 2, model: MODEL, slots: SLOTS, optimizer: { name: 'sgd', learningRate: LR } });
      sparse = new SparseClient(await cluster.client());
    });
    after(async () => {
      sparse.close();
      await cluster.close();
    });

    const items = (i: number): SparseTableStats => cluster.shards[i]!.sparse.stats().find((t) => t.name === 'items')!;
    const total = (k: keyof SparseTableStats) => (items(0)[k] as number) + (items(1)[k] as number);
    const counters = () => ({ rows: total('rows'), created: total('rowsCreated'), touched: total('rowsTouched'), bytesIn: total('bytesIn'), bytesOut: total('bytesOut') });
    const delta = (a: ReturnType<typeof counters>, b: ReturnType<typeof counters>) => ({ rows: b.rows - a.rows, created: b.created - a.created, touched: b.touched - a.touched, bytesIn: b.bytesIn - a.bytesIn, bytesOut: b.bytesOut - a.bytesOut });
    const ownerOf = (id: bigint) => cluster.shards.findIndex((s) => s.shard.owned().some((r) => r.begin <= slotOfId('items', id, SLOTS) && slotOfId('items', id, SLOTS) < r.end));

    it('a pull answers rows not held with their first values and creates none; a push creates each on its owner; only distinct ids travel', async () => {
      const ids = [...distinctIds(0n, 298), 2n ** 53n, 2n ** 53n + 1n];
      expect(ids).to.include.members([0n, MAX, MAX - 1n]);
      const asked = [...ids, ...ids.slice(0, 100)];
      const c0 = counters();
      const created0 = [items(0).rowsCreated, items(1).rowsCreated];
      const values = await sparse.pull('items', BigUint64Array.from(asked));
      expect(bits(values).equals(bits(expectedRows(asked))), 'first values').to.equal(true);
      const c1 = counters();
      expect(delta(c0, c1)).to.deep.equal({ rows: 0, created: 0, touched: 300, bytesIn: 300 * 8, bytesOut: 300 * DIM * 4 });
      // A push of zero gradients (sgd: the values stay) creates each row on the shard that owns its slot.
      expect(await sparse.push('items', ids, new Float32Array(300 * DIM), 1)).to.include({ rowsApplied: 300, rowsCreated: 300 });
      const perShard = [0, 0];
      for (const id of ids) perShard[ownerOf(id)]!++;
      expect(perShard[0]).to.be.greaterThan(0);
      expect(perShard[1]).to.be.greaterThan(0);
      expect([items(0).rowsCreated - created0[0]!, items(1).rowsCreated - created0[1]!]).to.deep.equal(perShard);
      // Pulled again, held now: nothing created, the same bits, and bytes in proportion to the ids.
      const c2 = counters();
      const again = await sparse.pull('items', ids.slice(0, 10));
      expect(bits(again).equals(bits(values.subarray(0, 10 * DIM)))).to.equal(true);
      expect(delta(c2, counters())).to.deep.equal({ rows: 0, created: 0, touched: 10, bytesIn: 10 * 8, bytesOut: 10 * DIM * 4 });
    });

    it('a push is applied exactly once: a retry with the same seq is a duplicate', async () => {
      const ids = distinctIds(1_000_000n, 50);
      const g = gradients(50 * DIM, 1);
      const c0 = counters();
      const first = await sparse.push('items', ids, g, 424242);
      expect(first).to.include({ seq: 424242, duplicateSlots: 0, rowsApplied: 50, rowsCreated: 50 });
      expect(first.appliedSlots).to.equal(new Set(ids.map((id) => slotOfId('items', id, SLOTS))).size);
      expect(delta(c0, counters())).to.deep.equal({ rows: 50, created: 50, touched: 50, bytesIn: 50 * (8 + DIM * 4), bytesOut: 0 });
      const want = expectedRows(ids).map((w, i) => w - LR * g[i]!);
      expect(bits(await sparse.pull('items', ids)).equals(bits(want)), 'one update').to.equal(true);
      const retry = await sparse.push('items', ids, g, 424242);
      expect(retry).to.include({ appliedSlots: 0, duplicateSlots: first.appliedSlots, rowsApplied: 0, rowsCreated: 0 });
      expect(bits(await sparse.pull('items', ids)).equals(bits(want)), 'still one update').to.equal(true);
      // The next seq applies again.
      expect((await sparse.push('items', ids, g)).rowsApplied).to.equal(50);
    });

    it('a repeated id in a push travels once, its gradients summed', async () => {
      const [x, y] = distinctIds(2_000_000n, 2);
      const g = gradients(3 * DIM, 2);
      const c0 = counters();
      const stats = await sparse.push('items', [x!, y!, x!], g);
      expect(stats.rowsApplied).to.equal(2);
      expect(delta(c0, counters()).bytesIn).to.equal(2 * (8 + DIM * 4));
      const init = expectedRows([x!, y!]);
      const got = await sparse.pull('items', [x!, y!]);
      for (let c = 0; c < DIM; c++) {
        expect(got[c]).to.equal(Math.fround(init[c]! - LR * Math.fround(g[c]! + g[2 * DIM + c]!)));
        expect(got[DIM + c]).to.equal(Math.fround(init[DIM + c]! - LR * g[DIM + c]!));
      }
    });

    it('splits large pulls and pushes into messages of at most maxMessageBytes, with the same result', async () => {
      const small = new SparseClient(sparse.client, { maxMessageBytes: 16 << 10 });
      const ids = distinctIds(3_000_000n, 3000);
      const whole = await sparse.pull('items', ids);
      const calls = small.traffic.calls;
      expect(bits(await small.pull('items', ids)).equals(bits(whole))).to.equal(true);
      // (16 KiB − 4 KiB) / 64 bytes a row: 192 rows a message.
      expect(small.traffic.calls - calls).to.be.at.least(Math.ceil(3000 / 192));
      const g = gradients(3000 * DIM, 3);
      const stats = await small.push('items', ids, g);
      expect(stats.rowsApplied).to.equal(3000);
      expect(stats.messages).to.be.at.least(Math.ceil((3000 * 72) / (12 << 10)));
      const want = whole.map((w, i) => w - LR * g[i]!);
      expect(bits(await sparse.pull('items', ids)).equals(bits(want))).to.equal(true);
      small.close();
    });

    it('the client refuses bad input before sending anything', async () => {
      const calls = sparse.traffic.calls;
      const ids = distinctIds(4_000_000n, 4);
      const nan = gradients(4 * DIM, 4);
      nan[DIM + 3] = NaN;
      const err = async (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e);
      expect(await err(sparse.push('items', ids, nan))).to.be.instanceOf(InvalidArgumentError).with.property('message').match(/non-finite value \(NaN\) for id #1, column 3/);
      expect(await err(sparse.push('items', ids, new Float32Array(3)))).to.be.instanceOf(InvalidArgumentError).with.property('message').match(/needs ids × dim = 64/);
      expect(await err(sparse.pull('nope', ids))).to.be.instanceOf(InvalidArgumentError).with.property('message').match(/unknown sparse table "nope".*items, users/);
      expect(await err(sparse.pull('items', [-1n]))).to.be.instanceOf(InvalidArgumentError);
      expect(sparse.traffic.calls).to.equal(calls);
      expect(await sparse.pull('items', [])).to.have.length(0);
    });

    describe('bad input over the wire gets its status and changes nothing', () => {
      let raw: ReturnType<typeof rawSparseClient>;
      let mine: bigint[];
      let theirs: bigint;
      before(() => {
        raw = rawSparseClient(cluster.shards[0]!.address);
        mine = distinctIds(5_000_000n, 400).filter((id) => ownerOf(id) === 0).slice(0, 20);
        theirs = distinctIds(5_000_000n, 400).find((id) => ownerOf(id) === 1)!;
      });
      after(() => raw.close());

      const g = () => gradients(20 * DIM, 5);
      const nan = () => {
        const b = g();
        b[5] = NaN;
        return b;
      };
      const push = (over: object = {}) => ({ epoch: 1, model: 'emb', table: 'items', workerId: 'w', seq: 1, ids: u64(mine), gradients: f32(g()), ...over });
      const pull = (over: object = {}) => ({ epoch: 1, model: 'emb', table: 'items', workerId: 'w', ids: u64(mine), ...over });
      const cases: { name: string; method: 'pull' | 'push'; req: () => object; code: status; reason?: string; match: RegExp }[] = [
        { name: 'ids not whole uint64', method: 'push', req: () => push({ ids: Buffer.alloc(8 * 20 - 1) }), code: status.INVALID_ARGUMENT, match: /159 bytes, not a whole number of little-endian uint64/ },
        { name: 'gradients not whole float32', method: 'push', req: () => push({ gradients: Buffer.alloc(4 * 20 * DIM - 3) }), code: status.INVALID_ARGUMENT, match: /not a whole number of little-endian float32/ },
        { name: 'ids and gradients disagree', method: 'push', req: () => push({ gradients: f32(gradients(19 * DIM, 1)) }), code: status.INVALID_ARGUMENT, match: /304 gradient values for 20 ids/ },
        { name: 'NaN gradient', method: 'push', req: () => push({ gradients: f32(nan()) }), code: status.INVALID_ARGUMENT, match: /non-finite value \(NaN\) at id #0, column 5/ },
        { name: 'unknown table', method: 'push', req: () => push({ table: 'nope' }), code: status.INVALID_ARGUMENT, match: /unknown sparse table "nope"/ },
        { name: 'unknown model', method: 'push', req: () => push({ model: 'resnet' }), code: status.INVALID_ARGUMENT, match: /unknown model "resnet"/ },
        { name: 'no ids', method: 'push', req: () => push({ ids: Buffer.alloc(0), gradients: Buffer.alloc(0) }), code: status.INVALID_ARGUMENT, match: /carries no ids/ },
        { name: 'no worker id', method: 'push', req: () => push({ workerId: '' }), code: status.INVALID_ARGUMENT, match: /no worker_id/ },
        { name: 'stale epoch', method: 'push', req: () => push({ epoch: 0 }), code: status.FAILED_PRECONDITION, reason: 'stale-epoch', match: /epoch 0 but the shard is at epoch 1/ },
        { name: 'a row owned by the other shard', method: 'push', req: () => push({ ids: u64([...mine.slice(0, 19), theirs]) }), code: status.FAILED_PRECONDITION, reason: 'moved', match: /owned by shard shard-1/ },
        { name: 'oversized message (17 MiB)', method: 'push', req: () => push({ gradients: Buffer.alloc(17 << 20) }), code: status.RESOURCE_EXHAUSTED, match: /./ },
        { name: 'pull: ids not whole uint64', method: 'pull', req: () => pull({ ids: Buffer.alloc(12) }), code: status.INVALID_ARGUMENT, match: /whole number of little-endian uint64/ },
        { name: 'pull: unknown table', method: 'pull', req: () => pull({ table: 'nope' }), code: status.INVALID_ARGUMENT, match: /unknown sparse table/ },
        { name: 'pull: stale epoch', method: 'pull', req: () => pull({ epoch: 0 }), code: status.FAILED_PRECONDITION, reason: 'stale-epoch', match: /epoch 0/ },
        { name: 'pull: a row owned by the other shard', method: 'pull', req: () => pull({ ids: u64([...mine, theirs]) }), code: status.FAILED_PRECONDITION, reason: 'moved', match: /owned by shard shard-1/ },
      ];

      for (const c of cases) {
        it(`${c.name} → ${status[c.code]}, no row created or changed`, async () => {
          // Some of the rows exist already (a zero gradient under sgd creates them and changes no value).
          await sparse.push('items', mine.slice(0, 10), new Float32Array(10 * DIM));
          const before = cluster.shards.map((s) => snapshotSparse(s.sparse));
          const res = await rawSparse<object>(raw, c.method, c.req());
          expect(res.ok, 'request should have been refused').to.equal(false);
          if (res.ok) return;
          expect(res.error.code, res.error.details).to.equal(c.code);
          expect(res.error.details).to.match(c.match);
          if (c.reason) expect(res.error.metadata.get('tessera-error')).to.deep.equal([c.reason]);
          if (c.reason === 'moved') {
            expect(res.error.metadata.get('tessera-slot')).to.deep.equal([String(slotOfId('items', theirs, SLOTS))]);
            expect(res.error.metadata.get('tessera-owner-address')).to.deep.equal([cluster.shards[1]!.address]);
          }
          const after = cluster.shards.map((s) => snapshotSparse(s.sparse));
          expect(after[0]!.equals(before[0]!) && after[1]!.equals(before[1]!), 'rows changed').to.equal(true);
        });
      }

      it('the shard still serves a valid request after all that, and describes its tables', async () => {
        const res = await rawSparse<SparsePushAck>(raw, 'push', push({ seq: 1 }));
        expect(res.ok && res.value.rowsApplied).to.equal(20);
        const p = await rawSparse<SparsePullReply>(raw, 'pull', pull());
        expect(p.ok && p.value.dim).to.equal(DIM);
        expect(p.ok && p.value.values.byteLength).to.equal(20 * DIM * 4);
        const d = await rawSparse<{ shardId: string; epoch: number; tables: SparseTableStats[] }>(raw, 'describe', {});
        if (!d.ok) return expect.fail(d.error.message);
        expect(d.value.shardId).to.equal('shard-0');
        expect(d.value.epoch).to.equal(1);
        expect(d.value.tables.map((t) => t.name)).to.deep.equal(['items', 'users']);
        expect(Number(d.value.tables[0]!.rows)).to.equal(items(0).rows);
      });
    });
  });

  describe('when the map changes', () => {
    let cluster: TestCluster;
    afterEach(async () => cluster.close());

    /** A store whose map changes are never announced: its readers learn of them only by re-reading. */
    class SilentStore extends MemoryMembershipStore {
      override watchMap(): () => void {
        return () => undefined;
      }
    }

    it('a client with a stale map is redirected and succeeds', async () => {
      cluster = await startCluster({ shards: 2, model: MODEL, slots: SLOTS, optimizer: { name: 'sgd', learningRate: LR } });
      const map = (await cluster.store.getMap())!;
      const quiet = new SilentStore();
      await quiet.createCluster(cluster.config);
      await quiet.casMap(0, map);
      const stale = await TesseraClient.connect({ store: quiet, workerId: 'stale' });
      const sparse = new SparseClient(stale);
      // Epoch 2 swaps the owners, behind the client's back.
      const swapped = { ...map, epoch: 2, owners: evenAssignment(['shard-1', 'shard-0'], SLOTS).map((o) => (o === 'shard-0' ? 'shard-1' : 'shard-0')) };
      await quiet.casMap(1, swapped);
      await cluster.store.casMap(1, swapped);
      for (const s of cluster.shards) await s.refresh();
      // The map gave each shard slots without a move: the new owners hold no values for them, so they
      // are lost until declared so on purpose (as `tessera reset-slots` does); they then start from initial values.
      for (const s of cluster.shards) s.resetLost([]);
      expect(stale.epoch).to.equal(1);
      const ids = distinctIds(7_000_000n, 200);
      const values = await sparse.pull('items', ids);
      expect(stale.epoch).to.equal(2);
      expect(bits(values).equals(bits(expectedRows(ids)))).to.equal(true);
      const g = gradients(200 * DIM, 6);
      const stats = await sparse.push('items', ids, g);
      expect(stats.rowsApplied).to.equal(200);
      expect(bits(await sparse.pull('items', ids)).equals(bits(expectedRows(ids).map((w, i) => w - LR * g[i]!)))).to.equal(true);
      // Every row lives on its new owner only.
      const rows = cluster.shards.map((s) => s.sparse.stats().find((t) => t.name === 'items')!.rows);
      expect(rows[0]! + rows[1]!).to.equal(200);
      sparse.close();
      await stale.close();
    });

    it('a client gives up after maxRedirections with a typed error', async () => {
      cluster = await startCluster({ shards: 2, model: MODEL, slots: SLOTS });
      // A store whose map is wrong and never gets fresher: every request is redirected.
      const liar = new MemoryMembershipStore();
      await liar.createCluster(cluster.config);
      const map = (await cluster.store.getMap())!;
      await liar.casMap(0, { ...map, owners: map.owners.map((o) => (o === 'shard-0' ? 'shard-1' : 'shard-0')) });
      const client = await TesseraClient.connect({ store: liar, workerId: 'w', maxRedirections: 2 });
      const sparse = new SparseClient(client);
      const err = await sparse.pull('items', distinctIds(0n, 10)).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(TooManyRedirectionsError);
      expect((err as TooManyRedirectionsError).last).to.be.instanceOf(MovedError);
      expect(cluster.shards.every((s) => s.sparse.stats().every((t) => t.rowsCreated === 0))).to.equal(true);
      sparse.close();
      await client.close();
    });
  });
});
