import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { thrown } from '../../helpers/expect-errors.js';
import { type ClusterConfig } from '../../../cluster/cluster-config.js';
import { type Consistency } from '../../../cluster/consistency.js';
import { InvalidArgumentError, MovedError, NotReadyError, ResourceExhaustedError, StaleEpochError, StepAheadError, type TesseraError } from '../../../cluster/errors.js';
import { type ModelSpec } from '../../../cluster/model-spec.js';
import { OPTIMIZERS, type OptimizerConfig, type OptimizerName, optimizerWithDefaults } from '../../../cluster/optimizer-config.js';
import { type ShardMap, evenAssignment } from '../../../cluster/shard-map.js';
import { idHalves, initialRow, rowSlot, tableHash } from '../../../cluster/sparse-keys.js';
import { groupIds, sumRows } from '../../../cluster/sparse-routing.js';
import { toIdHalves } from '../../../cluster/wire/sparse-values.js';
import { applyGradient, newState } from '../../../server/optimizers.js';
import { Shard } from '../../../server/shard.js';
import { SparseStore } from '../../../server/sparse-store.js';
import { snapshotSparse } from '../../helpers/raw-sparse.js';

/*
 * Sparse tables on one shard with no network: a 16-slot cluster, shards a and
 * b splitting the slots evenly at map epoch 3 (a owns 0-7). The dense tensor
 * has 16 × DIM elements, so each dense slot holds exactly one row's worth and
 * a row can be compared with a dense slot pushed the same gradients.
 */

const SLOTS = 16;
const EPOCH = 3;
const DIM = 6; // not a multiple of 4: the optimizers' unrolled bodies and their tails both run
const MODEL: ModelSpec = {
  name: 'unit-sparse',
  seed: 5,
  tensors: [{ name: 'w', shape: [SLOTS, DIM], init: { kind: 'constant', value: 0.5 } }],
  sparse: [
    { name: 'items', dim: DIM, init: { kind: 'uniform', low: -1, high: 1 } },
    { name: 'users', dim: DIM, init: { kind: 'constant', value: 0.5 } },
  ],
};
type Opt = Partial<OptimizerConfig> & { name: OptimizerName };
/** Hyper-parameters away from their defaults, so a mixed-up one shows. */
const OPTS: Record<OptimizerName, Opt> = {
  sgd: { name: 'sgd', learningRate: 0.25 },
  momentum: { name: 'momentum', learningRate: 0.1, momentum: 0.8 },
  adagrad: { name: 'adagrad', learningRate: 0.2, initialAccumulator: 0.3 },
  adam: { name: 'adam', learningRate: 0.05, beta1: 0.8, beta2: 0.95 },
};

function config(opt: Opt = OPTS.sgd, consistency: Consistency = 'async', initialWorkers = 1): ClusterConfig {
  return { name: 'unit', slots: SLOTS, model: MODEL, optimizer: optimizerWithDefaults(opt), consistency, initialWorkers };
}

function map(owners = evenAssignment(['b', 'a'], SLOTS), epoch = EPOCH): ShardMap {
  return { epoch, slots: SLOTS, owners, addresses: { a: '127.0.0.1:7001', b: '127.0.0.1:7002' } };
}

function shardAndStore(opt?: Opt, id = 'a', m: ShardMap | null = map(), consistency: Consistency = 'async', initialWorkers = 1): { shard: Shard; store: SparseStore } {
  const shard = new Shard(id, config(opt, consistency, initialWorkers));
  if (m) shard.setMap(m);
  return { shard, store: new SparseStore(config(opt, consistency, initialWorkers), shard) };
}

