import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { CHANNEL_OPTIONS } from '../../cluster/grpc-client.js';
import { BULK_READ_BUFFER_BYTES, MAX_BULK_HEADER_BYTES, encodeHead } from '../../cluster/wire/bulk-frames.js';
import { PUSH_WINDOW_VALUES } from '../../server/push-assembler.js';
import { waitFor } from '../helpers/cli.js';
import { FreezingProxy } from '../helpers/freezing-proxy.js';
import { RawBulk } from '../helpers/raw-bulk.js';
import { f32, rawClient, rawPush } from '../helpers/raw-shard.js';
import { MiB, ShardProcess, canMeasureRss } from '../helpers/shard-process.js';

/*
 * What a caller can make a shard hold, measured as the shard process's
 * resident memory (docs/security.md, "Limits"): floods of headers, pulls
 * never read, idle and half-open connections. The shard runs alone in a child
 * process (helpers/shard-process.ts); each case starts a fresh one, takes its
 * resident memory after a full collection as the baseline, runs the attack,
 * and holds the peak's growth to a bound worked out from the documented
 * limits. Then the attackers go, and the shard must still pull and push
 * exact values.
 */

/** 4 Mi float32 values: a whole push or a whole pull is 16 MiB. */
const D = 1 << 22;
const SLOTS = 256;
/** `--max-connections` of each listener. */
const CAP = 64;
const WINDOW_BYTES = PUSH_WINDOW_VALUES * 4;

/*
 * What the documented limits leave out, allowed for in every bound:
 * - SLACK: the process's own noise between a baseline and a peak (garbage not
 *   yet collected, code compiled on first use, allocator arenas).
 * - an open connection's own bookkeeping: socket and handle, JavaScript
 *   objects, kernel-side pages of its read buffer that small reads touch.
 * - a gRPC push stream's: the call's objects, its HTTP/2 stream, the push's
 *   slot list (2 numbers per slot).
 */
const SLACK = 32 * MiB;
const BULK_CONNECTION_BYTES = 128 << 10;
const GRPC_CONNECTION_BYTES = 256 << 10;
const GRPC_STREAM_BYTES = 32 << 10;

const fmt = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

