import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { slotStart } from '../../cluster/slots.js';
import { type TesseraClient } from '../../client/tessera-client.js';
import { type Shard } from '../../server/shard.js';
import { waitFor } from '../helpers/cli.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { RawBulk } from '../helpers/raw-bulk.js';
import { f32, rawClient, rawPush } from '../helpers/raw-shard.js';
import { type Transport, forEachTransport } from '../helpers/transports.js';

const D = 131_072;
const SLOTS = 64;
/** Shard 0's slots, and how many values they hold. */
const OWNED = { begin: 0, end: 32 };
const N = slotStart(OWNED.end, D, SLOTS);
/** A push's payload travels in this many pieces: gRPC messages, or writes to the bulk socket. */
const PIECES = 4;

interface Header {
  epoch: number;
  ranges: { begin: number; end: number }[];
  workerId: string;
  seq: number;
  model: string;
}
type Answer = { ok: true; appliedSlots: number; duplicateSlots: number } | { ok: false; code: number; details: string };

/** One push to one shard, sent as a test says, bypassing the typed client. */
interface RawPusher {
  /** The header, then `values` in PIECES pieces; the shard's answer. */
  push(header: Header, values: Float32Array): Promise<Answer>;
  /** The header and the first half of `values`; once `started` resolves, the connection is cut. */
  cut(header: Header, values: Float32Array, started: () => Promise<void>): Promise<void>;
  close(): void;
}

const pieces = (values: Float32Array): { offset: number; values: Float32Array }[] =>
  Array.from({ length: PIECES }, (_, k) => {
    const [from, to] = [Math.floor((k * values.length) / PIECES), Math.floor(((k + 1) * values.length) / PIECES)];
    return { offset: from, values: values.subarray(from, to) };
  });

/** Chunked `tessera.v1.Shard/Push` streams; a cut is a cancelled call. */
function grpcPusher(address: string): RawPusher {
  const raw = rawClient(address);
  const messages = (header: Header, values: Float32Array) => pieces(values).map((p, k) => ({ ...(k === 0 ? { header } : {}), offset: p.offset, values: f32(p.values) }));
  return {
    async push(header, values) {
      const r = await rawPush(raw, messages(header, values));
      return r.ok ? { ok: true, appliedSlots: r.value.appliedSlots, duplicateSlots: r.value.duplicateSlots } : { ok: false, code: r.error.code, details: r.error.details };
    },
    async cut(header, values, started) {
      let answered: (err: grpc.ServiceError | null) => void = () => undefined;
      const answer = new Promise<grpc.ServiceError | null>((resolve) => (answered = resolve));
      const call = raw.push((err) => answered(err));
      call.on('error', () => undefined);
      await Promise.all(messages(header, values).slice(0, PIECES / 2).map((m) => new Promise<void>((resolve) => call.write(m, () => resolve()))));
      await started();
      call.cancel();
      expect((await answer)?.code, 'the cancelled call').to.equal(grpc.status.CANCELLED);
    },
    close: () => raw.close(),
  };
}

/** Frames on the bulk port: a push is its header, then its payload in pieces; a cut is a destroyed socket. */
function bulkPusher(address: string): RawPusher {
  const conn = new RawBulk(address);
  const head = (header: Header, id: number) => ({ id, op: 'push', length: N, ...header });
  return {
    async push(header, values) {
      conn.send(head(header, 1));
      for (const p of pieces(values)) conn.sendRaw(f32(p.values));
      const reply = (await conn.next())?.reply;
      if (!reply) throw new Error('the shard closed the bulk connection instead of answering');
      if (!reply.ok) return { ok: false, code: reply.code, details: reply.details };
      if (!('appliedSlots' in reply)) throw new Error(`a push answered as a pull: ${JSON.stringify(reply)}`);
      return { ok: true, appliedSlots: reply.appliedSlots, duplicateSlots: reply.duplicateSlots };
    },
    async cut(header, values, started) {
      const own = new RawBulk(address);
      own.send(head(header, 2));
      for (const p of pieces(values).slice(0, PIECES / 2)) own.sendRaw(f32(p.values));
      await own.flushed();
      await started();
      own.close();
    },
    close: () => conn.close(),
  };
}

/** Counts the pushes the shard admits (both transports open every push with Shard.beginPush) until `restore`. */
function watch(shard: Shard): { begun: number; restore(): void } {
  const { beginPush } = shard;
  const seen = {
    begun: 0,
    restore() {
      shard.beginPush = beginPush;
    },
  };
  shard.beginPush = (...a) => {
    seen.begun++;
    return beginPush.apply(shard, a);
  };
  return seen;
}

/**
 * docs/wire-protocol.md, "Push: each slot whole, as it arrives", over each
 * transport: a push refused at its very end, or cut off half-way, leaves each
 * slot of the shard either untouched or applied once, the applied ones a
 * prefix of the push's slots in order (the slots before the refusal or the
 * cut); a retry with the same (worker id, seq) then applies exactly the rest,
 * and a second retry is answered as a duplicate.
 */