/** `n` distinct ids of `table` whose slots satisfy `where`, some with a high half (and 0, 2^64−1 where they fit). */
function idsWhere(table: string, n: number, where: (slot: number) => boolean): bigint[] {
  const t = tableHash(table);
  const out: bigint[] = [];
  const max = 0xffffffffffffffffn;
  const [mlo, mhi] = idHalves(max);
  if (where(rowSlot(t, mlo, mhi, SLOTS))) out.push(max);
  for (let i = 0n; out.length < n; i++) {
    const id = i > 0n && i % 3n === 0n ? (i << 32n) | 0x1234n : i;
    const [lo, hi] = idHalves(id);
    if (where(rowSlot(t, lo, hi, SLOTS))) out.push(id);
  }
  return out;
}
const ownedByA = (table: string, n: number) => idsWhere(table, n, (s) => s < 8);
const ownedByB = (table: string, n: number) => idsWhere(table, n, (s) => s >= 8);

/** The first values of the rows of `ids`, as a shard must create them. */
function expectedRows(table: string, ids: readonly bigint[]): Float32Array {
  const spec = MODEL.sparse!.find((t) => t.name === table)!;
  const out = new Float32Array(ids.length * spec.dim);
  ids.forEach((id, i) => {
    const [lo, hi] = idHalves(id);
    initialRow(spec.init, spec.dim, MODEL.seed, tableHash(table), lo, hi, out, i * spec.dim);
  });
  return out;
}

function gradients(n: number, seed: number): Float32Array {
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) g[i] = Math.fround(Math.sin(seed * 1000 + i * 7.1) * 0.5);
  return g;
}

