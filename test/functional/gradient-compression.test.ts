import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { type TesseraClient } from '../../client/tessera-client.js';
import { type Compression, decodeSlot, encodedSlotBytes, encodeSlot, parseCompression } from '../../cluster/wire/gradient-codec.js';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { slotStart } from '../../cluster/slots.js';
import { seededFloats } from '../helpers/random.js';
import { rawClient, rawPush } from '../helpers/raw-shard.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';

const ELEMENTS = 20_000;
const SLOTS = 64;
const CODECS = ['fp16', 'int8', 'topk:0.1'] as const;

/** What a client under `c` sends for `g`: each slot encoded, then decoded. */
function sentFor(c: Compression, g: Float32Array): { sent: Float32Array; bytes: number } {
  const sent = new Float32Array(g.length);
  let bytes = 0;
  for (let s = 0; s < SLOTS; s++) {
    const a = slotStart(s, ELEMENTS, SLOTS);
    const b = slotStart(s + 1, ELEMENTS, SLOTS);
    const enc = encodeSlot(c, g.subarray(a, b));
    decodeSlot(c, enc, 0, sent.subarray(a, b));
    bytes += enc.byteLength;
  }
  return { sent, bytes };
}

/**
 * Gradient compression on the wire, over both transports: a push under each
 * codec applies exactly what the codec's encoding decodes to, counts its
 * encoded bytes in the acknowledgement, and keeps what it did not send for
 * the next push (error feedback: a gradient followed by zero gradients is
 * applied whole in the end); an encoded push that does not decode (a NaN in
 * a scale, a wrong size, an unknown codec) is refused whole, nothing applied.
 */
describe('functional: gradient compression', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  before(async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(ELEMENTS), optimizer: { name: 'sgd', learningRate: 1 }, slots: SLOTS });
  });
  after(async () => {
    await cluster.close();
  });

  for (const transport of ['bulk', 'grpc'] as const) {
    for (const codec of CODECS) {
      it(`${codec} over ${transport}: applies what the codec decodes to, counts its bytes, and sends the rest later`, async () => {
        const c = parseCompression(codec);
        const client: TesseraClient = await cluster.client({ workerId: `${transport}-${codec}`, transport, compression: codec });
        const start = await client.pull();
        const g = seededFloats(ELEMENTS, 11).map((v) => v * 0.01);
        const { sent, bytes } = sentFor(c, g);
        const stats = await client.push(g);
        expect(stats.wireBytes).to.equal(bytes);
        expect(stats.appliedSlots).to.equal(SLOTS);
        const after = await client.pull();
        for (let i = 0; i < ELEMENTS; i++) expect(after[i], `element ${i}`).to.equal(Math.fround(start[i]! - sent[i]!));
        // Error feedback: zero gradients carry what was not sent, until all of it is applied.
        for (let k = 0; k < 12; k++) await client.push(new Float32Array(ELEMENTS));
        const end = await client.pull();
        let worst = 0;
        for (let i = 0; i < ELEMENTS; i++) worst = Math.max(worst, Math.abs(start[i]! - g[i]! - end[i]!));
        expect(worst, 'what error feedback leaves unapplied').to.be.below(codec === 'fp16' ? 1e-6 : 2e-6);
        const traffic = client.traffic();
        expect(traffic.raw).to.equal(13 * ELEMENTS * 4);
        expect(traffic.wire).to.be.below(traffic.raw / (codec === 'fp16' ? 1.9 : 3.5));
      });
    }
  }

  it('refuses an encoded push that does not decode, a wrong size or an unknown codec, and applies nothing', async () => {
    const address = cluster.shards[0]!.address;
    const owned = cluster.shards[0]!.shard.owned()[0]!;
    const range = { begin: owned.begin, end: owned.begin + 1 };
    const n = slotStart(range.begin + 1, ELEMENTS, SLOTS) - slotStart(range.begin, ELEMENTS, SLOTS);
    const reader = await cluster.client({ workerId: 'reader' });
    const before = await reader.pull();
    const raw = rawClient(address);
    const header = (extra: object) => ({ epoch: reader.epoch, ranges: [range], workerId: 'raw', seq: 1, model: 'flat', ...extra });
    const good = encodeSlot({ kind: 'int8' }, new Float32Array(n).fill(0.5));
    const nanScale = Buffer.from(good);
    nanScale.writeFloatLE(NaN, 0);
    const cases: [string, object[], RegExp][] = [
      ['a NaN scale', [{ header: header({ codec: 'CODEC_INT8', wireBytes: good.length }), offset: 0, values: nanScale }], /not finite|NaN/],
      ['a wrong size', [{ header: header({ codec: 'CODEC_INT8', wireBytes: good.length + 4 }), offset: 0, values: Buffer.concat([good, Buffer.alloc(4)]) }], /encoded bytes/],
      ['truncated', [{ header: header({ codec: 'CODEC_INT8', wireBytes: good.length }), offset: 0, values: Buffer.from(good).subarray(0, 10) }], /of the \d+ encoded bytes/],
      ['a topk ratio of 0', [{ header: header({ codec: 'CODEC_TOPK', topkRatio: 0, wireBytes: encodedSlotBytes({ kind: 'topk', ratio: 0.5 }, n) }), offset: 0, values: Buffer.alloc(8) }], /topk/],
    ];
    try {
      for (const [what, messages, message] of cases) {
        const r = await rawPush(raw, messages);
        expect(r.ok, what).to.equal(false);
        if (!r.ok) {
          expect(r.error.code, what).to.equal(status.INVALID_ARGUMENT);
          expect(r.error.details, what).to.match(message);
        }
      }
    } finally {
      raw.close();
    }
    const after = await reader.pull();
    expect(Buffer.from(after.buffer).equals(Buffer.from(before.buffer)), 'values unchanged').to.equal(true);
  });

  it('a finite gradient beyond float16 is refused before anything is sent', async () => {
    const client = await cluster.client({ workerId: 'big', compression: 'fp16' });
    const g = new Float32Array(ELEMENTS);
    g[ELEMENTS - 1] = 1e6;
    const err = await client.push(g).then(() => null, (e: Error) => e);
    expect(err).to.be.instanceOf(InvalidArgumentError);
    expect(err!.message).to.match(/65504|fp16|float16/);
  });
});
