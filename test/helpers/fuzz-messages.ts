import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { type ClusterConfig } from '../../cluster/cluster-config.js';
import { loadProtos } from '../../cluster/proto.js';
import { type ShardMap } from '../../cluster/shard-map.js';
import { slotStart } from '../../cluster/slots.js';
import { frameArrays } from '../../server/array-frame.js';
import { CHECKPOINT_FORMAT, CHECKPOINT_MAGIC } from '../../server/checkpoint-format.js';
import { identityOf } from '../../server/checkpoint.js';
import { DEDUP_WINDOW } from '../../server/push-dedup.js';
import { encodeLog } from '../../server/migration.js';
import { garbage, jsonMutated, jsonTextMutated, mutated, protobufJunk } from './fuzz-mutations.js';
import { type FuzzContext, anyNumber, anyText, floatsArb, idsArb, likely, rangesArb, seqArb, valuesFor, valuesForRanges } from './fuzz-values.js';
import { type CallShape } from './raw-grpc.js';

/**
 * What the fuzz test sends each gRPC service: per method, request messages
 * built from the method's own fields (fuzz-values.ts) and encoded with the
 * wire contract's encoder, then often mutated byte by byte
 * (fuzz-mutations.ts), or protobuf-shaped junk, or any bytes at all.
 */

/** Which of the fuzzer's certificates a method is called with. */
export type FuzzIdentity = 'worker' | 'reader' | 'owner' | 'admin';

export interface FuzzMethod {
  /** `/tessera.v1.Service/Method`. */
  path: string;
  shape: CallShape;
  as: FuzzIdentity;
  /** A server stream that never ends by itself (WatchMap): the caller cancels it. */
  endless?: boolean;
  /** The request messages of one call: one, or a client stream's several. */
  messages: fc.Arbitrary<Buffer[]>;
}

/** One call as sent: which method, which bytes. */
export interface FuzzCall {
  method: FuzzMethod;
  messages: Buffer[];
}

type Serialize = (value: object) => Buffer;

function serializer(service: string, method: string): Serialize {
  const def = loadProtos().definition[`tessera.v1.${service}`] as Record<string, { requestSerialize: (v: object) => Buffer }>;
  const m = def[method];
  if (!m) throw new Error(`no method ${method} in tessera.v1.${service}`);
  return (v) => {
    try {
      return Buffer.from(m.requestSerialize(v));
    } catch {
      // A value the encoder cannot take (its checks are the client's, not the server's): send nothing rather than skip the call.
      return Buffer.alloc(0);
    }
  };
}

/**
 * Request bytes for a method from structured values `value`: encoded as they
 * are, mutated, two encodings back to back (protobuf merges them: every field
 * sent twice), protobuf junk, or garbage.
 */
function requestBytes(serialize: Serialize, value: fc.Arbitrary<object>): fc.Arbitrary<Buffer> {
  const encoded = value.map(serialize);
  return fc.oneof(
    { weight: 4, arbitrary: encoded },
    { weight: 5, arbitrary: mutated(encoded) },
    { weight: 1, arbitrary: fc.tuple(encoded, encoded).map(([a, b]) => Buffer.concat([a, b])) },
    { weight: 1, arbitrary: protobufJunk },
    { weight: 1, arbitrary: garbage },
  );
}

function unary(service: string, method: string, as: FuzzIdentity, value: fc.Arbitrary<object>, shape: CallShape = 'unary'): FuzzMethod {
  return { path: `/tessera.v1.${service}/${method}`, shape, as, messages: requestBytes(serializer(service, method), value).map((b) => [b]) };
}