const bits = (a: Float32Array | Uint32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function pull(store: SparseStore, table: string, ids: readonly bigint[], epoch = EPOCH) {
  return store.pull({ epoch, model: MODEL.name, table, workerId: 'w', ids: toIdHalves(ids) });
}

function push(store: SparseStore, table: string, ids: readonly bigint[], g: Float32Array, seq: number, workerId = 'w', epoch = EPOCH, clock?: number) {
  return store.push({ epoch, model: MODEL.name, table, workerId, seq, ids: toIdHalves(ids), gradients: g, ...(clock !== undefined ? { clock } : {}) });
}

describe('server/sparse-table', () => {
  describe('rows are created by the first push that touches them', () => {
    it('a pull answers each row not held with its deterministic first values, and creates none', () => {
      const { store } = shardAndStore();
      const ids = ownedByA('items', 40);
      const asked = [...ids, ids[3]!, ids[0]!];
      const first = pull(store, 'items', asked);
      expect(first.rowsTouched).to.equal(40);
      expect(first.dim).to.equal(DIM);
      expect(bits(first.values).equals(bits(expectedRows('items', asked)))).to.equal(true);
      const again = pull(store, 'items', asked);
      expect(bits(again.values).equals(bits(first.values))).to.equal(true);
      expect(store.stats().find((t) => t.name === 'items')).to.include({ rows: 0, rowsCreated: 0, bytes: 0, rowsTouched: 80, pulls: 2, pushes: 0 });
      expect(store.table('items').heldSlots(), 'not even an empty slot').to.deep.equal([]);
      expect(store.stats().find((t) => t.name === 'users')).to.include({ rows: 0, rowsCreated: 0 });
    });

    it('a push creates the rows it touches, from the same first values', () => {
      const { store } = shardAndStore();
      const ids = ownedByA('items', 10);
      const res = push(store, 'items', ids, new Float32Array(10 * DIM), 1);
      expect(res).to.include({ rowsCreated: 10, rowsApplied: 10 });
      // A zero gradient under sgd leaves the first values.
      expect(bits(pull(store, 'items', ids).values).equals(bits(expectedRows('items', ids)))).to.equal(true);
    });

    it('any shard creates the same row: the first values depend on (seed, table, id, column) only', () => {
      const ids = ownedByA('items', 30);
      const { store: a } = shardAndStore(OPTS.sgd, 'a');
      const { store: b } = shardAndStore(OPTS.adam, 'b', map(new Array<string>(SLOTS).fill('b'), 9));
      expect(bits(pull(a, 'items', ids).values).equals(bits(pull(b, 'items', ids, 9).values))).to.equal(true);
    });

    it('a pull answers rows held as they are, rows not held with their first values, and changes nothing', () => {
      const { store } = shardAndStore();
      const ids = ownedByA('items', 12);
      const g = gradients(4 * DIM, 3);
      push(store, 'items', ids.slice(0, 4), g, 1);
      const before = snapshotSparse(store);
      const trained = pull(store, 'items', ids.slice(0, 4)).values;
      const res = store.pull({ epoch: EPOCH, model: MODEL.name, table: 'items', ids: toIdHalves(ids) });
      expect(bits(res.values.subarray(0, 4 * DIM)).equals(bits(trained)), 'rows held: their trained values').to.equal(true);
      expect(bits(res.values.subarray(4 * DIM)).equals(bits(expectedRows('items', ids.slice(4)))), 'rows not held: their first values').to.equal(true);
      expect(snapshotSparse(store).equals(before), 'nothing created or changed').to.equal(true);
    });

    it('grows a slot\'s arrays without losing rows', () => {
      const { store } = shardAndStore(OPTS.adam);
      const ids = ownedByA('items', 2000);
      const g = gradients(2000 * DIM, 1);
      push(store, 'items', ids, g, 1);
      const once = pull(store, 'items', ids).values;
      // Some of the rows again, one push each into a fresh store, give the same bits.
      const { store: fresh } = shardAndStore(OPTS.adam);
      for (let i = 0; i < 2000; i += 499) {
        push(fresh, 'items', [ids[i]!], g.subarray(i * DIM, (i + 1) * DIM), i + 1);
        expect(bits(pull(fresh, 'items', [ids[i]!]).values).equals(bits(once.subarray(i * DIM, (i + 1) * DIM)))).to.equal(true);
      }
    });
  });

  describe('training sees the same bits now that pulls create no rows', () => {
    /*
     * Digests of one pull-then-push sequence, taken when a pull still created
     * the rows it read: every value pulled, then the values, optimizer state
     * and t of every row pushed, by id. Creating a row at its first push rather
     * than at its first pull must not move a bit of either.
     */
    const WHEN_PULLS_CREATED: Record<OptimizerName, string> = {
      sgd: '8baa5ea8b618324b60b2eecd122233d093cdc415053cc9320e32d8eadfcc6c99',
      momentum: '03377f4e1a298756f4efd654d9c5138b8fddffb90c2b1a175456daac09c0dd9a',
      adagrad: '15f236e86a4d5483118c871d0ae488b6e3a7cd1937e190bd4f697ccc246a8218',
      adam: 'f8d5de8928aacfd81be84825d39350efbbbe5af12199adebcc2a339ac18242de',
    };

    for (const name of OPTIMIZERS) {
      it(`${name}: pulls of rows not held between pushes give the values, state and t they gave before, and a dense slot's`, () => {
        const { store } = shardAndStore(OPTS[name]);
        const ids = ownedByA('items', 24);
        const [g1, g2] = [gradients(18 * DIM, 1), gradients(18 * DIM, 2)];
        const digest = createHash('sha256');
        // Rows 0-11 pulled first; 0-17 pushed (6 of them never pulled); all pulled (18-23 never pushed); 6-23 pushed; all pulled.
        digest.update(bits(pull(store, 'items', ids.slice(0, 12)).values));
        expect(store.table('items').rows, 'the pull created nothing').to.equal(0);
        expect(push(store, 'items', ids.slice(0, 18), g1, 1).rowsCreated).to.equal(18);
        digest.update(bits(pull(store, 'items', ids).values));
        expect(push(store, 'items', ids.slice(6), g2, 2).rowsCreated).to.equal(6);
        const last = pull(store, 'items', ids).values;
        digest.update(bits(last));
        const table = store.table('items');
        expect(table.rows).to.equal(24);
        for (const id of ids) {
          const [lo, hi] = idHalves(id);
          const rows = table.slot(rowSlot(table.hash, lo, hi, SLOTS))!;
          const r = rows.find(lo, hi);
          for (const a of [rows.values, rows.s1, rows.s2]) if (a) digest.update(bits(a.subarray(r * DIM, (r + 1) * DIM)));
          digest.update(bits(rows.steps.subarray(r, r + 1)));
        }
        expect(digest.digest('hex'), 'bits as when pulls created rows').to.equal(WHEN_PULLS_CREATED[name]);

        // The same numbers by hand: each row from its first values, by the dense optimizer's code.
        const optimizer = optimizerWithDefaults(OPTS[name]);
        ids.forEach((id, i) => {
          const want = newState(expectedRows('items', [id]), optimizer);
          if (i < 18) applyGradient(want, g1, i * DIM, optimizer);
          if (i >= 6) applyGradient(want, g2, (i - 6) * DIM, optimizer);
          expect(bits(last.subarray(i * DIM, (i + 1) * DIM)).equals(bits(want.values)), `${name}: row ${i}`).to.equal(true);
        });
      });
    }
  });

  describe('optimizers: a row is updated exactly as a dense slot', () => {
    for (const name of OPTIMIZERS) {
      it(`${name}: rows equal dense slots pushed the same gradients, with t counted per row`, () => {
        const { shard, store } = shardAndStore(OPTS[name]);
        // Rows x and y of table users (first values 0.5, as the dense tensor); x gets 3 updates, y 2.
        const [x, y] = ownedByA('users', 2);
        const steps: [bigint[], number[]][] = [
          [[x!, y!], [0, 1]],
          [[x!], [0]],
          [[y!, x!], [1, 0]],
        ];
        const dense = [0, 1]; // dense slot standing in for x, y
        for (let k = 0; k < steps.length; k++) {
          const [ids, which] = steps[k]!;
          const g = gradients(ids.length * DIM, k + 1);
          expect(push(store, 'users', ids, g, k + 1).rowsApplied).to.equal(ids.length);
          which.forEach((w, i) => {
            const s = dense[w]!;
            shard.push({ epoch: EPOCH, ranges: [{ begin: s, end: s + 1 }], workerId: 'w', seq: k + 1 }, g.slice(i * DIM, (i + 1) * DIM));
          });
        }
        const table = store.table('users');
        [x!, y!].forEach((id, w) => {
          const [lo, hi] = idHalves(id);
          const rows = table.slot(rowSlot(table.hash, lo, hi, SLOTS))!;
          const row = rows.find(lo, hi);
          const slot = shard.store.get(dense[w]!)!;
          const part = (a: Float32Array | null) => a && bits(a.subarray(row * DIM, (row + 1) * DIM));
          expect(part(rows.values)!.equals(bits(slot.values)), `${name} values of row ${w}`).to.equal(true);
          if (slot.s1) expect(part(rows.s1)!.equals(bits(slot.s1)), `${name} state 1 of row ${w}`).to.equal(true);
          if (slot.s2) expect(part(rows.s2)!.equals(bits(slot.s2)), `${name} state 2 of row ${w}`).to.equal(true);
          expect(rows.steps[row]).to.equal(slot.step);
        });
        expect(shard.store.get(0)!.step).to.equal(3);
        expect(shard.store.get(1)!.step).to.equal(2);
      });
    }
  });

  describe('a repeated id in one push', () => {
    for (const name of OPTIMIZERS) {
      it(`${name}: its gradients are summed (float64, in order, rounded once) and applied as one update`, () => {
        const ids = ownedByA('items', 3);
        const asked = [ids[0]!, ids[1]!, ids[0]!, ids[2]!, ids[0]!];
        const g = gradients(asked.length * DIM, 7);
        const { store: a } = shardAndStore(OPTS[name]);
        const res = push(a, 'items', asked, g, 1);
        expect(res.rowsApplied).to.equal(3);
        // The same push with each id once, carrying the summed gradient.
        const groups = groupIds(toIdHalves(asked), tableHash('items'), SLOTS);
        const summed = sumRows(groups, g, DIM);
        const distinct: bigint[] = [];
        for (let r = 0; r < groups.slots.length; r++) distinct.push((BigInt(groups.ids[2 * r + 1]!) << 32n) | BigInt(groups.ids[2 * r]!));
        const { store: b } = shardAndStore(OPTS[name]);
        push(b, 'items', distinct, summed, 1);
        expect(snapshotSparse(a).equals(snapshotSparse(b))).to.equal(true);
        const t = a.table('items');
        const [lo, hi] = idHalves(ids[0]!);
        const rows = t.slot(rowSlot(t.hash, lo, hi, SLOTS))!;
        expect(rows.steps[rows.find(lo, hi)]).to.equal(1);
      });
    }
  });

  describe('pushes apply once per (worker, seq) per slot', () => {
    it('a retry is a duplicate that changes nothing; another worker or seq applies', () => {
      const { store } = shardAndStore(OPTS.momentum);
      const ids = ownedByA('items', 50);
      const slots = new Set(ids.map((id) => rowSlot(tableHash('items'), ...idHalves(id), SLOTS))).size;
      const g = gradients(50 * DIM, 2);
      expect(push(store, 'items', ids, g, 10)).to.deep.equal({ epoch: EPOCH, appliedSlots: slots, duplicateSlots: 0, rowsApplied: 50, rowsCreated: 50 });
      const before = snapshotSparse(store);
      expect(push(store, 'items', ids, g, 10)).to.deep.equal({ epoch: EPOCH, appliedSlots: 0, duplicateSlots: slots, rowsApplied: 0, rowsCreated: 0 });
      expect(snapshotSparse(store).equals(before)).to.equal(true);
      expect(push(store, 'items', ids, g, 10, 'other').appliedSlots).to.equal(slots);
      expect(push(store, 'items', ids, g, 11).appliedSlots).to.equal(slots);
    });

    it('decides per slot: a retry reaching more slots applies only to the new ones', () => {
      const { store } = shardAndStore();
      const t = tableHash('items');
      const ids = ownedByA('items', 200);
      const slotOf = (id: bigint) => rowSlot(t, ...idHalves(id), SLOTS);
      const inFirst = ids.filter((id) => slotOf(id) < 4);
      push(store, 'items', inFirst, gradients(inFirst.length * DIM, 3), 5);
      const res = push(store, 'items', ids, gradients(ids.length * DIM, 4), 5);
      expect(res.duplicateSlots).to.equal(4);
      expect(res.appliedSlots).to.equal(4);
      expect(res.rowsApplied).to.equal(ids.length - inFirst.length);
    });

    it('dedup is per table: the same (worker, seq) applies to another table', () => {
      const { store } = shardAndStore();
      const users = new Set(ownedByA('users', 400));
      const ids = ownedByA('items', 400).filter((id) => users.has(id)).slice(0, 5);
      expect(ids).to.have.length(5);
      push(store, 'items', ids, gradients(5 * DIM, 1), 3);
      expect(push(store, 'users', ids, gradients(5 * DIM, 1), 3).rowsApplied).to.equal(5);
    });
  });

  describe('under bsp', () => {
    it('rows pushed for a step are summed, and move by their mean over the step\'s workers when it closes', () => {
      const { shard, store } = shardAndStore(OPTS.sgd, 'a', map(), 'bsp', 2);
      const ids = ownedByA('items', 6);
      const first = expectedRows('items', ids);
      const [g1, g2] = [gradients(6 * DIM, 1), gradients(3 * DIM, 2)];
      // Both workers join at step 0; worker 1 touches all six rows, worker 2 the first three.
      void shard.gate.beforePull('w1', 0, true, 1_000);
      void shard.gate.beforePull('w2', 0, true, 1_000);
      expect(push(store, 'items', ids, g1, 1, 'w1', EPOCH, 0)).to.include({ rowsApplied: 6 });
      expect(push(store, 'items', ids.slice(0, 3), g2, 1, 'w2', EPOCH, 0)).to.include({ rowsApplied: 3 });
      expect(push(store, 'items', ids.slice(0, 3), g2, 1, 'w2', EPOCH, 0), 'a retry').to.include({ rowsApplied: 0, appliedSlots: 0 });
      expect(bits(pull(store, 'items', ids).values).equals(bits(first)), 'nothing applied while the step is open').to.equal(true);
      shard.gate.afterPush('w1', 0, true);
      expect(bits(pull(store, 'items', ids).values).equals(bits(first)), 'one worker is still in the step').to.equal(true);
      shard.gate.afterPush('w2', 0, true);
      expect(shard.gate.closedSteps).to.equal(1);
      // Single-process training on the mean gradient: a row only worker 1 touched moves by g1 / 2.
      const mean = new Float32Array(6 * DIM);
      for (let i = 0; i < mean.length; i++) mean[i] = Math.fround(Math.fround(g1[i]! + (i < 3 * DIM ? g2[i]! : 0)) * 0.5);
      const want = Float32Array.from(first, (w, i) => Math.fround(w - Math.fround(0.25 * mean[i]!)));
      expect(bits(pull(store, 'items', ids).values).equals(bits(want))).to.equal(true);
    });

    it('a push for a step not yet open is refused and changes nothing; a push without a clock applies at once', () => {
      const { shard, store } = shardAndStore(OPTS.sgd, 'a', map(), 'bsp', 1);
      const ids = ownedByA('items', 3);
      void shard.gate.beforePull('w1', 0, true, 1_000);
      pull(store, 'items', ids);
      const before = snapshotSparse(store);
      expect(thrown(() => push(store, 'items', ids, gradients(3 * DIM, 4), 1, 'w1', EPOCH, 1))).to.be.instanceOf(StepAheadError);
      expect(thrown(() => push(store, 'items', ids, gradients(3 * DIM, 4), 2, 'w1', EPOCH, -1))).to.be.instanceOf(InvalidArgumentError);
      expect(snapshotSparse(store).equals(before)).to.equal(true);
      push(store, 'items', ids, gradients(3 * DIM, 4), 3, 'w1');
      expect(snapshotSparse(store).equals(before), 'a tool\'s unclocked push').to.equal(false);
    });
  });

  describe('bad input changes nothing and creates no row', () => {
    const mine = ownedByA('items', 20);
    const theirs = ownedByB('items', 1);
    const g = gradients(20 * DIM, 9);
    const withValue = (v: number) => {
      const b = g.slice();
      b[7 * DIM + 2] = v;
      return b;
    };
    const pushes: { name: string; req: (s: SparseStore) => unknown; error: new (...a: never[]) => TesseraError; match: RegExp }[] = [
      { name: 'unknown table', req: (s) => push(s, 'nope', mine, g, 1), error: InvalidArgumentError, match: /unknown sparse table "nope".*items, users/ },
      { name: 'unknown model', req: (s) => s.push({ epoch: EPOCH, model: 'resnet', table: 'items', workerId: 'w', seq: 1, ids: toIdHalves(mine), gradients: g }), error: InvalidArgumentError, match: /unknown model "resnet"/ },
      { name: 'no ids', req: (s) => push(s, 'items', [], new Float32Array(0), 1), error: InvalidArgumentError, match: /carries no ids/ },
      { name: 'half an id', req: (s) => s.push({ epoch: EPOCH, table: 'items', workerId: 'w', seq: 1, ids: new Uint32Array(3), gradients: g }), error: InvalidArgumentError, match: /whole uint64/ },
      { name: 'too few gradient values', req: (s) => push(s, 'items', mine, g.subarray(1), 1), error: InvalidArgumentError, match: /119 gradient values for 20 ids .* needs ids × dim = 120/ },
      { name: 'too many gradient values', req: (s) => push(s, 'items', mine, new Float32Array(121), 1), error: InvalidArgumentError, match: /121 gradient values/ },
      { name: 'NaN gradient', req: (s) => push(s, 'items', mine, withValue(NaN), 1), error: InvalidArgumentError, match: /non-finite value \(NaN\) at id #7, column 2/ },
      { name: '+Inf gradient', req: (s) => push(s, 'items', mine, withValue(Infinity), 1), error: InvalidArgumentError, match: /non-finite value \(Infinity\)/ },
      { name: '-Inf gradient', req: (s) => push(s, 'items', mine, withValue(-Infinity), 1), error: InvalidArgumentError, match: /non-finite value \(-Infinity\)/ },
      { name: 'no worker id', req: (s) => push(s, 'items', mine, g, 1, ''), error: InvalidArgumentError, match: /no worker_id/ },
      { name: 'negative seq', req: (s) => push(s, 'items', mine, g, -1), error: InvalidArgumentError, match: /non-negative integer/ },
      { name: 'stale epoch', req: (s) => push(s, 'items', mine, g, 1, 'w', EPOCH - 1), error: StaleEpochError, match: /epoch 2 but the shard is at epoch 3/ },
      { name: 'epoch from the future', req: (s) => push(s, 'items', mine, g, 1, 'w', EPOCH + 1), error: NotReadyError, match: /behind the caller's 4/ },
      { name: 'one row of a slot owned by another shard', req: (s) => push(s, 'items', [...mine.slice(0, 19), theirs[0]!], g, 1), error: MovedError, match: /is owned by shard b/ },
    ];
    const pulls: typeof pushes = [
      { name: 'pull: unknown table', req: (s) => pull(s, 'nope', mine), error: InvalidArgumentError, match: /unknown sparse table/ },
      { name: 'pull: no ids', req: (s) => pull(s, 'items', []), error: InvalidArgumentError, match: /carries no ids/ },
      { name: 'pull: stale epoch', req: (s) => pull(s, 'items', mine, EPOCH - 1), error: StaleEpochError, match: /stale|epoch 2/ },
      { name: 'pull: a row of a slot owned by another shard', req: (s) => pull(s, 'items', [...mine, ...theirs]), error: MovedError, match: /owned by shard b/ },
      { name: 'pull: a reply over the message limit', req: (s) => s.pull({ epoch: EPOCH, table: 'items', ids: new Uint32Array(2 * 800_000) }), error: ResourceExhaustedError, match: /over the \d+-byte limit/ },
    ];

    for (const c of [...pushes, ...pulls]) {
      it(`${c.name} → ${c.error.name}`, () => {
        const { store } = shardAndStore(OPTS.adam);
        // Some rows exist already (and some of them will be named by the bad request).
        push(store, 'items', mine.slice(0, 10), g.subarray(0, 10 * DIM), 100);
        const before = snapshotSparse(store);
        const err = thrown(() => c.req(store));
        expect(err, err.message).to.be.instanceOf(c.error);
        expect(err.message).to.match(c.match);
        expect(snapshotSparse(store).equals(before), 'rows changed').to.equal(true);
        // A refused push leaves no trace in the dedup state: the same seq applies now.
        expect(push(store, 'items', mine, g, 1).appliedSlots).to.be.greaterThan(0);
      });
    }

    it('a moved error names the first slot not owned and its owner', () => {
      const { store } = shardAndStore();
      const err = thrown(() => pull(store, 'items', [...mine, ...theirs])) as MovedError;
      expect(err.slot).to.equal(rowSlot(tableHash('items'), ...idHalves(theirs[0]!), SLOTS));
      expect(err.owner).to.equal('b');
      expect(err.ownerAddress).to.equal('127.0.0.1:7002');
    });

    it('a shard with no map answers NotReady and creates nothing', () => {
      const { store } = shardAndStore(OPTS.sgd, 'a', null);
      expect(thrown(() => pull(store, 'items', mine, 1))).to.be.instanceOf(NotReadyError);
      expect(store.stats().every((t) => t.rows === 0 && t.rowsCreated === 0)).to.equal(true);
    });

    it('a store refuses a model whose tables are malformed', () => {
      const bad: ClusterConfig = { ...config(), model: { ...MODEL, sparse: [{ name: 't', dim: 0, init: { kind: 'zeros' } }] } };
      expect(() => new SparseStore(bad, new Shard('a', config()))).to.throw(InvalidArgumentError, /dim 0/);
    });
  });
});
