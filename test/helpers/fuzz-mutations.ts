import fc from 'fast-check';

/**
 * Byte-level mutations for fuzzing, as fast-check arbitraries: start from a
 * message that is valid (or nearly), then flip bits, truncate, splice in part
 * of another message, duplicate a run of bytes (in protobuf: a field sent
 * twice), insert a field tag with a random varint, overwrite or insert
 * garbage. Positions are drawn as numbers and taken modulo the message's
 * length, so a mutation applies to any message and shrinks towards its start.
 */

export type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; byte: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'delete'; at: number; length: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'field'; at: number; field: number; wire: number; value: bigint }
  | { kind: 'duplicate'; at: number; length: number }
  | { kind: 'splice'; at: number; from: number; length: number };

/** Interesting varint values: edges of the integer types protobuf decodes into, and of the float/safe-integer range. */
const EDGE_VARINTS = [0n, 1n, 127n, 128n, 255n, 0x7fffffffn, 0x80000000n, 0xffffffffn, 1n << 32n, 1n << 50n, (1n << 53n) - 1n, 1n << 53n, (1n << 63n) - 1n, 1n << 63n, (1n << 64n) - 1n];

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.constantFrom(0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x22) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 24 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('field' as const),
      at: fc.nat(),
      field: fc.oneof(fc.integer({ min: 1, max: 12 }), fc.constantFrom(0, 15, 16, 536870911)),
      wire: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(0, 2) }, { weight: 1, arbitrary: fc.nat(7) }),
      value: fc.oneof(fc.constantFrom(...EDGE_VARINTS), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 64 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), from: fc.nat(), length: fc.integer({ min: 1, max: 64 }) }) },
);

/** A protobuf varint of `v` (any non-negative bigint: past 2^64 it runs over ten bytes, which decoders must refuse). */
export function varint(v: bigint): Buffer {
  const out: number[] = [];
  let x = v;
  while (x >= 0x80n) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
  return Buffer.from(out);
}

/** `bytes` with `m` applied; `other` is where a splice takes its bytes from. */
export function applyMutation(bytes: Buffer, m: Mutation, other: Buffer): Buffer {
  const n = bytes.length;
  const pos = (at: number) => (n === 0 ? 0 : at % (n + 1));
  switch (m.kind) {
    case 'flip': {
      if (n === 0) return bytes;
      const out = Buffer.from(bytes);
      out[m.at % n]! ^= 1 << m.bit;
      return out;
    }
    case 'set': {
      if (n === 0) return Buffer.from([m.byte]);
      const out = Buffer.from(bytes);
      out[m.at % n] = m.byte;
      return out;
    }
    case 'truncate':
      return bytes.subarray(0, n === 0 ? 0 : m.at % n);
    case 'delete': {
      const at = pos(m.at);
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + m.length)]);
    }
    case 'insert': {
      const at = pos(m.at);
      return Buffer.concat([bytes.subarray(0, at), m.bytes, bytes.subarray(at)]);
    }
    case 'field': {
      // A tag (field number, wire type) and a varint: a well-formed varint field, or a tag whose payload does not fit its wire type.
      const at = pos(m.at);
      const tag = varint((BigInt(m.field) << 3n) | BigInt(m.wire));
      return Buffer.concat([bytes.subarray(0, at), tag, varint(m.value), bytes.subarray(at)]);
    }
    case 'duplicate': {
      const at = pos(m.at);
      const run = bytes.subarray(at, at + m.length);
      return Buffer.concat([bytes.subarray(0, at + run.length), run, bytes.subarray(at + run.length)]);
    }
    case 'splice': {
      const at = pos(m.at);
      const from = other.length === 0 ? 0 : m.from % other.length;
      return Buffer.concat([bytes.subarray(0, at), other.subarray(from, from + m.length), bytes.subarray(at)]);
    }
  }
}

/**
 * Messages made from `template`'s by one to four mutations (a splice takes
 * its bytes from a second message of `template`).
 */
export function mutated(template: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  return fc.tuple(template, template, fc.array(mutationArb, { minLength: 1, maxLength: 4 })).map(([base, other, ms]) => ms.reduce((b, m) => applyMutation(b, m, other), base));
}

/** A run of protobuf fields of any number and wire type, well-formed or not: what a decoder sees from a sender that knows the format only roughly. */
export const protobufJunk: fc.Arbitrary<Buffer> = fc
  .array(
    fc.record({
      field: fc.integer({ min: 1, max: 20 }),
      wire: fc.nat(7),
      value: fc.oneof(fc.constantFrom(...EDGE_VARINTS), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
      payload: fc.uint8Array({ maxLength: 48 }),
    }),
    { maxLength: 8 },
  )
  .map((fields) =>
    Buffer.concat(
      fields.map((f) => {
        const tag = varint((BigInt(f.field) << 3n) | BigInt(f.wire));
        // Length-delimited: a length (sometimes not the payload's) then the payload; others: a varint.
        if (f.wire === 2) return Buffer.concat([tag, varint(f.value % 2n === 0n ? BigInt(f.payload.length) : f.value % 256n), f.payload]);
        return Buffer.concat([tag, varint(f.value)]);
      }),
    ),
  );

/** Any bytes at all, short or long. */
export const garbage: fc.Arbitrary<Buffer> = fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 4096 })).map((a) => Buffer.from(a));

/**
 * A JSON value made from `base` by replacing, removing or wrapping one of its
 * parts (picked by a drawn index over its nodes) with any JSON value: the
 * right shape with one field of the wrong type, missing, or nonsense.
 */
export function jsonMutated(base: unknown): fc.Arbitrary<unknown> {
  return fc
    .tuple(fc.nat(), fc.constantFrom('replace', 'delete', 'wrap'), fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(-1, 0, 1.5, 2 ** 53, -(2 ** 60), 1e308, '', 'x'.repeat(300), null, [], {}))
    .map(([index, how, value, edge]) => {
      const copy = structuredClone(base) as unknown;
      const nodes: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
      const walk = (v: unknown) => {
        if (v === null || typeof v !== 'object') return;
        for (const [k, child] of Object.entries(v)) {
          nodes.push({ parent: v as Record<string, unknown>, key: Array.isArray(v) ? Number(k) : k });
          walk(child);
        }
      };
      walk(copy);
      if (nodes.length === 0) return value;
      const { parent, key } = nodes[index % nodes.length]!;
      const replacement = index % 2 === 0 ? value : edge;
      const slot = parent as Record<string | number, unknown>;
      if (how === 'replace') slot[key] = replacement;
      else if (how === 'delete') {
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else delete slot[key];
      } else slot[key] = [slot[key], replacement];
      return copy;
    });
}

/** JSON text of `base` mutated as {@link jsonMutated} does, or its text with bytes mutated (often no longer JSON). */
export function jsonTextMutated(base: unknown): fc.Arbitrary<string> {
  const text = JSON.stringify(base);
  return fc.oneof(
    { weight: 3, arbitrary: jsonMutated(base).map((v) => JSON.stringify(v) ?? '') },
    { weight: 1, arbitrary: mutated(fc.constant(Buffer.from(text))).map((b) => b.toString('utf8')) },
    { weight: 1, arbitrary: fc.constant(text) },
  );
}
