import { type Compression, decodeSlots, encodedSlotBytes } from '../cluster/wire/gradient-codec.js';
import { InvalidArgumentError } from '../cluster/errors.js';

/**
 * The encoded gradient of one push as it arrives (any codec but float32,
 * docs/wire-protocol.md): its size is checked against what the codec gives
 * for the push's slots before a byte is kept, the pieces are written where
 * their offsets say, and the whole is decoded into the shard's gradient
 * buffer once complete — so a push is refused whole (bad size, truncated,
 * a NaN smuggled in a scale) before anything is applied, as a float32 push is.
 */
export class EncodedPush {
  private readonly bytes: Buffer;
  private received = 0;

  /**
   * @param lengths the element count of each slot the push covers, in order.
   * @throws InvalidArgumentError when `wireBytes` is not what the codec gives for those slots.
   */
  constructor(
    private readonly compression: Compression,
    private readonly lengths: readonly number[],
    readonly wireBytes: number,
  ) {
    let expected = 0;
    for (const n of lengths) expected += encodedSlotBytes(compression, n);
    if (wireBytes !== expected) throw new InvalidArgumentError(`push announces ${wireBytes} encoded bytes, but its ${lengths.length} slots take ${expected} under its codec`);
    this.bytes = Buffer.allocUnsafe(wireBytes);
  }

  /** Keeps `piece`, the bytes at `offset` of the encoded gradient. @throws InvalidArgumentError for a piece out of order or past the end. */
  write(piece: Uint8Array, offset: number): void {
    if (offset !== this.received) throw new InvalidArgumentError(`push bytes at offset ${offset} arrived where offset ${this.received} was expected; send them in order`);
    if (offset + piece.byteLength > this.wireBytes) throw new InvalidArgumentError(`push carries more than the ${this.wireBytes} encoded bytes it announced`);
    this.bytes.set(piece, offset);
    this.received += piece.byteLength;
  }

  /** Decodes the whole into `gradient`. @throws InvalidArgumentError when bytes are missing or do not decode. */
  decodeInto(gradient: Float32Array): void {
    if (this.received !== this.wireBytes) throw new InvalidArgumentError(`push carries ${this.received} of the ${this.wireBytes} encoded bytes it announced`);
    decodeSlots(this.compression, this.bytes, 0, this.lengths, gradient);
  }
}
