import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import protobuf from 'protobufjs';
import { protoRoot, shardService } from '../../../cluster/proto.js';
import { DEFAULT_CHUNK_BYTES, type PullChunkOut, bytesToFloats, chunkBounds, copyBytes, copyBytesInto, encodePullChunk, floatBytes, withWireEncoders } from '../../../cluster/wire/dense-values.js';
import { floatHeap } from '../../../server/float-heap.js';
import { rng } from '../../helpers/random.js';

/*
 * cluster/wire/dense-values.ts: byte views of float arrays, copies out of and into shared
 * memory at any alignment, chunk bounds, and the server-side PullChunk
 * encoder against the generic (protobufjs, through proto-loader) one.
 */

/** Floats past 65 536 make copies cross the 256 KiB staging buffer more than once. */
const STAGED = 3 * 65_536 + 7;
const SENTINEL = 0xa5;

function randomBytes(n: number, seed: number): Buffer {
  const next = rng(seed);
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = (next() * 256) | 0;
  return out;
}

/** `n` random bytes starting `lead` bytes into a larger Buffer (as a received message's field lies: at any offset). */
function unaligned(n: number, lead: number, seed: number): Buffer {
  const backing = Buffer.alloc(n + 16, SENTINEL);
  randomBytes(n, seed).copy(backing, lead);
  return backing.subarray(lead, lead + n);
}

function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** A heap block filled with the sentinel, or a failure when there is no heap. */
function heapBlock(length: number, owner: object): Float32Array {
  const heap = floatHeap();
  if (!heap) expect.fail('no float heap in this Node');
  const a = heap.alloc(length, owner);
  if (!a) expect.fail('the float heap could not allocate');
  bytesOf(a).fill(SENTINEL);
  return a;
}

function expectSentinelsOutside(all: Uint8Array, from: number, to: number, what: string): void {
  for (let i = 0; i < all.length; i++) if ((i < from || i >= to) && all[i] !== SENTINEL) expect.fail(`${what}: byte ${i} outside [${from}, ${to}) was written`);
}

