import { type Compression, decodeSlots, encodedSlotBytes } from '../cluster/wire/gradient-codec.js';
import { InvalidArgumentError } from '../cluster/errors.js';
import { type InflightBudget } from './inflight-budget.js';

/** The first buffer an encoded push is received into; it doubles as bytes arrive, up to the size announced. */
const FIRST_BYTES = 64 << 10;

/**
 * The encoded gradient of one push as it arrives (any codec but float32,
 * docs/wire-protocol.md): its size is checked against what the codec gives
 * for the push's slots before a byte is kept, the pieces are written where
 * their offsets say, and the whole is decoded into the shard's gradient
 * buffer once complete — so a push is refused whole (bad size, truncated,
 * a NaN smuggled in a scale) before anything is applied, as a float32 push is.
 * Memory is taken as bytes arrive, not on the header: the buffer starts at
 * 64 KiB and doubles when full (so it holds at most twice what came), each
 * growth taken from the shard's budget of bytes in flight and all of it given
 * back by {@link release}.
 */
export class EncodedPush {
  private bytes: Buffer = Buffer.alloc(0);
  private received = 0;

  /**
   * @param lengths the element count of each slot the push covers, in order.
   * @throws InvalidArgumentError when `wireBytes` is not what the codec gives for those slots.
   */
  constructor(
    private readonly compression: Compression,
    private readonly lengths: readonly number[],
    readonly wireBytes: number,
    private readonly budget: InflightBudget,
  ) {
    let expected = 0;
    for (const n of lengths) expected += encodedSlotBytes(compression, n);
    if (wireBytes !== expected) throw new InvalidArgumentError(`push announces ${wireBytes} encoded bytes, but its ${lengths.length} slots take ${expected} under its codec`);
  }

  /** Keeps `piece`, the bytes at `offset` of the encoded gradient. @throws InvalidArgumentError for a piece out of order or past the end. */
  write(piece: Uint8Array, offset: number): void {
    if (offset !== this.received) throw new InvalidArgumentError(`push bytes at offset ${offset} arrived where offset ${this.received} was expected; send them in order`);
    if (offset + piece.byteLength > this.wireBytes) throw new InvalidArgumentError(`push carries more than the ${this.wireBytes} encoded bytes it announced`);
    const end = offset + piece.byteLength;
    if (end > this.bytes.byteLength) this.grow(end);
    this.bytes.set(piece, offset);
    this.received += piece.byteLength;
  }

  /** Gives the buffer's bytes back to the budget; the push is done with. */
  release(): void {
    this.budget.give(this.bytes.byteLength);
    this.bytes = Buffer.alloc(0);
  }

  /** A buffer of at least `end` bytes (doubling, at most the size announced) with what came so far. @throws ShardBusyError when the budget has no room. */
  private grow(end: number): void {
    let size = Math.max(this.bytes.byteLength, Math.min(FIRST_BYTES, this.wireBytes));
    while (size < end) size = Math.min(size * 2, this.wireBytes);
    this.budget.take(size - this.bytes.byteLength, 'an encoded push');
    const bigger = Buffer.allocUnsafe(size);
    this.bytes.copy(bigger, 0, 0, this.received);
    this.bytes = bigger;
  }

  /** Decodes the whole into `gradient`. @throws InvalidArgumentError when bytes are missing or do not decode. */
  decodeInto(gradient: Float32Array): void {
    if (this.received !== this.wireBytes) throw new InvalidArgumentError(`push carries ${this.received} of the ${this.wireBytes} encoded bytes it announced`);
    decodeSlots(this.compression, this.bytes, 0, this.lengths, gradient);
  }
}