/** tessera.v1.Shard: Pull, Push (a client stream of one to three chunks), Describe. */
export function shardMethods(ctx: FuzzContext): FuzzMethod[] {
  const pull = fc.record({
    epoch: likely(ctx.epoch, anyNumber),
    ranges: rangesArb(ctx.slots),
    workerId: likely(ctx.worker, anyText),
    maxChunkBytes: fc.oneof(fc.constant(0), anyNumber),
    model: likely(ctx.model, anyText),
    clocked: fc.boolean(),
    clock: anyNumber,
    join: fc.boolean(),
  });
  const header = fc.record({
    epoch: likely(ctx.epoch, anyNumber),
    ranges: rangesArb(ctx.slots),
    workerId: likely(ctx.worker, anyText),
    seq: seqArb(ctx),
    codec: likely<string | number>('CODEC_FLOAT32', fc.constantFrom('CODEC_FP16', 'CODEC_INT8', 'CODEC_TOPK', 7, -1)),
    model: likely(ctx.model, anyText),
    clocked: fc.boolean(),
    clock: anyNumber,
    topkRatio: fc.oneof(fc.constant(0.1), fc.float()),
    wireBytes: anyNumber,
  });
  const serialize = serializer('Shard', 'Push');
  // The first chunk carries the header and values for its ranges (or part of them); later chunks more values, at offsets right or wrong.
  const chunks = header.chain((h) =>
    fc.tuple(
      fc.constant(h),
      valuesForRanges(ctx, h.ranges),
      fc.array(fc.record({ offset: anyNumber, values: valuesFor(64), header: fc.option(fc.constant(h), { freq: 8 }) }), { maxLength: 2 }),
      fc.oneof(fc.constant(0), anyNumber),
    ),
  );
  const push = chunks.chain(([h, values, more, offset]) => {
    const first = { header: h, offset, values };
    const encoded = [first, ...more.map((m) => (m.header ? m : { offset: m.offset, values: m.values }))].map(serialize);
    return fc.oneof(
      { weight: 4, arbitrary: fc.constant(encoded) },
      { weight: 5, arbitrary: fc.tuple(fc.nat(), mutated(fc.constant(encoded[0]!))).map(([i, m]) => encoded.map((e, k) => (k === i % encoded.length ? m : e))) },
      { weight: 1, arbitrary: fc.array(fc.oneof(protobufJunk, garbage), { minLength: 1, maxLength: 3 }) },
      { weight: 1, arbitrary: fc.constant([] as Buffer[]) },
    );
  });
  return [
    unary('Shard', 'Pull', 'worker', pull, 'server-stream'),
    { path: '/tessera.v1.Shard/Push', shape: 'client-stream', as: 'worker', messages: push },
    unary('Shard', 'Describe', 'worker', fc.constant({})),
  ];
}

/** tessera.v1.SparseShard: Pull, Push, Describe. */
export function sparseMethods(ctx: FuzzContext): FuzzMethod[] {
  const common = {
    epoch: likely(ctx.epoch, anyNumber),
    model: likely(ctx.model, anyText),
    table: likely(ctx.table, anyText),
    workerId: likely(ctx.worker, anyText),
    clocked: fc.boolean(),
    clock: anyNumber,
  };
  const pull = fc.record({ ...common, ids: idsArb, join: fc.boolean(), readOnly: fc.boolean() });
  const push = fc.record({ ...common, seq: seqArb(ctx), ids: idsArb }).chain((r) => valuesFor((r.ids.byteLength >>> 3) * ctx.dim).map((gradients) => ({ ...r, gradients })));
  return [unary('SparseShard', 'Pull', 'worker', pull), unary('SparseShard', 'Push', 'worker', push), unary('SparseShard', 'Describe', 'worker', fc.constant({}))];
}

/** A slot number: one of the cluster's, just past them, or any number. */
function slotArb(ctx: FuzzContext): fc.Arbitrary<number> {
  return fc.oneof({ weight: 4, arbitrary: fc.nat(ctx.slots - 1) }, { weight: 1, arbitrary: fc.constantFrom(ctx.slots, ctx.slots + 1) }, { weight: 1, arbitrary: anyNumber });
}

/** What a slot's image says it applied: the right size of window or not. */
const dedupArb = () =>
  fc.array(
    fc.record({
      worker: likely('w', anyText),
      high: anyNumber,
      bits: likely(Buffer.alloc(DEDUP_WINDOW / 8).toString('base64'), fc.oneof(fc.string(), fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a).toString('base64')))),
    }),
    { maxLength: 2 },
  );

