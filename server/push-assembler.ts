import { InvalidArgumentError } from '../cluster/errors.js';
import { type Compression } from '../cluster/wire/gradient-codec.js';
import { copyBytes } from '../cluster/wire/dense-values.js';
import { EncodedPush } from './encoded-push.js';
import { type GradientPool } from './gradient-pool.js';
import { type OpenPush, type PushHeader, type PushResult, type Shard } from './shard.js';

/** A push's header as an edge parsed it: what Shard.push takes, and how its gradient travels. */
export interface AssembledPushHeader extends PushHeader {
  /** The gradient's codec (`none`: float32). */
  compression: Compression;
  /** Bytes of the encoded gradient the header announces; read only for codecs other than float32. */
  wireBytes: number;
  /** Values the header announces (the bulk wire does); checked against the slots before anything is allocated. */
  length?: number;
}

/**
 * What the `offset` of a float32 piece counts: float32 elements (gRPC's
 * PushChunk.offset) or bytes (the bulk wire, whose frames may split a value).
 * Encoded pieces are always at byte offsets into the encoded gradient.
 */
export type OffsetUnit = 'element' | 'byte';

/**
 * Values a float32 push is received into at most, beside the largest slot it
 * covers: 1 MiB. A push's slots are applied as they complete, so its values
 * pass through a window this large rather than a buffer of the whole push.
 */
export const PUSH_WINDOW_VALUES = 1 << 18;

/**
 * What a push's call holds besides its values (grpc-js's call and stream
 * state, the bulk connection's bookkeeping; ≈ 20 KiB measured), taken from the
 * shard's budget of bytes in flight from its header on: calls kept open on a
 * header alone are bounded by the budget too (1 GiB: 32 768 of them).
 */
export const PUSH_CALL_BYTES = 32 << 10;

/**
 * One dense push being received, shared by the gRPC and bulk edges (which
 * only read messages or frames and answer). Constructing it admits the push:
 * worker id, seq, clock, ownership, ranges, epoch, the announced length and
 * the encoded size are checked before a buffer is taken from the pool, so a
 * refused push allocates nothing. Pieces must then arrive in order and cover
 * the gradient exactly.
 *
 * Float32 pushes are applied slot by slot while they arrive: their bytes go
 * into a window of {@link PUSH_WINDOW_VALUES} (or the largest slot, if
 * larger), and as soon as a slot's last value is in, the slot is checked and
 * applied (Shard.applySlots), its values still in cache, while the rest of the
 * push is on the wire; the window then slides past the applied slots. So a
 * push holds at most a window of memory, whatever its size, and takes it only
 * once its first values arrive. A push under a codec is decoded once its last
 * byte is in, then applied the same way. Either way each slot is all or
 * nothing, and a push refused part-way keeps the slots before the refusal
 * (docs/wire-protocol.md, "Push").
 * The edge calls {@link release} once the push is settled, whatever happened.
 */
export class PushAssembler {
  /** Float32: the window; under a codec, the decoded gradient (taken once every encoded byte is in). */
  private buffer: Float32Array | null = null;
  private settled = false;
  /** Every codec but float32: the encoded bytes, decoded by {@link apply}. */
  private readonly encoded: EncodedPush | null = null;
  /** Float32: the window's size in values (taken from the pool with the first bytes), its bytes, and the push's element at its start (always a slot boundary). */
  private readonly windowValues: number = 0;
  private windowBytes: Buffer | null = null;
  private base = 0;
  /** Bytes of the shard's budget this push holds for its call (given back on release). */
  private charged = 0;
  /** Float32 bytes received. */
  private received = 0;
  /** Values the push's slots hold. */
  readonly length: number;
  /** Seconds spent applying its slots so far (Shard.applySlots: checks and the optimizer), for the shard's metrics. */
  applySeconds = 0;
  /** The push on the shard: its slots, and how many were applied. */
  private readonly open: OpenPush;

  /** @throws the typed error of Shard.beginPush, or InvalidArgumentError for a length or encoded size the slots do not match. */
  constructor(
    private readonly shard: Shard,
    private readonly pool: GradientPool,
    readonly header: AssembledPushHeader,
    readonly unit: OffsetUnit,
  ) {
    // What the push's call holds besides its values (its stream, its buffers), counted from its header on.
    pool.budget.take(PUSH_CALL_BYTES, 'a push');
    this.charged = PUSH_CALL_BYTES;
    // Refused anywhere below, the push gives back what it took: the edge never holds it to release.
    try {
      this.open = shard.beginPush({ epoch: header.epoch, ranges: header.ranges, workerId: header.workerId, seq: header.seq, model: header.model, ...(header.clock !== undefined ? { clock: header.clock } : {}) });
      // The push's slots in order and where each ends (Shard.beginPush worked them out): its length and each slot's.
      const { ends } = this.open;
      this.length = ends.length > 0 ? ends[ends.length - 1]! : 0;
      const expected = this.length;
      if (header.length !== undefined && header.length !== expected) throw new InvalidArgumentError(`push carries ${header.length} values but slots of the request hold ${expected}`);
      const lengths = ends.map((end, k) => end - (k === 0 ? 0 : ends[k - 1]!));
      if (header.compression.kind !== 'none') {
        this.encoded = new EncodedPush(header.compression, lengths, header.wireBytes, pool.budget);
      } else {
        this.windowValues = Math.min(expected, lengths.reduce((most, n) => Math.max(most, n), PUSH_WINDOW_VALUES));
      }
    } catch (err) {
      this.release();
      throw err;
    }
  }

