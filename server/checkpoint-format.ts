import { crc32 } from 'node:zlib';
import { CheckpointError } from '../cluster/errors.js';
import { type OptimizerName, stateFloatsPerElement } from '../cluster/optimizer-config.js';
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
  let json = JSON.stringify(header);
  json += ' '.repeat((4 - ((8 + 4 + Buffer.byteLength(json)) % 4)) % 4);
  const head = Buffer.alloc(12);
  head.write(CHECKPOINT_MAGIC, 0, 'latin1');
  const jsonBytes = Buffer.from(json, 'utf8');
  head.writeUInt32LE(jsonBytes.byteLength, 8);
  const pieces: Buffer[] = [head, jsonBytes];
  const add = (a: Float32Array | Uint32Array) => pieces.push(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  for (const d of image.dense) {
    add(d.values);
    for (const s of d.state) add(s);
  }
  for (const s of image.sparse) {
    add(s.ids);
    add(s.steps);
    add(s.values);
    for (const st of s.state) add(st);
  }
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
  if (bytes.byteLength < 16 || bytes.toString('latin1', 0, 8) !== CHECKPOINT_MAGIC) throw bad(`is not a Tessera checkpoint (no ${CHECKPOINT_MAGIC} header)`);
  const stored = bytes.readUInt32LE(bytes.byteLength - 4);
  if ((crc32(bytes.subarray(0, bytes.byteLength - 4)) >>> 0) !== stored) throw bad('is damaged: its CRC-32 does not match (truncated or changed since it was written)');
  const length = bytes.readUInt32LE(8);
  if (12 + length > bytes.byteLength - 4) throw bad('is damaged: its header runs past the end');
  let header: CheckpointHeader;
  try {
    header = JSON.parse(bytes.toString('utf8', 12, 12 + length)) as CheckpointHeader;
  } catch (err) {
    throw bad(`has an unreadable header (${(err as Error).message})`);
  }
  if (header.format !== CHECKPOINT_FORMAT) throw bad(`is format ${header.format}; this Tessera reads format ${CHECKPOINT_FORMAT}`);
  let at = 12 + length;
  const end = bytes.byteLength - 4;
  const aligned = bytes.byteOffset % 4 === 0;
  const take = <T extends Float32Array | Uint32Array>(n: number, make: (b: ArrayBufferLike, offset: number, length: number) => T): T => {
    const size = n * 4;
    if (!(Number.isInteger(n) && n >= 0) || at + size > end) throw bad('is damaged: its arrays are shorter than its header says');
    const out = aligned ? make(bytes.buffer, bytes.byteOffset + at, n) : make(bytes.buffer.slice(bytes.byteOffset + at, bytes.byteOffset + at + size), 0, n);
    at += size;
    return out;
  };
  const f32 = (n: number) => take(n, (b, o, l) => new Float32Array(b, o, l));
  const u32 = (n: number) => take(n, (b, o, l) => new Uint32Array(b, o, l));
  const states = (optimizer: string, n: number) => Array.from({ length: stateFloatsPerElement(optimizer as OptimizerName) }, () => f32(n));
  const dense = header.dense.map((d) => ({ slot: d.slot, step: d.step, dedup: d.dedup, values: f32(d.length), state: states(header.optimizer, d.length) }));
  const sparse = header.sparse.map((s) => {
    const table = header.tables[s.table];
    if (table === undefined) throw bad(`names sparse table "${s.table}" without its dim`);
    const n = s.count * table.dim;
    return { table: s.table, slot: s.slot, count: s.count, dedup: s.dedup, ids: u32(2 * s.count), steps: u32(s.count), values: f32(n), state: states(table.optimizer, n) };
  });
  if (at !== end) throw bad('is damaged: it holds more bytes than its header lists');
  const { dense: _d, sparse: _s, ...rest } = header;
  return { header: rest, dense, sparse };
}
