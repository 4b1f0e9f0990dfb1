import { expect } from 'chai';
import { thrown } from '../../helpers/expect-errors.js';
import { type ClusterConfig } from '../../../cluster/cluster-config.js';
import { InvalidArgumentError, ResourceExhaustedError } from '../../../cluster/errors.js';
import { type ModelSpec } from '../../../cluster/model-spec.js';
import { optimizerWithDefaults } from '../../../cluster/optimizer-config.js';
import { evenAssignment } from '../../../cluster/shard-map.js';
import { idHalves, rowSlot, tableHash } from '../../../cluster/sparse-keys.js';
import { toIdHalves } from '../../../cluster/wire/sparse-values.js';
import { restore, snapshot } from '../../../server/checkpoint.js';
import { Shard } from '../../../server/shard.js';
import { DEFAULT_MAX_SPARSE_ROWS } from '../../../server/sparse-row-cap.js';
import { SparseStore } from '../../../server/sparse-store.js';
import { snapshotSparse } from '../../helpers/raw-sparse.js';

/*
 * The cap on a sparse table's rows per shard, with no network: one shard
 * owning every slot of a 16-slot cluster, a table of dim 4 under adagrad.
 * Pulls create nothing; a push that would create rows past the cap is refused
 * whole; pushes to rows held go on.
 */

const SLOTS = 16;
const EPOCH = 2;
const DIM = 4;
const MODEL: ModelSpec = {
  name: 'capped',
  seed: 7,
  tensors: [{ name: 'w', shape: [SLOTS], init: { kind: 'zeros' } }],
  sparse: [
    { name: 'items', dim: DIM, init: { kind: 'uniform', low: -1, high: 1 } },
    { name: 'users', dim: DIM, init: { kind: 'zeros' } },
  ],
};
const CONFIG: ClusterConfig = { name: 'unit', slots: SLOTS, model: MODEL, optimizer: optimizerWithDefaults({ name: 'adagrad', learningRate: 0.1 }), consistency: 'async', initialWorkers: 1 };

function shardAndStore(cap?: number): { shard: Shard; store: SparseStore } {
  const shard = new Shard('a', CONFIG);
  shard.setMap({ epoch: EPOCH, slots: SLOTS, owners: evenAssignment(['a'], SLOTS), addresses: { a: '127.0.0.1:7001' } });
  return { shard, store: new SparseStore(CONFIG, shard, cap === undefined ? {} : { maxRowsPerTable: cap }) };
}
const capped = (cap?: number) => shardAndStore(cap).store;

/** Ids from..from+n−1. */
const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => BigInt(from + i));
const ones = (ids: readonly bigint[]) => new Float32Array(ids.length * DIM).fill(0.5);
const push = (s: SparseStore, ids: readonly bigint[], seq: number, table = 'items') => s.push({ epoch: EPOCH, table, workerId: 'w', seq, ids: toIdHalves(ids), gradients: ones(ids) });
const pull = (s: SparseStore, ids: readonly bigint[]) => s.pull({ epoch: EPOCH, table: 'items', ids: toIdHalves(ids) }).values;
const stats = (s: SparseStore, table = 'items') => s.stats().find((t) => t.name === table)!;

