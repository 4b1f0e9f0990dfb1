import { parseUntrustedJson } from '../cluster/wire/untrusted-json.js';

/**
 * Bytes that carry a JSON header and raw arrays: an 8-byte magic, the
 * header's length (uint32 LE), the header as UTF-8 JSON padded with spaces to
 * a multiple of 4, then the arrays back to back, little-endian — so each
 * array lies at a multiple of 4 from the start and can be read as a view.
 * Checkpoint files (checkpoint-format.ts) and the slot-move log
 * (migration.ts) are written this way.
 */

type WordArray = Float32Array | Uint32Array;

/** The frame's bytes, as pieces to write or send in order (the arrays are not copied). */
export function frameArrays(magic: string, header: unknown, arrays: Iterable<WordArray>): Buffer[] {
  let json = JSON.stringify(header);
  json += ' '.repeat((4 - ((12 + Buffer.byteLength(json)) % 4)) % 4);
  const head = Buffer.alloc(12);
  head.write(magic, 0, 'latin1');
  const jsonBytes = Buffer.from(json, 'utf8');
  head.writeUInt32LE(jsonBytes.byteLength, 8);
  const pieces: Buffer[] = [head, jsonBytes];
  for (const a of arrays) pieces.push(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  return pieces;
}

/**
 * Reads a frame from bytes[0, end): its header, then its arrays in order.
 * Arrays are views of `bytes` where it is 4-byte aligned, else copies.
 * Errors are made by `bad` from what is wrong ("is damaged: …").
 */
export class FrameReader<H> {
  readonly header: H;
  private at: number;
  private readonly aligned: boolean;

  constructor(
    private readonly bytes: Buffer,
    private readonly end: number,
    magic: string,
    what: string,
    private readonly bad: (problem: string) => Error,
  ) {
    if (end < 12 || bytes.toString('latin1', 0, 8) !== magic) throw bad(`is not ${what} (no ${magic} header)`);
    const length = bytes.readUInt32LE(8);
    if (12 + length > end) throw bad('is damaged: its header runs past the end');
    try {
      this.header = parseUntrustedJson(bytes.toString('utf8', 12, 12 + length)) as H;
    } catch (err) {
      throw bad(`has an unreadable header (${(err as Error).message})`);
    }
    this.at = 12 + length;
    this.aligned = bytes.byteOffset % 4 === 0;
  }

  f32(n: number): Float32Array {
    return this.take(n, (b, o, l) => new Float32Array(b, o, l));
  }

  u32(n: number): Uint32Array {
    return this.take(n, (b, o, l) => new Uint32Array(b, o, l));
  }

  /** Throws unless every byte up to `end` was read. */
  finish(): void {
    if (this.at !== this.end) throw this.bad('is damaged: it holds more bytes than its header lists');
  }

  private take<T extends WordArray>(n: number, make: (b: ArrayBufferLike, offset: number, length: number) => T): T {
    const size = n * 4;
    if (!(Number.isInteger(n) && n >= 0) || this.at + size > this.end) throw this.bad('is damaged: its arrays are shorter than its header says');
    const { bytes } = this;
    const out = this.aligned ? make(bytes.buffer, bytes.byteOffset + this.at, n) : make(bytes.buffer.slice(bytes.byteOffset + this.at, bytes.byteOffset + this.at + size), 0, n);
    this.at += size;
    return out;
  }
}