describe('cluster/wire', () => {
  const owner = {};
  let heapArrays: Float32Array[] = [];
  const inHeap = (length: number) => {
    const a = heapBlock(length, owner);
    heapArrays.push(a);
    return a;
  };
  afterEach(() => {
    for (const a of heapArrays) floatHeap()?.free(a);
    heapArrays = [];
  });

  describe('floatBytes', () => {
    it('views the array’s memory, no copy: writes either way show through', () => {
      for (const values of [new Float32Array(12).subarray(1, 11), inHeap(13).subarray(3, 13)]) {
        values.set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        const all = floatBytes(values);
        expect(all.buffer).to.equal(values.buffer);
        expect([all.byteOffset, all.byteLength]).to.deep.equal([values.byteOffset, 40]);
        const part = floatBytes(values, 2, 7);
        expect(part.buffer).to.equal(values.buffer);
        expect([part.byteOffset, part.byteLength]).to.deep.equal([values.byteOffset + 8, 20]);
        expect(part.readFloatLE(0)).to.equal(2);
        values[3] = 1.5;
        expect(part.readFloatLE(4), 'array write seen in the bytes').to.equal(1.5);
        part.writeFloatLE(-2.25, 16);
        expect(values[6], 'byte write seen in the array').to.equal(-2.25);
        expect(floatBytes(values, 4, 4).byteLength, 'empty range').to.equal(0);
      }
    });
  });

  describe('copyBytes, copyBytesInto, bytesToFloats', () => {
    it('bytesToFloats round-trips bytes from any offset of a Buffer into a fresh aligned array, bit for bit', () => {
      for (const n of [0, 1, 3, 15, 16, 17, 100, STAGED]) {
        for (let lead = 0; lead < 8; lead++) {
          const src = unaligned(4 * n, lead, 10 * n + lead);
          const out = bytesToFloats(src);
          expect(out.length, `n = ${n}`).to.equal(n);
          expect(out.byteOffset % 4).to.equal(0);
          expect(bytesOf(out).equals(src), `n = ${n}, source at +${lead}: same bytes (NaN payloads included)`).to.equal(true);
          expect(out.buffer, 'a copy, not a view').to.not.equal(src.buffer);
        }
      }
    });

    it('copyBytesInto writes exactly its span of a shared-memory array, from any source alignment', () => {
      const sab = new Float32Array(new SharedArrayBuffer(4 * (STAGED + 16)));
      for (const n of [1, 15, 16, 17, 100, STAGED]) {
        for (let lead = 0; lead < 8; lead++) {
          for (const at of [0, 1, 2, 3]) {
            // The destination array itself starts 0 or 4 bytes past an 8-byte boundary, and the copy lands at element `at`.
            for (const start of [0, 1]) {
              if (n === STAGED && (at > 1 || lead % 3 !== 0)) continue;
              const dst = sab.subarray(start, start + n + 8);
              const whole = new Uint8Array(sab.buffer);
              whole.fill(SENTINEL);
              const src = unaligned(4 * n, lead, n + lead + at);
              copyBytesInto(src, dst, at);
              const from = dst.byteOffset + 4 * at;
              const what = `n = ${n}, source at +${lead}, into shared memory at +${from}`;
              expect(Buffer.from(whole.subarray(from, from + 4 * n)).equals(src), what).to.equal(true);
              expectSentinelsOutside(whole.subarray(0, 4 * (n + 16)), from, from + 4 * n, what);
            }
          }
        }
      }
    });

    it('copyBytesInto into float-heap arrays (the push path) and copyBytes out of them (the pull path), any alignment', () => {
      for (const n of [1, 16, 17, 1000, STAGED]) {
        for (const lead of n === STAGED ? [1, 4] : [0, 1, 2, 3, 5, 7]) {
          const block = inHeap(n + 4);
          const src = unaligned(4 * n, lead, 7 * n + lead);
          const dst = block.subarray(1);
          copyBytesInto(src, dst, 2);
          const whole = new Uint8Array(block.buffer, block.byteOffset, block.byteLength);
          const from = 12;
          expect(Buffer.from(whole.subarray(from, from + 4 * n)).equals(src), `n = ${n}, source at +${lead}, into the heap`).to.equal(true);
          expectSentinelsOutside(whole, from, from + 4 * n, `n = ${n}, into the heap`);
          // And back out, from shared memory into a Buffer at an odd offset (as a pull joins slots).
          const back = Buffer.alloc(4 * n + 16, SENTINEL);
          const target = back.subarray(lead + 1, lead + 1 + 4 * n);
          copyBytes(floatBytes(dst, 2, 2 + n), target);
          expect(target.equals(src), `n = ${n}, out of the heap to +${lead + 1}`).to.equal(true);
          expectSentinelsOutside(back, lead + 1, lead + 1 + 4 * n, `n = ${n}, out of the heap`);
        }
      }
    });

    it('copyBytes between two shared buffers of different alignment, and between plain buffers', () => {
      const a = new Uint8Array(new SharedArrayBuffer(4096));
      const b = new Uint8Array(new SharedArrayBuffer(4096));
      const src = a.subarray(3, 3 + 1000);
      src.set(randomBytes(1000, 5));
      copyBytes(src, b.subarray(8, 1008));
      expect(Buffer.from(b.subarray(8, 1008)).equals(Buffer.from(src))).to.equal(true);
      const plain = Buffer.alloc(1010);
      copyBytes(src, plain.subarray(5, 1005));
      expect(plain.subarray(5, 1005).equals(Buffer.from(src))).to.equal(true);
      const plain2 = Buffer.alloc(1010);
      copyBytes(plain.subarray(5, 1005), plain2.subarray(2, 1002));
      expect(plain2.subarray(2, 1002).equals(Buffer.from(src))).to.equal(true);
    });
  });

  describe('chunkBounds', () => {
    it('covers [0, n) exactly, in order, with full chunks of at most maxBytes', () => {
      for (const n of [0, 1, 2, 3, 4, 5, 100, 1023, 262_145]) {
        for (const maxBytes of [4, 5, 7, 8, 12, 400, 4096, DEFAULT_CHUNK_BYTES, undefined]) {
          const what = `n = ${n}, maxBytes = ${maxBytes}`;
          const chunks = [...chunkBounds(n, maxBytes)];
          const per = Math.floor((maxBytes ?? DEFAULT_CHUNK_BYTES) / 4);
          if (n === 0) {
            expect(chunks, `${what}: one empty chunk, so a message is still sent`).to.deep.equal([[0, 0]]);
            continue;
          }
          expect(chunks.length, `${what}: as few chunks as the limit allows`).to.equal(Math.ceil(n / per));
          let at = 0;
          for (const [start, end] of chunks) {
            if (start !== at) expect.fail(`${what}: chunk [${start}, ${end}) does not start where the last ended (${at})`);
            if (!(end > start)) expect.fail(`${what}: empty chunk [${start}, ${end})`);
            if ((end - start) * 4 > (maxBytes ?? DEFAULT_CHUNK_BYTES)) expect.fail(`${what}: chunk [${start}, ${end}) exceeds maxBytes`);
            at = end;
          }
          expect(at, `${what}: ends at n`).to.equal(n);
        }
      }
    });

    it('still makes progress, one element a chunk, when maxBytes is below one float', () => {
      for (const maxBytes of [0, 1, 3]) expect([...chunkBounds(3, maxBytes)]).to.deep.equal([[0, 1], [1, 2], [2, 3]]);
    });
  });

  describe('the PullChunk encoder', () => {
    const definition = shardService().service;
    const generic = definition['Pull']!;
    const wired = withWireEncoders(definition);
    const fast = wired['Pull']!;
    const PullChunk = protobuf.loadSync(join(protoRoot(), 'tessera/v1/shard.proto')).lookupType('tessera.v1.PullChunk');

    /** The fast encoder's bytes, copied at once (they live in a scratch buffer until the next call). */
    const encodeFast = (msg: object) => Buffer.from(fast.responseSerialize(msg));
    const encodeGeneric = (msg: object) => Buffer.from(generic.responseSerialize(msg));

    /** proto3's canonical encoding: protobufjs with zero scalars left out (it writes any field that is set, zeros included). */
    function canonical(msg: PullChunkOut): Buffer {
      const plain: Record<string, unknown> = { values: msg.values };
      for (const k of ['offset', 'total', 'epoch'] as const) if (msg[k]) plain[k] = msg[k];
      return Buffer.from(PullChunk.encode(PullChunk.fromObject(plain)).finish());
    }

    const BIG = [2 ** 32 - 1, 2 ** 32, 2 ** 32 + 5, 2 ** 40 + 3, 2 ** 49, Number.MAX_SAFE_INTEGER];
    const SMALL = [1, 127, 128, 300, 16_383, 16_384, 2 ** 21 - 1, 2 ** 28];

    function cases(): { name: string; msg: PullChunkOut }[] {
      const next = rng(99);
      const heapValues = inHeap(40_000);
      heapValues.forEach((_, i) => (heapValues[i] = next() * 2 - 1));
      const valueSets: [string, Uint8Array][] = [
        ['empty', Buffer.alloc(0)],
        ['4 bytes', unaligned(4, 1, 1)],
        ['124 bytes (1-byte length)', unaligned(124, 3, 2)],
        ['128 bytes (2-byte length)', unaligned(128, 0, 3)],
        ['1 MiB at an odd offset', unaligned(1 << 20, 5, 4)],
        ['heap values at 0 mod 8', floatBytes(heapValues, 0, 1000)],
        ['heap values at 4 mod 8', floatBytes(heapValues, 1, 1001)],
        ['heap values, 3 floats', floatBytes(heapValues, 7, 10)],
        ['heap values, 150 000 bytes', floatBytes(heapValues, 3, 37_503)],
        ['a plain Uint8Array', new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])],
      ];
      const out: { name: string; msg: PullChunkOut }[] = [];
      for (const [k, [vName, values]] of valueSets.entries()) {
        const big = BIG[k % BIG.length]!;
        const small = SMALL[k % SMALL.length]!;
        out.push(
          { name: `first chunk, ${vName}`, msg: { offset: 0, values, total: small + 7, epoch: 3 } },
          { name: `first chunk of a huge pull, ${vName}`, msg: { offset: 0, values, total: big, epoch: big - 1 } },
          { name: `later chunk at ${small}, ${vName}`, msg: { offset: small, values } },
          { name: `later chunk at ${big}, ${vName}`, msg: { offset: big, values } },
          { name: `chunk with explicit zero total and epoch, ${vName}`, msg: { offset: big, values, total: 0, epoch: 0 } },
        );
      }
      out.push({ name: 'first chunk of an empty reply', msg: { offset: 0, values: Buffer.alloc(0), total: 0, epoch: 1 } });
      out.push({ name: 'all zero', msg: { offset: 0, values: Buffer.alloc(0), total: 0, epoch: 0 } });
      return out;
    }

    it('decodes (proto-loader and protobufjs) to the same PullChunk as the generic encoder’s', () => {
      for (const { name, msg } of cases()) {
        const mine = encodeFast(msg);
        const theirs = encodeGeneric(msg);
        const decoded = generic.responseDeserialize(mine) as { offset: number; values: Buffer; total: number; epoch: number };
        expect(decoded, name).to.deep.equal(generic.responseDeserialize(theirs));
        expect(decoded.offset, `${name}: offset`).to.equal(msg.offset);
        expect(decoded.total, `${name}: total`).to.equal(msg.total ?? 0);
        expect(decoded.epoch, `${name}: epoch`).to.equal(msg.epoch ?? 0);
        expect(Buffer.from(decoded.values).equals(Buffer.from(msg.values.buffer, msg.values.byteOffset, msg.values.byteLength)), `${name}: values`).to.equal(true);
        const raw = PullChunk.toObject(PullChunk.decode(mine), { longs: Number, defaults: true });
        expect({ ...raw, values: Buffer.from(raw['values'] as Uint8Array) }, `${name}: protobufjs decode`).to.deep.equal({ ...decoded, values: Buffer.from(decoded.values) });
      }
    });

    it('writes proto3’s canonical bytes; the same bytes as the generic encoder wherever the message sets no zero count', () => {
      for (const { name, msg } of cases()) {
        const mine = encodeFast(msg);
        expect(mine.equals(canonical(msg)), `${name}: canonical proto3 bytes`).to.equal(true);
        // protobufjs writes a field set to 0 (offset 0 on every first chunk) where proto3 omits it: only there may the bytes differ.
        const setZero = (['offset', 'total', 'epoch'] as const).some((k) => msg[k] === 0);
        if (!setZero) expect(mine.equals(encodeGeneric(msg)), `${name}: the generic encoder’s bytes`).to.equal(true);
        else expect(mine.byteLength, `${name}: zeros left out`).to.be.below(encodeGeneric(msg).byteLength);
      }
    });

    it('leaves the source values alone and each result holds its own message, whatever came before', () => {
      const values = unaligned(4000, 1, 77);
      const copy = Buffer.from(values);
      const longFirst = encodeFast({ offset: 2 ** 40, values, total: 2 ** 41, epoch: 9 });
      const short = { offset: 5, values: values.subarray(0, 8) };
      expect(encodeFast(short).equals(encodeGeneric(short)), 'a short chunk after a long one').to.equal(true);
      expect(values.equals(copy), 'the source is only read').to.equal(true);
      expect(longFirst.equals(canonical({ offset: 2 ** 40, values, total: 2 ** 41, epoch: 9 }))).to.equal(true);
    });

    it('declines what is not a plain chunk (encodePullChunk → null) and the generic encoder takes it', () => {
      const values = Buffer.from([0, 0, 128, 63]);
      const odd: [string, Record<string, unknown>][] = [
        ['negative offset', { offset: -1, values }],
        ['fractional offset', { offset: 1.5, values }],
        ['offset beyond 2^53', { offset: 2 ** 53, values }],
        ['offset as a string', { offset: '4294967301', values }],
        ['NaN total', { offset: 1, values, total: NaN }],
        ['fractional epoch', { offset: 1, values, epoch: 0.5 }],
        ['values as base64', { offset: 3, values: values.toString('base64') }],
        ['values as an array of numbers', { offset: 3, values: [0, 0, 128, 63] }],
      ];
      for (const [name, msg] of odd) {
        expect(encodePullChunk(msg as unknown as PullChunkOut), name).to.equal(null);
        let want: Buffer | Error;
        try {
          want = encodeGeneric(msg);
        } catch (err) {
          want = err as Error;
        }
        if (want instanceof Error) expect(() => encodeFast(msg), name).to.throw();
        else expect(encodeFast(msg).equals(want), `${name}: the generic encoder’s bytes`).to.equal(true);
      }
    });

    it('replaces only Pull’s response encoder, in a new definition', () => {
      expect(wired).to.not.equal(definition);
      for (const [name, method] of Object.entries(definition)) {
        const w = wired[name] as grpc.MethodDefinition<unknown, unknown>;
        if (name !== 'Pull') {
          expect(w, name).to.equal(method);
          continue;
        }
        expect(w.responseSerialize).to.not.equal(method.responseSerialize);
        for (const k of Object.keys(method) as (keyof typeof method)[]) if (k !== 'responseSerialize') expect(w[k], `Pull.${String(k)}`).to.equal(method[k]);
      }
      expect(definition['Pull']!.responseSerialize, 'the original definition is untouched').to.equal(generic.responseSerialize);
      expect(Object.keys(wired)).to.deep.equal(Object.keys(definition));
    });
  });
});
