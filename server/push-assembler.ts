import { InvalidArgumentError } from '../cluster/errors.js';
import { type Compression } from '../cluster/wire/gradient-codec.js';
import { slotLengths } from '../cluster/wire/codec-fields.js';
import { copyBytes, copyBytesInto } from '../cluster/wire/dense-values.js';
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
 * One dense push being received, shared by the gRPC and bulk edges (which
 * only read messages or frames and answer). Constructing it admits the push:
 * worker id, seq, clock, ownership, ranges, epoch, the announced length and
 * the encoded size are checked before a buffer is taken from the pool, so a
 * refused push allocates nothing. Pieces must then arrive in order and cover
 * the gradient exactly.
 *
 * Float32 pushes are applied slot by slot while they arrive: as soon as a
 * slot's last value is in, the slot is checked and applied (Shard.applySlots),
 * its values still in cache, while the rest of the push is on the wire. A push
 * under a codec is decoded once its last byte is in, then applied the same
 * way. Either way each slot is all or nothing, and a push refused part-way
 * keeps the slots before the refusal (docs/wire-protocol.md, "Push").
 * The edge calls {@link release} once the push is settled, whatever happened.
 */
export class PushAssembler {
  private gradient: Float32Array | null;
  /** Every codec but float32: the encoded bytes, decoded by {@link apply}. */
  private readonly encoded: EncodedPush | null = null;
  /** Float32 pieces at byte offsets: the gradient's bytes. */
  private readonly bytes: Buffer | null = null;
  /** Float32 pieces received, in `unit`s. */
  private received = 0;
  /** Values the push's slots hold. */
  readonly length: number;
  /** The push on the shard: its slots, and how many were applied. */
  private readonly open: OpenPush;

  /** @throws the typed error of Shard.beginPush, or InvalidArgumentError for a length or encoded size the slots do not match. */
  constructor(
    private readonly shard: Shard,
    private readonly pool: GradientPool,
    readonly header: AssembledPushHeader,
    readonly unit: OffsetUnit,
  ) {
    this.open = shard.beginPush({ epoch: header.epoch, ranges: header.ranges, workerId: header.workerId, seq: header.seq, model: header.model, ...(header.clock !== undefined ? { clock: header.clock } : {}) });
    this.length = shard.lengthOf(header.ranges);
    const expected = this.length;
    if (header.length !== undefined && header.length !== expected) throw new InvalidArgumentError(`push carries ${header.length} values but slots of the request hold ${expected}`);
    if (header.compression.kind !== 'none') this.encoded = new EncodedPush(header.compression, slotLengths(header.ranges, shard.elements, shard.config.slots), header.wireBytes);
    this.gradient = pool.acquire(expected);
    if (!this.encoded && unit === 'byte') this.bytes = Buffer.from(this.gradient.buffer, this.gradient.byteOffset, expected * 4);
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
    const gradient = this.live();
    if (this.encoded) return this.encoded.write(piece, offset);
    if (this.bytes) {
      if (offset !== this.received) throw new InvalidArgumentError(`push bytes at offset ${offset} arrived where offset ${this.received} was expected; send them in order`);
      if (offset + piece.byteLength > this.bytes.byteLength) throw new InvalidArgumentError(`push carries more than the ${this.bytes.byteLength} bytes its slots hold`);
      copyBytes(piece, this.bytes.subarray(offset, offset + piece.byteLength));
      this.received += piece.byteLength;
      return this.applyUpTo(Math.floor(this.received / 4));
    }
    if (piece.byteLength % 4 !== 0) throw new InvalidArgumentError(`push chunk at offset ${offset} has ${piece.byteLength} bytes, not a whole number of float32 values`);
    if (offset !== this.received) throw new InvalidArgumentError(`push chunk at offset ${offset} arrived where offset ${this.received} was expected; send chunks in order`);
    const n = piece.byteLength / 4;
    if (this.received + n > gradient.length) throw new InvalidArgumentError(`push carries more than the ${gradient.length} values its slots hold`);
    copyBytesInto(piece, gradient, this.received);
    this.received += n;
    this.applyUpTo(this.received);
  }

  /**
   * Completes the push: checks that every piece came, decodes and applies an
   * encoded gradient, and closes the push on the shard.
   * @throws InvalidArgumentError when pieces are missing or do not decode (no slot of an encoded push is then applied); what Shard.applySlots throws.
   */
  apply(): PushResult & { wireBytes: number } {
    const gradient = this.live();
    if (this.encoded) {
      this.encoded.decodeInto(gradient);
      this.applyUpTo(gradient.length);
    } else if (this.bytes) {
      if (this.received !== this.bytes.byteLength) throw new InvalidArgumentError(`push carries ${this.received} bytes but its slots hold ${this.bytes.byteLength}`);
    } else if (this.received !== gradient.length) throw new InvalidArgumentError(`push carries ${this.received} values but its slots hold ${gradient.length}`);
    return { ...this.shard.endPush(this.open), wireBytes: this.wireBytes };
  }

  /** Gives the gradient buffer back to the pool; later calls do nothing, and the assembler is done. */
  release(): void {
    if (this.gradient) this.pool.release(this.gradient);
    this.gradient = null;
  }

  /** Applies every slot whose values all lie below `values`. A refused slot ends the push: nothing after it is applied. */
  private applyUpTo(values: number): void {
    const gradient = this.live();
    const { ends } = this.open;
    let until = this.open.next;
    while (until < ends.length && ends[until]! <= values) until++;
    try {
      this.shard.applySlots(this.open, until, gradient);
    } catch (err) {
      this.release();
      throw err;
    }
  }

  private live(): Float32Array {
    if (!this.gradient) throw new InvalidArgumentError('push was already settled');
    return this.gradient;
  }
}
