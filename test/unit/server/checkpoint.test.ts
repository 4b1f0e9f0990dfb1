import { expect } from 'chai';
import { type ClusterConfig } from '../../../cluster/cluster-config.js';
import { CheckpointError } from '../../../cluster/errors.js';
import { type ModelSpec } from '../../../cluster/model-spec.js';
import { optimizerWithDefaults } from '../../../cluster/optimizer-config.js';
import { evenAssignment } from '../../../cluster/shard-map.js';
import { toIdHalves } from '../../../cluster/wire/sparse-values.js';
import { decodeCheckpoint, encodeCheckpoint } from '../../../server/checkpoint-format.js';
import { restore, snapshot } from '../../../server/checkpoint.js';
import { Shard } from '../../../server/shard.js';
import { SparseStore } from '../../../server/sparse-store.js';

/*
 * Checkpoints without files or network: a shard trained with adam (dense) and
 * adagrad (its table's own optimizer), snapshotted, encoded, decoded and
 * restored into a fresh shard, must hold the same bits and go on exactly as
 * the original does.
 */

const SLOTS = 16;
const D = 16 * 10 + 3; // slots of uneven length
const MODEL: ModelSpec = {
  name: 'unit-checkpoint',
  seed: 4,
  tensors: [{ name: 'w', shape: [D], init: { kind: 'uniform', low: -1, high: 1 } }],
  sparse: [{ name: 'items', dim: 5, init: { kind: 'uniform', low: -0.1, high: 0.1 }, optimizer: optimizerWithDefaults({ name: 'adagrad', learningRate: 0.3 }) }],
};
const CONFIG: ClusterConfig = { name: 'unit', slots: SLOTS, model: MODEL, optimizer: optimizerWithDefaults({ name: 'adam', learningRate: 0.01 }), consistency: 'async' };
const MAP = { epoch: 2, slots: SLOTS, owners: evenAssignment(['a'], SLOTS), addresses: { a: '127.0.0.1:1' } };
const ALL = [{ begin: 0, end: SLOTS }];

function shardOf(config = CONFIG): { shard: Shard; sparse: SparseStore } {
  const shard = new Shard('a', config);
  shard.setMap(MAP);
  return { shard, sparse: new SparseStore(config, shard) };
}

function gradient(seed: number): Float32Array {
  return Float32Array.from({ length: D }, (_, i) => Math.fround(Math.sin(seed * 31 + i) * 0.1));
}

const ids = (from: number, n: number) => toIdHalves(Array.from({ length: n }, (_, i) => BigInt(from + i) * 0x1_0000_0001n));
const rowGradients = (n: number, seed: number) => Float32Array.from({ length: n * 5 }, (_, i) => Math.fround(Math.cos(seed + i) * 0.2));

/** Dense values, state and update counts, and the sparse rows, bit for bit. */
function bitsOf(shard: Shard, sparse: SparseStore): Buffer {
  const parts: Buffer[] = [];
  for (const [s, slot] of shard.store.held()) {
    for (const a of [slot.values, slot.s1, slot.s2]) if (a) parts.push(Buffer.from(a.slice().buffer));
    parts.push(Buffer.from(`${s}:${slot.step};`));
  }
  const table = sparse.table('items');
  for (const s of table.heldSlots()) {
    const rows = table.slot(s)!;
    const n = rows.count;
    for (const a of [rows.ids.subarray(0, 2 * n), rows.steps.subarray(0, n), rows.values.subarray(0, 5 * n), rows.s1!.subarray(0, 5 * n)]) parts.push(Buffer.from(a.slice().buffer));
    parts.push(Buffer.from(`${s}:${n};`));
  }
  return Buffer.concat(parts);
}

function train(shard: Shard, sparse: SparseStore, from: number, steps: number): void {
  for (let k = from; k < from + steps; k++) {
    shard.push({ epoch: 2, ranges: ALL, workerId: 'w', seq: k }, gradient(k));
    sparse.push({ epoch: 2, table: 'items', workerId: 'w', seq: k, ids: ids(k * 3, 40), gradients: rowGradients(40, k) });
  }
}

const roundTrip = (shard: Shard, sparse: SparseStore) => decodeCheckpoint(Buffer.concat(encodeCheckpoint(snapshot(shard, sparse))), 'test');