forEachTransport('functional: a push that fails half-way keeps whole slots only, and its retry applies the rest once', function (transport: Transport) {
  this.timeout(30_000);
  let cluster: TestCluster;
  let client: TesseraClient;
  let raw: RawPusher;
  const WORKER = 'w-fail';
  const header = (seq: number): Header => ({ epoch: 1, ranges: [OWNED], workerId: WORKER, seq, model: 'flat' });
  /** Multiples of 1/64 in [−1, 1]: w − g is one rounding, so values can be checked exactly. */
  const good = Float32Array.from({ length: D }, (_, i) => (((i * 37) % 129) - 64) / 64);
  const SLOT = D / SLOTS;

  before(async () => {
    cluster = await startCluster({ shards: 2, model: flatModel(D), slots: SLOTS, optimizer: { name: 'sgd', learningRate: 1 }, transport });
    client = await cluster.client({ workerId: WORKER });
    raw = (transport === 'grpc' ? grpcPusher : bulkPusher)(transport === 'grpc' ? cluster.shards[0]!.address : cluster.shards[0]!.bulkAddress);
  });
  after(async () => {
    raw?.close();
    await cluster?.close();
  });

  /**
   * How many of shard 0's slots (in push order) hold `before − good` (the push applied once); every
   * other slot must be bit-identical to `before`, and the applied ones must come first.
   */
  function appliedPrefix(before: Float32Array, after: Float32Array): number {
    let applied = 0;
    for (let s = OWNED.begin; s < OWNED.end; s++) {
      let once = true;
      let untouched = true;
      for (let i = s * SLOT; i < (s + 1) * SLOT; i++) {
        once &&= after[i] === Math.fround(before[i]! - good[i]!);
        untouched &&= Object.is(after[i], before[i]);
      }
      if (once && !untouched) {
        if (applied !== s - OWNED.begin) expect.fail(`slot ${s} applied after an untouched slot: the applied slots are not a prefix`);
        applied++;
      } else if (!untouched) expect.fail(`slot ${s} is neither untouched nor applied once`);
    }
    for (let i = N; i < D; i++) if (!Object.is(after[i], before[i])) expect.fail(`element ${i} of shard 1 changed`);
    return applied;
  }

  /** The retry the worker sends after a failed push: whole, good, same seq, with `applied` of shard 0's slots in already; then once more. */
  async function retriedTwice(seq: number, before: Float32Array, applied: number): Promise<void> {
    const first = await client.push(good, seq);
    expect(first, 'the retry').to.include({ seq, appliedSlots: SLOTS - applied, duplicateSlots: applied });
    const second = await client.push(good, seq);
    expect(second, 'the second retry').to.include({ seq, appliedSlots: 0, duplicateSlots: SLOTS });
    const after = await client.pull();
    for (let i = 0; i < D; i++) if (after[i] !== Math.fround(before[i]! - good[i]!)) expect.fail(`element ${i}: ${after[i]}, want ${Math.fround(before[i]! - good[i]!)} (applied once)`);
  }

  it('a push whose last slot carries a NaN: every slot before it is applied, the last is not; the retry applies it once', async () => {
    const before = await client.pull();
    const nan = good.slice(0, N);
    nan[N - 1] = NaN;
    const seq = 1_001;
    const answer = await raw.push(header(seq), nan);
    expect(answer.ok, 'the push was refused').to.equal(false);
    if (answer.ok) return;
    expect(answer.code).to.equal(grpc.status.INVALID_ARGUMENT);
    const last = OWNED.end - 1;
    expect(answer.details).to.match(new RegExp(`non-finite value \\(NaN\\) at element ${N - 1} \\(slot ${last}\\); ${last} slots before it were applied, none from slot ${last} on`));
    expect(appliedPrefix(before, await client.pull()), 'slots applied').to.equal(OWNED.end - OWNED.begin - 1);
    await retriedTwice(seq, before, OWNED.end - OWNED.begin - 1);
  });

  it('a connection cut after the header and half the payload keeps whole slots only; the retry applies the rest once', async () => {
    const before = await client.pull();
    const seq = 2_002;
    const seen = watch(cluster.shards[0]!.shard);
    try {
      await raw.cut(header(seq), good.subarray(0, N), async () => void (await waitFor('the shard to admit the push', () => seen.begun > 0, 5_000, 5)));
      // Time for the shard to see the cut: a slot applied after it would show in the values, or in the retry's counts.
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      seen.restore();
    }
    // Half the payload is half the slots: at most those were complete when the connection went.
    const applied = appliedPrefix(before, await client.pull());
    expect(applied, 'slots applied before the cut').to.be.at.most((OWNED.end - OWNED.begin) / 2);
    // TCP delivers every byte sent before the close, and the bulk edge reads them in order: exactly those slots.
    if (transport === 'bulk') expect(applied, 'slots whose bytes all arrived').to.equal((OWNED.end - OWNED.begin) / 2);
    await retriedTwice(seq, before, applied);
  });
});