/**
 * A move's snapshot (ImportSlots): the checkpoint format with its CRC right
 * (so the decoder gets past it), made for this cluster's model and layout,
 * its header often with a field of the wrong type or missing, its slot lists
 * naming the shard's own slots, slots beyond the key space, rows of unknown
 * tables, lengths that do not match the arrays.
 */
export function importPayload(ctx: FuzzContext, config: ClusterConfig): fc.Arbitrary<Buffer> {
  const slotLength = (s: number) => (Number.isSafeInteger(s) && s >= 0 && s < ctx.slots ? slotStart(s + 1, ctx.elements, ctx.slots) - slotStart(s, ctx.elements, ctx.slots) : 4);
  const dense = fc.array(
    fc.record({ slot: slotArb(ctx), step: likely(0, anyNumber), dedup: dedupArb(), lengthDelta: likely(0, fc.integer({ min: -2, max: 2 })) }).map((d) => ({ ...d, length: Math.max(0, slotLength(d.slot) + d.lengthDelta) })),
    { maxLength: 3 },
  );
  const sparse = fc.array(fc.record({ table: likely(ctx.table, anyText), slot: slotArb(ctx), count: fc.nat(6), dedup: dedupArb() }), { maxLength: 3 });
  const header = { format: CHECKPOINT_FORMAT, ...identityOf(config, ctx.elements), shard: 'other', epoch: ctx.epoch, closedSteps: 0, createdAt: new Date(0).toISOString() };
  const framed = fc.tuple(dense, sparse, floatsArb(1), fc.nat(4)).chain(([d, s, fill, wrongField]) => {
    const full = { ...header, dense: d.map(({ slot, length, step, dedup }) => ({ slot, length, step, dedup })), sparse: s.map(({ table, slot, count, dedup }) => ({ table, slot, count, dedup })) };
    const arrays = [
      ...d.map((x) => new Float32Array(Math.min(x.length, 1 << 16)).fill(fill[0] ?? 0)),
      ...s.flatMap((x) => [Uint32Array.from({ length: 2 * x.count }, (_, i) => i * 31), new Uint32Array(x.count), new Float32Array(x.count * ctx.dim).fill(fill[0] ?? 0)]),
    ];
    const headerArb = wrongField === 0 ? jsonMutated(full) : fc.constant(full);
    return headerArb.map((h) => withCrc(frameArrays(CHECKPOINT_MAGIC, h, arrays)));
  });
  return fc.oneof({ weight: 4, arbitrary: framed }, { weight: 2, arbitrary: mutated(framed) }, { weight: 1, arbitrary: garbage });
}

function withCrc(pieces: Buffer[]): Buffer {
  let crc = 0;
  for (const p of pieces) crc = crc32(p, crc);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(crc >>> 0, 0);
  return Buffer.concat([...pieces, tail]);
}

/** The slot-move log's magic, as the encoder writes it. */
const LOG_MAGIC = encodeLog([]).toString('latin1', 0, 8);

/** A move's log (ApplyLog): entries for the shard's own slots and others, of the right or wrong size, or a header that is not a list of entries. */
export function logPayload(ctx: FuzzContext): fc.Arbitrary<Buffer> {
  const entry = fc.record({
    k: likely<unknown>('d', fc.constantFrom('s', 'x', null, 1)),
    s: slotArb(ctx),
    w: likely<unknown>('w', anyText),
    q: anyNumber,
    n: fc.oneof(fc.constantFrom(64, 65, ctx.dim, 0), fc.nat(100)),
    t: likely<unknown>(ctx.table, anyText),
    i: fc.oneof(fc.constantFrom(0, 2, 8), fc.nat(20)),
  });
  const valid = fc.array(entry, { maxLength: 3 }).map((entries) => {
    const size = (n: unknown) => (Number.isSafeInteger(n) && (n as number) >= 0 && (n as number) < 1 << 16 ? (n as number) : 0);
    const arrays = entries.flatMap((e) => (e.k === 's' ? [new Uint32Array(size(e.i)), new Float32Array(size(e.n))] : [new Float32Array(size(e.n))]));
    return { entries, arrays };
  });
  const framed = fc.oneof(
    { weight: 4, arbitrary: valid.map(({ entries, arrays }) => Buffer.concat(frameArrays(LOG_MAGIC, entries, arrays))) },
    { weight: 2, arbitrary: valid.chain(({ entries, arrays }) => jsonMutated(entries).map((h) => Buffer.concat(frameArrays(LOG_MAGIC, h, arrays)))) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }).map((h) => Buffer.concat(frameArrays(LOG_MAGIC, h, []))) },
  );
  return fc.oneof({ weight: 4, arbitrary: framed }, { weight: 2, arbitrary: mutated(framed) }, { weight: 1, arbitrary: garbage });
}

