import { crc32 } from 'node:zlib';
import { CheckpointError } from '../cluster/errors.js';
import { type OptimizerName, stateFloatsPerElement } from '../cluster/optimizer-config.js';
import { FrameReader, frameArrays } from './array-frame.js';
import { type DedupImage } from './push-dedup.js';

/**
 * The checkpoint file: one shard's slots as they stood at one instant, each
 * slot whole — values, optimizer state, update count and the pushes it
 * applied — dense and sparse (docs/checkpoints.md).
 *
 *     "TSRCKPT1"                 8 bytes, the format's magic and version
 *     header length H            uint32 LE
 *     header                     H bytes of UTF-8 JSON (CheckpointHeader), padded with spaces to a multiple of 4
 *     arrays                     little-endian, in the order the header lists them (below)
 *     CRC-32                     uint32 LE, of every byte before it
 *
 * (all but the CRC framed as array-frame.ts writes it)
 *
 * Arrays, per dense slot in header order: values, then each optimizer state
 * array (momentum's or adagrad's one, adam's two: stateFloatsPerElement),
 * `length` floats each. Per sparse slot: ids (2 × count uint32, lo/hi
 * halves), update counts (count uint32), values (count × dim floats), then
 * the state arrays of the table's optimizer likewise.
 */


export const CHECKPOINT_MAGIC = 'TSRCKPT1';
export const CHECKPOINT_FORMAT = 1;

/** What a checkpoint belongs to: a shard restores only into the same cluster shape, model and optimizer. */
export interface CheckpointIdentity {
  cluster: string;
  model: string;
  seed: number;
  slots: number;
  elements: number;
  /** The dense tensors' optimizer. */
  optimizer: string;
  /** Sparse tables by name: row dim and optimizer (a table may have its own). */
  tables: Record<string, { dim: number; optimizer: string }>;
}

export interface CheckpointHeader extends CheckpointIdentity {
  format: number;
  shard: string;
  /** The shard's map epoch when the snapshot was taken. */
  epoch: number;
  /** Under bsp: steps applied. */
  closedSteps: number;
  createdAt: string;
  /** Written as the shard shut down, after its last request was answered: it holds every push the shard acknowledged. */
  closing?: boolean;
  dense: { slot: number; length: number; step: number; dedup: DedupImage[] }[];
  sparse: { table: string; slot: number; count: number; dedup: DedupImage[] }[];
}

export interface DenseSlotImage {
  slot: number;
  step: number;
  values: Float32Array;
  /** `stateArrays` arrays of values.length. */
  state: Float32Array[];
  dedup: DedupImage[];
}

export interface SparseSlotImage {
  table: string;
  slot: number;
  count: number;
  ids: Uint32Array;
  steps: Uint32Array;
  values: Float32Array;
  state: Float32Array[];
  dedup: DedupImage[];
}

export interface CheckpointImage {
  header: Omit<CheckpointHeader, 'dense' | 'sparse'>;
  dense: DenseSlotImage[];
  sparse: SparseSlotImage[];
}

/** The file's bytes, as pieces to write in order (the arrays are not copied again). */
export function encodeCheckpoint(image: CheckpointImage): Buffer[] {
  const header: CheckpointHeader = {
    ...image.header,
    dense: image.dense.map((d) => ({ slot: d.slot, length: d.values.length, step: d.step, dedup: d.dedup })),
    sparse: image.sparse.map((s) => ({ table: s.table, slot: s.slot, count: s.count, dedup: s.dedup })),
  };
  const arrays = [...image.dense.flatMap((d) => [d.values, ...d.state]), ...image.sparse.flatMap((s) => [s.ids, s.steps, s.values, ...s.state])];
  const pieces = frameArrays(CHECKPOINT_MAGIC, header, arrays);
  let crc = 0;
  for (const p of pieces) crc = crc32(p, crc);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(crc >>> 0, 0);
  pieces.push(tail);
  return pieces;
}

/**
 * A checkpoint read back from its bytes. The arrays are views of `bytes`
 * (its arrays lie at multiples of 4 from its start), or copies where `bytes`
 * itself is not 4-byte aligned; keep `bytes` unchanged while they are used.
 *
 * @throws CheckpointError naming what is wrong: not a checkpoint, another
 *   format version, damaged (CRC), or lengths that do not add up.
 */
export function decodeCheckpoint(bytes: Buffer, source: string): CheckpointImage {
  const bad = (what: string) => new CheckpointError(`${source} ${what}`);
  const end = bytes.byteLength - 4;
  if (end < 12 || bytes.toString('latin1', 0, 8) !== CHECKPOINT_MAGIC) throw bad(`is not a Tessera checkpoint (no ${CHECKPOINT_MAGIC} header)`);
  if ((crc32(bytes.subarray(0, end)) >>> 0) !== bytes.readUInt32LE(end)) throw bad('is damaged: its CRC-32 does not match (truncated or changed since it was written)');
  const frame = new FrameReader<CheckpointHeader>(bytes, end, CHECKPOINT_MAGIC, 'a Tessera checkpoint', bad);
  const header = frame.header;
  if (header.format !== CHECKPOINT_FORMAT) throw bad(`is format ${String(header.format).slice(0, 40)}; this Tessera reads format ${CHECKPOINT_FORMAT}`);
  // The header is JSON from whoever wrote the bytes (a move's payload comes over the network): its shape is checked before use.
  if (!Array.isArray(header.dense) || !Array.isArray(header.sparse) || typeof header.tables !== 'object' || header.tables === null) throw bad('has a header without its dense and sparse slot lists');
  const count = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  for (const d of header.dense) if (!count(d?.slot) || !count(d?.length) || !count(d?.step) || !Array.isArray(d?.dedup)) throw bad('lists a dense slot without its slot, length, step and applied pushes');
  for (const s of header.sparse) if (!count(s?.slot) || !count(s?.count) || typeof s?.table !== 'string' || !Array.isArray(s?.dedup)) throw bad('lists sparse rows without their slot, count, table and applied pushes');
  const states = (optimizer: string, n: number) => Array.from({ length: stateFloatsPerElement(optimizer as OptimizerName) }, () => frame.f32(n));
  const dense = header.dense.map((d) => ({ slot: d.slot, step: d.step, dedup: d.dedup, values: frame.f32(d.length), state: states(header.optimizer, d.length) }));
  const sparse = header.sparse.map((s) => {
    const table = header.tables[s.table];
    if (typeof table !== 'object' || table === null) throw bad(`names sparse table "${s.table.slice(0, 80)}" without its dim`);
    const n = s.count * table.dim;
    return { table: s.table, slot: s.slot, count: s.count, dedup: s.dedup, ids: frame.u32(2 * s.count), steps: frame.u32(s.count), values: frame.f32(n), state: states(table.optimizer, n) };
  });
  frame.finish();
  const { dense: _d, sparse: _s, ...rest } = header;
  return { header: rest, dense, sparse };
}
