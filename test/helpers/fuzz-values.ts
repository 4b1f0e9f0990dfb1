import fc from 'fast-check';
import { type SlotRange, rangesLength } from '../../cluster/slots.js';

/**
 * The field values fuzzed messages are made of: mostly what a valid request
 * of the cluster under test holds (its epoch, model, slots, the fuzzer's own
 * worker id), often something wrong — edges of the integer types, negative
 * and fractional numbers, NaN and infinities, empty and very long text,
 * ranges out of order or beyond the key space, values of the wrong length.
 */

/** What a valid request to the cluster under test holds. */
export interface FuzzContext {
  epoch: number;
  slots: number;
  elements: number;
  model: string;
  table: string;
  dim: number;
  /** The fuzzer's worker id (the one in its certificate). */
  worker: string;
  /** Sequence numbers whose pushes every slot has applied already: a push under one of them changes nothing. */
  appliedSeqs: { low: number; high: number };
}

/** Numbers at the edges of what the wire's integer fields and the server's checks take. */
export const EDGE_NUMBERS = [0, 1, 2, 3, 7, 63, 64, 65, 255, 256, 1023, 1024, 4095, 4096, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 50, 2 ** 50 + 1, 2 ** 53 - 1, 2 ** 53, 2 ** 63, 2 ** 64 - 1];

/** A count or id: small, at an edge, any non-negative integer, negative, or not an integer at all. */
export const anyNumber: fc.Arbitrary<number> = fc.oneof(
  { weight: 4, arbitrary: fc.nat(100) },
  { weight: 3, arbitrary: fc.constantFrom(...EDGE_NUMBERS) },
  { weight: 1, arbitrary: fc.nat() },
  { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: -1 }) },
  { weight: 1, arbitrary: fc.double() },
);

/** Text: short, binary (control characters, lone surrogates), or very long. */
export const anyText: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 16 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', '\u0000', 'w\u0000', 'a'.repeat(129), 'é'.repeat(100), 'x'.repeat(70_000)) },
);

/** `valid` most of the time, else one drawn from `wrong`. */
export function likely<T>(valid: T, wrong: fc.Arbitrary<T>, weight = 3): fc.Arbitrary<T> {
  return fc.oneof({ weight, arbitrary: fc.constant(valid) }, { weight: 1, arbitrary: wrong });
}

/** A sequence number: one the fuzzer's pushes have already applied (so a push that passes every check changes nothing), or any number. */
export function seqArb(ctx: FuzzContext): fc.Arbitrary<number> {
  const { low, high } = ctx.appliedSeqs;
  return fc.oneof({ weight: 3, arbitrary: fc.integer({ min: low, max: high }) }, { weight: 1, arbitrary: anyNumber });
}

/** 1–3 ordered, disjoint, non-empty runs of slots inside the key space. */
export function validRanges(slots: number): fc.Arbitrary<SlotRange[]> {
  return fc.uniqueArray(fc.integer({ min: 0, max: slots }), { minLength: 2, maxLength: 6 }).map((cuts) => {
    const sorted = [...cuts].sort((a, b) => a - b);
    const out: SlotRange[] = [];
    for (let i = 0; i + 1 < sorted.length; i += 2) out.push({ begin: sorted[i]!, end: sorted[i + 1]! });
    return out;
  });
}

/** Slot ranges, valid or not: empty lists, empty or reversed runs, overlaps, beyond the key space, a thousand runs. */
export function rangesArb(slots: number): fc.Arbitrary<SlotRange[]> {
  return fc.oneof(
    { weight: 5, arbitrary: validRanges(slots) },
    { weight: 1, arbitrary: fc.constant<SlotRange[]>([{ begin: 0, end: slots }]) },
    { weight: 2, arbitrary: fc.array(fc.record({ begin: anyNumber, end: anyNumber }), { maxLength: 4 }) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 1000 }).map((n) => Array.from({ length: n }, (_, i) => ({ begin: i % slots, end: (i % slots) + 1 }))) },
  );
}

/** `n` float32 values: zeros, one value everywhere with another (NaN, ±Inf, huge) somewhere, or n from a seed. */
export function floatsArb(n: number): fc.Arbitrary<Float32Array> {
  return fc.record({ fill: fc.float(), at: fc.nat(), special: fc.float(), zeros: fc.boolean() }).map(({ fill, at, special, zeros }) => {
    const a = new Float32Array(Math.max(0, n));
    if (!zeros) a.fill(fill);
    if (a.length > 0) a[at % a.length] = special;
    return a;
  });
}

export function bytesOf(a: Float32Array | Uint32Array | BigUint64Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** The float32 bytes of a push or row gradient for `n` values: mostly exactly n, sometimes a few more or fewer, or bytes that are not whole floats. */
export function valuesFor(n: number): fc.Arbitrary<Buffer> {
  return fc.oneof(
    { weight: 6, arbitrary: floatsArb(n).map(bytesOf) },
    { weight: 1, arbitrary: fc.integer({ min: -3, max: 3 }).chain((d) => floatsArb(n + d).map(bytesOf)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)) },
  );
}

/** The float32 bytes for `ranges` of the cluster (their length when they are valid). */
export function valuesForRanges(ctx: FuzzContext, ranges: SlotRange[]): fc.Arbitrary<Buffer> {
  let n = 0;
  try {
    n = rangesLength(ranges, ctx.elements, ctx.slots);
  } catch {
    n = 0;
  }
  return valuesFor(Number.isSafeInteger(n) && n >= 0 && n <= ctx.elements ? n : 8);
}

/** 64-bit row ids as little-endian bytes: a few (small, random, at the edges), many, or bytes that are not whole ids. */
export const idsArb: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 6, arbitrary: fc.array(fc.oneof(fc.bigInt({ min: 0n, max: 1000n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.constantFrom(0n, (1n << 32n) - 1n, 1n << 32n, (1n << 64n) - 1n)), { maxLength: 16 }).map((ids) => bytesOf(BigUint64Array.from(ids))) },
  { weight: 1, arbitrary: fc.integer({ min: 17, max: 512 }).map((n) => bytesOf(BigUint64Array.from({ length: n }, (_, i) => BigInt(i) * 7919n))) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 30 }).map((a) => Buffer.from(a)) },
);