describe('server/sparse-row-cap', () => {
  it('pulls of many ids not held create no row and hold no memory', () => {
    const store = capped();
    push(store, range(0, 100), 1);
    const before = snapshotSparse(store);
    const held = stats(store);
    // 200 000 new ids, 20 000 a pull: the old behaviour held ≈ 200 000 rows (≈ 10 MB) after these.
    for (let k = 0; k < 10; k++) expect(pull(store, range(1_000 + 20_000 * k, 20_000))).to.have.length(20_000 * DIM);
    expect(stats(store)).to.include({ rows: 100, rowsCreated: 100, bytes: held.bytes, pulls: 10 });
    expect(snapshotSparse(store).equals(before), 'nothing created or changed').to.equal(true);
  });

  it('a push that would create rows past the cap is refused whole; pushes to rows held and pulls go on', () => {
    const store = capped(10);
    expect(push(store, range(0, 8), 1)).to.include({ rowsCreated: 8 });
    const before = snapshotSparse(store);
    const values = pull(store, range(0, 8));

    // 2 rows held and 3 new: 11 > 10. Refused whole, naming the table, the shard, the cap and the flag.
    const err = thrown(() => push(store, [...range(6, 2), ...range(100, 3)], 2));
    expect(err).to.be.instanceOf(ResourceExhaustedError);
    expect(err.message).to.match(/sparse table items is full on shard a: it holds 8 rows and this push would create 3 more, over the cap of 10 rows per table per shard \(--max-sparse-rows\); nothing was applied/);
    expect(snapshotSparse(store).equals(before), 'nothing applied, not even to the rows held').to.equal(true);

    // Rows held still take pushes; pulls of rows not held still answer their first values.
    expect(push(store, range(0, 8), 3)).to.include({ rowsApplied: 8, rowsCreated: 0 });
    expect(pull(store, range(0, 8))).to.not.deep.equal(values);
    const fresh = pull(store, range(100, 3));
    expect(Array.from(fresh).some((v) => v !== 0), 'first values').to.equal(true);
    expect(stats(store).rows).to.equal(8);

    // Up to the cap exactly: a repeated id counts once.
    expect(push(store, [8n, 9n, 8n, 0n], 4)).to.include({ rowsCreated: 2, rowsApplied: 3 });
    expect(stats(store).rows).to.equal(10);
    expect(thrown(() => push(store, [10n], 5))).to.be.instanceOf(ResourceExhaustedError);
    // The refused seq left no trace: it applies once there is room (here: to rows held).
    expect(push(store, [1n], 2)).to.include({ appliedSlots: 1, rowsApplied: 1 });
    // Another table has its own cap.
    expect(push(store, range(0, 10), 6, 'users')).to.include({ rowsCreated: 10 });
  });

  it('slots that applied the push already create nothing and are not counted: a retry at the cap is a duplicate, not refused', () => {
    const store = capped(6);
    const ids = range(0, 6);
    const first = push(store, ids, 1);
    expect(first.rowsCreated).to.equal(6);
    // A new id in a slot that applied seq 1: that slot skips its rows, so the retry creates nothing.
    const t = tableHash('items');
    const slotOf = (id: bigint) => rowSlot(t, ...idHalves(id), SLOTS);
    const slots = new Set(ids.map(slotOf));
    const sameSlot = range(1000, 200).find((id) => slots.has(slotOf(id)))!;
    expect(push(store, [...ids, sameSlot], 1)).to.include({ appliedSlots: 0, duplicateSlots: first.appliedSlots, rowsCreated: 0 });
    // Under another seq the same push would create that row: refused.
    expect(thrown(() => push(store, [...ids, sameSlot], 2)).message).to.match(/holds 6 rows and this push would create 1 more/);
  });

  it('rows from a checkpoint or a move are taken past the cap; then only pushes to rows held apply', () => {
    const big = shardAndStore(100);
    push(big.store, range(0, 20), 1);
    const image = snapshot(big.shard, big.store);
    const { shard, store: small } = shardAndStore(5);
    expect(restore(image, shard, small, 'a test image').rows).to.equal(20);
    expect(stats(small).rows).to.equal(20);
    expect(push(small, range(0, 20), 2)).to.include({ rowsApplied: 20, rowsCreated: 0 });
    expect(thrown(() => push(small, [20n], 3)).message).to.match(/holds 20 rows and this push would create 1 more, over the cap of 5/);
  });

  it('a cap that is not a whole number of at least 1 is refused at start; the default is 8 000 000', () => {
    for (const bad of [0, -1, 1.5, NaN]) expect(() => capped(bad)).to.throw(InvalidArgumentError, /--max-sparse-rows/);
    expect(capped().maxRowsPerTable).to.equal(DEFAULT_MAX_SPARSE_ROWS).and.to.equal(8_000_000);
  });
});