describe('functional: memory stays bounded under floods (RSS)', function () {
  this.timeout(60_000);
  let shard: ShardProcess | null = null;
  /** Sockets and clients a case opened, closed after it whatever happened. */
  const opened: { close(): void }[] = [];
  const figures: string[] = [];
  let seq = 1;

  before(function () {
    if (!canMeasureRss()) this.skip();
  });
  afterEach(async () => {
    for (const o of opened.splice(0)) o.close();
    await shard?.stop();
    shard = null;
  });
  after(() => {
    if (figures.length > 0) console.log(`      resident memory growth, bound vs measured:\n${figures.map((f) => `        ${f}`).join('\n')}`);
  });

  /** A fresh shard process with the given idle timeout; every value of its model pulled once (created) and the push path warmed. */
  async function startShard(idleMs: number): Promise<ShardProcess> {
    shard = await ShardProcess.start({ elements: D, slots: SLOTS, limits: { maxConnections: CAP, idleMs, maxStreamsPerConnection: 1024 } });
    await servesExactly(shard);
    return shard;
  }

  /**
   * Pulls every value over the bulk port, pushes a gradient (over `via`), and
   * pulls again: each value must be exactly the first pull's minus the
   * gradient (sgd, learning rate 1).
   */
  async function servesExactly(s: ShardProcess, via: 'bulk' | 'grpc' = 'bulk'): Promise<void> {
    const before = await pullAll(s);
    const gradient = new Float32Array(D);
    for (let i = 0; i < D; i++) gradient[i] = ((i % 7) - 3) / 8;
    const header = { epoch: 1, ranges: [{ begin: 0, end: SLOTS }], workerId: 'checker', seq: seq++, model: 'flat' };
    if (via === 'bulk') {
      const conn = new RawBulk(s.bulkAddress);
      conn.send({ id: 1, op: 'push', length: D, ...header }, f32(gradient));
      const r = await conn.next();
      conn.close();
      expect(r?.reply.ok && 'appliedSlots' in r.reply ? r.reply.appliedSlots : r?.reply, 'the push is applied').to.equal(SLOTS);
    } else {
      const client = rawClient(s.address, { ...CHANNEL_OPTIONS, 'grpc.use_local_subchannel_pool': 1 });
      const chunk = 1 << 18;
      const messages = [];
      for (let at = 0; at < D; at += chunk) messages.push({ ...(at === 0 ? { header } : {}), offset: at, values: f32(gradient.subarray(at, at + chunk)) });
      const r = await rawPush(client, messages);
      client.close();
      expect(r.ok ? r.value.appliedSlots : r.error.message, 'the push is applied').to.equal(SLOTS);
    }
    const after = await pullAll(s);
    let wrong = 0;
    for (let i = 0; i < D; i++) if (after[i] !== Math.fround(before[i]! - gradient[i]!)) wrong++;
    expect(wrong, 'values that are not exactly the pull before minus the gradient').to.equal(0);
  }

  async function pullAll(s: ShardProcess): Promise<Float32Array> {
    const conn = new RawBulk(s.bulkAddress);
    conn.send({ id: 1, op: 'pull', epoch: 1, ranges: [{ begin: 0, end: SLOTS }], workerId: 'checker' });
    const r = await conn.next();
    conn.close();
    expect(r?.reply.ok, JSON.stringify(r?.reply)).to.equal(true);
    const v = r!.values;
    return new Float32Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
  }

  /** A plain TCP connection to `address`, kept in `opened`; resolves once connected. */
  async function connect(address: string): Promise<net.Socket> {
    const i = address.lastIndexOf(':');
    const socket = net.connect({ host: address.slice(0, i), port: Number(address.slice(i + 1)) });
    socket.on('error', () => undefined);
    opened.push({ close: () => socket.destroy() });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('close', () => reject(new Error(`connection to ${address} closed before it was established`)));
    });
    return socket;
  }

  /** A Describe call on `client`'s connection: answered once the server has read every frame sent before it there. */
  function roundTrip(client: grpc.Client): Promise<void> {
    const stub = client as unknown as { describe(req: object, cb: (err: Error | null) => void): void };
    return new Promise<void>((resolve, reject) => stub.describe({}, (err) => (err ? reject(err) : resolve())));
  }

  /** Runs `attack` between a settled baseline and the peak that follows, and holds the growth to `bound`. */
  async function measure(name: string, bound: number, attack: () => Promise<void>): Promise<void> {
    const s = shard!;
    const baseline = await s.settledRss();
    const watch = s.watchPeak();
    let growth: number;
    try {
      await attack();
    } finally {
      growth = watch.stop() - baseline;
      figures.push(`${name}: bound ${fmt(bound)}, measured ${fmt(growth)} (baseline ${fmt(baseline)})`);
    }
    expect(growth, `${name}: resident memory grew by ${fmt(growth)} over a baseline of ${fmt(baseline)}; the bound is ${fmt(bound)}`).to.be.at.most(bound);
  }

  /** Waits until the shard holds no connection on either port (the attackers gone), so the checks that follow are let in. */
  async function allClosed(s: ShardProcess, timeoutMs = 10_000): Promise<void> {
    await waitFor('the shard to hold no connection', async () => {
      const c = await s.connections();
      return c.bulk === 0 && c.grpc === 0;
    }, timeoutMs, 50);
  }

  it('gRPC: 16 connections × 128 push streams that send only their header stay open and take no window', async () => {
    const s = await startShard(30_000);
    const CONNECTIONS = 16;
    const STREAMS = 128;
    /*
     * A header alone takes no memory for values (push-assembler.ts): each
     * stream costs its bookkeeping. Without that rule each header would take
     * its 1 MiB window, 2 048 MiB here; without the window, the whole 16 MiB
     * push, 32 GiB.
     */
    const bound = SLACK + CONNECTIONS * GRPC_CONNECTION_BYTES + CONNECTIONS * STREAMS * GRPC_STREAM_BYTES;
    const calls: grpc.ClientWritableStream<object>[] = [];
    await measure('gRPC header-only pushes', bound, async () => {
      for (let c = 0; c < CONNECTIONS; c++) {
        const client = rawClient(s.address, { ...CHANNEL_OPTIONS, 'grpc.use_local_subchannel_pool': 1 });
        opened.push(client);
        for (let k = 0; k < STREAMS; k++) {
          const call = client.push(() => undefined);
          call.on('error', () => undefined);
          call.write({ header: { epoch: 1, ranges: [{ begin: 0, end: SLOTS }], workerId: 'flood', seq: 1 + c * STREAMS + k, model: 'flat' }, offset: 0 });
          calls.push(call);
        }
        await roundTrip(client);
      }
    });
    for (const call of calls) call.cancel();
    for (const o of opened.splice(0)) o.close();
    await allClosed(s);
    await servesExactly(s, 'grpc');
  });

  it(`bulk: ${CAP} connections that send only a push header (16 MiB announced each) take no window`, async () => {
    const s = await startShard(30_000);
    /*
     * Each holds its connection's bookkeeping and nothing for values. Without
     * the rule a header would take its 1 MiB window (64 MiB more, over the
     * bound); without the window, the whole 16 MiB push (1 GiB).
     */
    const bound = SLACK + CAP * BULK_CONNECTION_BYTES;
    const head = (k: number) => encodeHead({ id: 1, op: 'push', length: D, epoch: 1, ranges: [{ begin: 0, end: SLOTS }], workerId: 'flood', seq: k + 1, model: 'flat' });
    let sent = 0;
    await measure('bulk header-only pushes', bound, async () => {
      for (let k = 0; k < CAP; k++) {
        const bytes = head(k);
        (await connect(s.bulkAddress)).write(bytes);
        sent += bytes.length;
      }
      // Every header read (and so handled: the server parses what it reads at once).
      await waitFor('the shard to read every header', async () => (await s.connections()).bulkBytesRead === sent, 10_000, 20);
    });
    for (const o of opened.splice(0)) o.close();
    await allClosed(s);
    await servesExactly(s);
  });

  it('bulk: unfinished headers are held up to the 1 MiB header limit; a connection announcing more is closed', async () => {
    const s = await startShard(30_000);
    const HELD = 48;
    const OVER = CAP - HELD;
    const unfinished = MAX_BULK_HEADER_BYTES - 64;
    /*
     * A connection whose header is announced at the limit and not finished
     * holds what it sent (a copy of up to 1 MiB) and its read buffer, which
     * reads this large fill (1 MiB). One announcing more than the limit is
     * closed on its first 4 bytes; without the limit each of the 16 would
     * hold the 16 MiB it sends (256 MiB, over the bound), and any more it
     * chose to send.
     */
    const bound = SLACK + HELD * (MAX_BULK_HEADER_BYTES + BULK_READ_BUFFER_BYTES + BULK_CONNECTION_BYTES);
    const partial = Buffer.alloc(4 + unfinished, 0x20);
    partial.writeUInt32LE(MAX_BULK_HEADER_BYTES, 0);
    const oversized = Buffer.alloc(16 * MiB, 0x20);
    oversized.writeUInt32LE(64 * MiB, 0);
    let closed = 0;
    await measure('bulk unfinished headers', bound, async () => {
      for (let k = 0; k < HELD; k++) (await connect(s.bulkAddress)).write(partial);
      await waitFor('the shard to read every unfinished header', async () => (await s.connections()).bulkBytesRead === HELD * partial.length, 10_000, 20);
      for (let k = 0; k < OVER; k++) {
        const socket = await connect(s.bulkAddress);
        socket.once('close', () => closed++);
        socket.write(oversized);
      }
      await waitFor('the connections announcing too large a header to be closed', () => closed === OVER, 10_000, 20);
      expect((await s.connections()).bulk, 'connections still held').to.equal(HELD);
    });
    for (const o of opened.splice(0)) o.close();
    await allClosed(s);
    await servesExactly(s);
  });

  it('bulk: pulls sent and never read hold one reply per connection; the rest are not read', async () => {
    const s = await startShard(30_000);
    const CONNECTIONS = 8;
    const PULLS = 8;
    // Every other slot: the reply's pieces do not lie side by side in memory, so the shard copies them together (8 MiB a reply).
    const ranges = Array.from({ length: SLOTS / 2 }, (_, k) => ({ begin: 2 * k, end: 2 * k + 1 }));
    const REPLY_BYTES = (D / 2) * 4;
    /*
     * A connection holds the reply being written and one pull waiting, its
     * socket not read meanwhile (a third pull read before the replies are
     * out ends the connection). Without that, each of the 8 pulls of each
     * connection would be answered into its socket's queue: 64 × 8 MiB = 512 MiB.
     */
    const bound = SLACK + CONNECTIONS * (REPLY_BYTES + BULK_CONNECTION_BYTES);
    const pull = (id: number) => encodeHead({ id, op: 'pull', epoch: 1, ranges, workerId: 'flood' });
    const pullBytes = pull(1).length;
    await measure('bulk unread pulls', bound, async () => {
      const sockets: net.Socket[] = [];
      for (let c = 0; c < CONNECTIONS; c++) {
        const socket = await connect(s.bulkAddress);
        // Reads until the first reply starts (its values exist by then in the shard), then never again.
        const started = new Promise<void>((resolve) => socket.once('data', () => (socket.pause(), resolve())));
        socket.write(pull(1));
        await started;
        sockets.push(socket);
      }
      // The second pull of each is read, and waits; the rest are sent behind it.
      for (const socket of sockets) socket.write(pull(2));
      await waitFor('the shard to read every second pull', async () => (await s.connections()).bulkBytesRead >= CONNECTIONS * 2 * pullBytes, 10_000, 20);
      for (const socket of sockets) for (let id = 3; id <= PULLS; id++) socket.write(pull(id));
      // Time for the shard to read them, were it reading (nothing to wait on when it is not, as it should be).
      await new Promise((r) => setTimeout(r, 300));
      const c = await s.connections();
      // Each connection still open has had at most its two pulls read; the others were closed.
      expect(c.bulkBytesRead, `bytes read on ${c.bulk} open connections`).to.be.at.most(c.bulk * 2 * pullBytes);
    });
    for (const o of opened.splice(0)) o.close();
    await allClosed(s);
    await servesExactly(s);
  });

  it(`idle connections: ${CAP} kept on each port, the rest closed as they come; the kept ones closed after the idle timeout`, async () => {
    const IDLE_MS = 2_000;
    const s = await startShard(IDLE_MS);
    const EXTRA = 16;
    /*
     * Each kept connection holds its bookkeeping (a bulk one its read buffer
     * too, untouched until something arrives). Without the cap all 80 per
     * port would be kept (the count below fails), and any number more;
     * without the idle timeout they would never be closed (the wait fails).
     */
    const bound = SLACK + CAP * (BULK_CONNECTION_BYTES + GRPC_CONNECTION_BYTES);
    let refused = 0;
    await measure('idle connections', bound, async () => {
      for (const address of [s.bulkAddress, s.address]) {
        for (let k = 0; k < CAP + EXTRA; k++) {
          const socket = await connect(address).catch(() => null);
          if (!socket) {
            refused++;
            continue;
          }
          socket.once('close', () => refused++);
        }
      }
      await waitFor('the connections beyond the cap to be closed', () => refused >= 2 * EXTRA, 5_000, 20);
      expect(await s.connections(), 'connections kept').to.deep.include({ bulk: CAP, grpc: CAP });
    });
    // Counted by the shard: these clients read nothing, so some never see their end.
    await allClosed(s, 2 * IDLE_MS + 8_000);
    await servesExactly(s);
  });

  it('half-open connections (the client vanishes mid-push or mid-pull): held until the idle timeout, then closed', async () => {
    const IDLE_MS = 2_000;
    const s = await startShard(IDLE_MS);
    const PUSHES = 16;
    const PULLS = 8;
    const FIRST = Buffer.alloc(256 << 10);
    const ranges = Array.from({ length: SLOTS / 2 }, (_, k) => ({ begin: 2 * k, end: 2 * k + 1 }));
    const REPLY_BYTES = (D / 2) * 4;
    /*
     * A push that sent its first values holds its window (1 MiB) and a bulk
     * one its read buffer; a pull holds its reply (8 MiB: every other slot,
     * copied). Without the idle timeout (and, on gRPC, keepalive pings, since
     * a connection with a call open is not idle) they are held for ever, and
     * their connections count against the cap for ever.
     */
    const bound =
      SLACK +
      PUSHES * (WINDOW_BYTES + BULK_READ_BUFFER_BYTES + BULK_CONNECTION_BYTES) +
      PULLS * (REPLY_BYTES + BULK_CONNECTION_BYTES) +
      PUSHES * (WINDOW_BYTES + GRPC_CONNECTION_BYTES + GRPC_STREAM_BYTES);
    const proxy = await FreezingProxy.start(s.address);
    opened.push(proxy);
    await measure('half-open connections', bound, async () => {
      const pushHead = (seq: number) => encodeHead({ id: 1, op: 'push', length: D, epoch: 1, ranges: [{ begin: 0, end: SLOTS }], workerId: 'gone', seq, model: 'flat' });
      const pullHead = encodeHead({ id: 1, op: 'pull', epoch: 1, ranges, workerId: 'gone' });
      // A client gone without FIN or RST is one whose socket is never read, written or closed again
      // (helpers/freezing-proxy.ts says why that is the nearest loopback allows).
      // Bulk pushes: the header and the first 256 KiB of values, then nothing, ever. Resolves to the bytes sent.
      const bulkPushes = Array.from({ length: PUSHES }, async (_, k) => {
        const socket = await connect(s.bulkAddress);
        socket.write(pushHead(k + 1));
        socket.write(FIRST);
        socket.pause();
        return pushHead(k + 1).length + FIRST.length;
      });
      // Bulk pulls: nothing read once the reply has begun.
      const bulkPulls = Array.from({ length: PULLS }, async () => {
        const socket = await connect(s.bulkAddress);
        const started = new Promise<void>((resolve) => socket.once('data', () => (socket.pause(), resolve())));
        socket.write(pullHead);
        await started;
        return pullHead.length;
      });
      // gRPC pushes through the proxy, as the bulk ones; the proxy then freezes.
      const grpcPushes = Array.from({ length: PUSHES }, async (_, k) => {
        const client = rawClient(proxy.address, { ...CHANNEL_OPTIONS, 'grpc.use_local_subchannel_pool': 1 });
        opened.push(client);
        const call = client.push(() => undefined);
        call.on('error', () => undefined);
        call.write({ header: { epoch: 1, ranges: [{ begin: 0, end: SLOTS }], workerId: 'gone', seq: 1000 + k, model: 'flat' }, offset: 0 });
        call.write({ offset: 0, values: FIRST });
        await roundTrip(client);
      });
      const sent = (await Promise.all([...bulkPushes, ...bulkPulls])).reduce((a, b) => a + b, 0);
      await Promise.all(grpcPushes);
      proxy.freeze();
      await waitFor('the shard to read what the bulk clients sent', async () => (await s.connections()).bulkBytesRead === sent, 5_000, 20);
      expect(await s.connections(), 'connections held').to.deep.include({ bulk: PUSHES + PULLS, grpc: PUSHES });
    });
    await allClosed(s, 3 * IDLE_MS + 8_000);
    for (const o of opened.splice(0)) o.close();
    await servesExactly(s, 'grpc');
    await servesExactly(s);
  });
});