  /** Bytes the gradient took on the wire: the encoded size, or 4 per value. */
  get wireBytes(): number {
    return this.encoded ? this.encoded.wireBytes : this.length * 4;
  }

  /**
   * Keeps `piece` at `offset`: in bytes of the encoded gradient under a codec;
   * for float32, in this assembler's {@link unit}, applying every slot the
   * piece completes.
   * @throws InvalidArgumentError for a piece out of order, past the end, or (element offsets) not whole float32 values; the typed error of Shard.applySlots for a slot refused.
   */
  write(piece: Uint8Array, offset: number): void {
    this.live();
    if (this.encoded) return this.encoded.write(piece, offset);
    const total = this.length * 4;
    if (this.unit === 'byte') {
      if (offset !== this.received) throw new InvalidArgumentError(`push bytes at offset ${offset} arrived where offset ${this.received} was expected; send them in order`);
      if (offset + piece.byteLength > total) throw new InvalidArgumentError(`push carries more than the ${total} bytes its slots hold`);
    } else {
      if (piece.byteLength % 4 !== 0) throw new InvalidArgumentError(`push chunk at offset ${offset} has ${piece.byteLength} bytes, not a whole number of float32 values`);
      if (offset * 4 !== this.received) throw new InvalidArgumentError(`push chunk at offset ${offset} arrived where offset ${this.received / 4} was expected; send chunks in order`);
      if (this.received + piece.byteLength > total) throw new InvalidArgumentError(`push carries more than the ${this.length} values its slots hold`);
    }
    // Memory is taken when values arrive, not on the header alone: gRPC's first
    // message carries the header with values empty, and that takes nothing.
    if (piece.byteLength === 0) return;
    if (!this.windowBytes) {
      this.buffer = this.pool.acquire(this.windowValues, 'a push’s window');
      this.windowBytes = Buffer.from(this.buffer.buffer, this.buffer.byteOffset, this.windowValues * 4);
    }
    const window = this.windowBytes;
    let rest = piece;
    while (rest.byteLength > 0) {
      let at = this.received - this.base * 4;
      if (at === window.byteLength) {
        this.slide();
        at = this.received - this.base * 4;
      }
      const take = Math.min(rest.byteLength, window.byteLength - at);
      copyBytes(rest.subarray(0, take), window.subarray(at, at + take));
      this.received += take;
      rest = rest.subarray(take);
      this.applyUpTo(Math.floor(this.received / 4));
    }
  }

  /**
   * Completes the push: checks that every piece came, decodes and applies an
   * encoded gradient, and closes the push on the shard.
   * @throws InvalidArgumentError when pieces are missing or do not decode (no slot of an encoded push is then applied); what Shard.applySlots throws.
   */
  apply(): PushResult & { wireBytes: number } {
    this.live();
    if (this.encoded) {
      this.buffer = this.pool.acquire(this.length, 'an encoded push’s decoded gradient');
      this.encoded.decodeInto(this.buffer);
      this.encoded.release();
      this.applyUpTo(this.length);
    } else if (this.received !== this.length * 4) {
      throw new InvalidArgumentError(this.unit === 'byte' ? `push carries ${this.received} bytes but its slots hold ${this.length * 4}` : `push carries ${this.received / 4} values but its slots hold ${this.length}`);
    }
    return { ...this.shard.endPush(this.open), wireBytes: this.wireBytes };
  }

  /** Gives the buffer back to the pool; later calls do nothing, and the assembler is done. */
  release(): void {
    this.pool.budget.give(this.charged);
    this.charged = 0;
    this.encoded?.release();
    if (this.buffer) this.pool.release(this.buffer);
    this.buffer = null;
    this.settled = true;
  }

  /** Applies every slot whose values all lie below `values` (all in the buffer). A refused slot ends the push: nothing after it is applied. */
  private applyUpTo(values: number): void {
    const { ends } = this.open;
    let until = this.open.next;
    while (until < ends.length && ends[until]! <= values) until++;
    if (until === this.open.next) return;
    const started = performance.now();
    try {
      this.shard.applySlots(this.open, until, this.buffer!, this.base);
    } catch (err) {
      this.release();
      throw err;
    } finally {
      this.applySeconds += (performance.now() - started) / 1000;
    }
  }

  /** Moves the window's start to the first slot not yet applied, keeping the bytes of it received so far. */
  private slide(): void {
    const next = this.open.next;
    const start = next === 0 ? 0 : this.open.ends[next - 1]!;
    const window = this.windowBytes!;
    window.copyWithin(0, (start - this.base) * 4, this.received - this.base * 4);
    this.base = start;
  }

  private live(): void {
    if (this.settled) throw new InvalidArgumentError('push was already settled');
  }
}