/**
 * tessera.v1.ShardAdmin, every method: Checkpoint and MoveSlots with a worker
 * certificate (the request is decoded, then refused: no checkpoint is written
 * anywhere, no slot moves), a move's payload (ImportSlots, ApplyLog,
 * DropSlots) as the shard that owns every slot (the deepest a caller gets:
 * past the sender check, to the payload's own), ExportModel as a reader.
 */
export function adminMethods(ctx: FuzzContext, config: ClusterConfig): FuzzMethod[] {
  const slots = fc.array(slotArb(ctx), { maxLength: 8 });
  return [
    unary('ShardAdmin', 'Checkpoint', 'worker', fc.record({ directory: anyText, atStep: anyNumber })),
    unary('ShardAdmin', 'MoveSlots', 'worker', fc.record({ slots, targetId: likely('s0', anyText), targetAddress: anyText })),
    unary('ShardAdmin', 'ImportSlots', 'owner', importPayload(ctx, config).map((data) => ({ data }))),
    unary('ShardAdmin', 'ApplyLog', 'owner', logPayload(ctx).map((data) => ({ data }))),
    unary('ShardAdmin', 'DropSlots', 'owner', fc.record({ slots })),
    unary('ShardAdmin', 'ExportModel', 'reader', fc.record({ atStep: likely(0, anyNumber) }), 'server-stream'),
  ];
}

/**
 * tessera.v1.Membership, every method, as an admin (who may call them all) of
 * a throwaway membership server: configurations, maps and members of the
 * right shape with one part wrong, or not JSON at all.
 */
export function membershipMethods(config: ClusterConfig, map: ShardMap): FuzzMethod[] {
  const kind = likely<string>('shard', fc.oneof(fc.constant('worker'), anyText));
  const member = { id: 'm1', address: '127.0.0.1:1', bulkAddress: '127.0.0.1:2', startedAt: 0 };
  return [
    unary('Membership', 'GetCluster', 'admin', fc.constant({})),
    unary('Membership', 'CreateCluster', 'admin', fc.record({ configJson: jsonTextMutated(config), force: fc.boolean() })),
    unary('Membership', 'CompareAndSetMap', 'admin', fc.record({ expectedEpoch: fc.oneof(fc.nat(3), anyNumber), mapJson: jsonTextMutated({ ...map, epoch: map.epoch + 1 }) })),
    unary('Membership', 'Register', 'admin', fc.record({ kind, memberJson: jsonTextMutated(member), ttlMs: fc.oneof(fc.constant(1000), anyNumber) })),
    unary('Membership', 'Deregister', 'admin', fc.record({ kind, id: likely('m1', anyText) })),
    unary('Membership', 'ListMembers', 'admin', fc.record({ kind })),
    { ...unary('Membership', 'WatchMap', 'admin', fc.constant({}), 'server-stream'), endless: true },
    unary('Membership', 'ClaimWork', 'admin', fc.record({ workerId: likely('w', anyText), epochs: fc.oneof(fc.nat(3), anyNumber), blocksPerEpoch: fc.oneof(fc.nat(8), anyNumber), floor: anyNumber, graceMs: anyNumber })),
    unary('Membership', 'CompleteWork', 'admin', fc.record({ workerId: likely('w', anyText), item: anyNumber })),
    unary('Membership', 'GetWorkProgress', 'admin', fc.constant({})),
  ];
}

/** One call to any of `methods`, each method about as often as the others. */
export function callArb(methods: FuzzMethod[]): fc.Arbitrary<FuzzCall> {
  return fc.oneof(...methods.map((method) => method.messages.map((messages) => ({ method, messages }))));
}