describe('server/checkpoint', () => {
  it('a restored shard holds the same bits, and training on goes on exactly as on the original', () => {
    const a = shardOf();
    train(a.shard, a.sparse, 1, 6);
    const b = shardOf();
    const restored = restore(roundTrip(a.shard, a.sparse), b.shard, b.sparse, 'test');
    expect(restored.slots).to.equal(SLOTS);
    expect(restored.rows).to.equal(a.sparse.stats()[0]!.rows);
    expect(bitsOf(b.shard, b.sparse).equals(bitsOf(a.shard, a.sparse)), 'the same bits after restore').to.equal(true);
    // Adam's moments and t, adagrad's accumulators and per-row t: the next updates agree too.
    train(a.shard, a.sparse, 7, 3);
    train(b.shard, b.sparse, 7, 3);
    expect(bitsOf(b.shard, b.sparse).equals(bitsOf(a.shard, a.sparse)), 'the same bits three updates later').to.equal(true);
  });

  it('a restored shard still knows the pushes it applied: a retry of one is a duplicate', () => {
    const a = shardOf();
    train(a.shard, a.sparse, 1, 2);
    const b = shardOf();
    restore(roundTrip(a.shard, a.sparse), b.shard, b.sparse, 'test');
    const before = bitsOf(b.shard, b.sparse);
    expect(b.shard.push({ epoch: 2, ranges: ALL, workerId: 'w', seq: 2 }, gradient(2))).to.include({ appliedSlots: 0, duplicateSlots: SLOTS });
    expect(b.sparse.push({ epoch: 2, table: 'items', workerId: 'w', seq: 2, ids: ids(6, 40), gradients: rowGradients(40, 2) }).rowsApplied).to.equal(0);
    expect(bitsOf(b.shard, b.sparse).equals(before)).to.equal(true);
    expect(b.shard.push({ epoch: 2, ranges: ALL, workerId: 'w', seq: 3 }, gradient(3)).appliedSlots, 'a new push applies').to.equal(SLOTS);
  });

  it('reads a file from memory at any alignment', () => {
    const a = shardOf();
    train(a.shard, a.sparse, 1, 2);
    const bytes = Buffer.concat(encodeCheckpoint(snapshot(a.shard, a.sparse)));
    const shifted = Buffer.alloc(bytes.byteLength + 1).subarray(1);
    bytes.copy(shifted);
    const b = shardOf();
    restore(decodeCheckpoint(shifted, 'shifted'), b.shard, b.sparse, 'shifted');
    expect(bitsOf(b.shard, b.sparse).equals(bitsOf(a.shard, a.sparse))).to.equal(true);
  });

  it('refuses a file that is not a checkpoint, is damaged or truncated, naming what is wrong', () => {
    const a = shardOf();
    train(a.shard, a.sparse, 1, 1);
    const good = Buffer.concat(encodeCheckpoint(snapshot(a.shard, a.sparse)));
    const flipped = Buffer.from(good);
    flipped[good.byteLength >> 1]! ^= 0x40;
    for (const [bytes, message] of [
      [Buffer.from('hello, not a checkpoint at all'), /is not a Tessera checkpoint/],
      [flipped, /damaged: its CRC-32 does not match/],
      [good.subarray(0, good.byteLength - 100), /damaged/],
    ] as const) {
      expect(() => decodeCheckpoint(bytes, 'f.tessera-checkpoint')).to.throw(CheckpointError, message);
    }
  });

  it('refuses a checkpoint of another model, key space or optimizer, and restores nothing', () => {
    const a = shardOf();
    train(a.shard, a.sparse, 1, 1);
    const image = roundTrip(a.shard, a.sparse);
    const cases: [ClusterConfig, RegExp][] = [
      [{ ...CONFIG, optimizer: optimizerWithDefaults({ name: 'sgd' }) }, /optimizer "adam" \(this cluster: "sgd"\)/],
      [{ ...CONFIG, model: { ...MODEL, name: 'other' } }, /model "unit-checkpoint" \(this cluster: "other"\)/],
      [{ ...CONFIG, model: { ...MODEL, sparse: [{ ...MODEL.sparse![0]!, dim: 6 }] } }, /table items of dim 5 with adagrad \(this cluster: dim 6 with adagrad\)/],
    ];
    for (const [config, message] of cases) {
      const b = shardOf(config);
      const empty = bitsOf(b.shard, b.sparse);
      expect(() => restore(image, b.shard, b.sparse, 'f')).to.throw(CheckpointError, message);
      expect(bitsOf(b.shard, b.sparse).equals(empty), 'nothing restored').to.equal(true);
    }
  });
});
