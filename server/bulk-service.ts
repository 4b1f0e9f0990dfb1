import { once } from 'node:events';
import { status } from '@grpc/grpc-js';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { BULK_READ_BUFFER_BYTES, BulkFrameReader, type BulkReply, type BulkRequest, encodeHead } from '../cluster/wire/bulk-frames.js';
import { InvalidArgumentError } from '../cluster/errors.js';
import { createLogger } from '../cluster/log.js';
import { compressionOfBulk } from '../cluster/wire/codec-fields.js';
import { toStatus } from '../cluster/wire/status-codec.js';
import { ADMIN_RULES, DATA_RULES, checkActsAs, checkClockedPull, checkRole } from '../cluster/tls/authorization.js';
import { type Identity } from '../cluster/tls/identity.js';
import { type TransportSecurity, identityOfPeer, processSecurity } from '../cluster/tls/transport-security.js';
import { DEFAULT_LISTENER_LIMITS, type ListenerLimits } from '../cluster/listener-limits.js';
import { admitPull } from './admission.js';
import { entriesOf } from './migration.js';
import { type LogEntry } from './migration-log.js';
import { type GradientPool } from './gradient-pool.js';
import { PushAssembler } from './push-assembler.js';
import { type Shard, whenReplicated } from './shard.js';
import { type RequestMeter, type ShardMetrics, noMeter } from './shard-metrics.js';

const log = createLogger('bulk');

/** Bytes per write of a pull reply: views of slot memory, handed to the socket as they are. */
const PULL_PIECE_BYTES = 8 << 20;

/**
 * A shard's bulk transport (cluster/wire/bulk-frames.ts): dense pulls and pushes
 * over TCP (TLS under mTLS), with the same checks, roles, typed errors and
 * exactly-once rule as `tessera.v1.Shard` (shard-service.ts). A push's values
 * go from the socket into a pooled window and are applied slot by slot as
 * they arrive (push-assembler.ts); a pull's are written straight from slot
 * memory. A request that fails its checks gets an error reply and
 * its payload is read and dropped, so the connection carries on; only a
 * stream that cannot be parsed is closed.
 */
export class BulkServer {
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /**
   * Serves `shard` on `host:port`. Under mTLS the port is a TLS listener that
   * requires a client certificate of the cluster CA (and follows rotations),
   * and each request is checked as the gRPC services check theirs.
   * `metrics`: each push and pull is counted there (shard-metrics.ts).
   */
  static async start(shard: Shard, host: string, pool: GradientPool, port = 0, security: TransportSecurity = processSecurity(), limits: ListenerLimits = DEFAULT_LISTENER_LIMITS, metrics?: ShardMetrics, replicate?: ReplicaSink): Promise<BulkServer> {
    let bulk: BulkServer | undefined;
    const track = (socket: net.Socket) => {
      bulk!.sockets.add(socket);
      socket.on('close', () => bulk!.sockets.delete(socket));
      // A connection that carries nothing for idleMs is closed; the client re-dials on its next request.
      socket.setTimeout(limits.idleMs, () => socket.destroy());
    };
    let server: net.Server;
    if (security.kind === 'mtls') {
      const { material } = security;
      const tlsServer = tls.createServer({ ...material.current, requestCert: true, rejectUnauthorized: true }, (socket) => {
        track(socket);
        // TLS sockets read through 'data' events (Node offers `onread` only to plain sockets).
        const read = { on: (_bytes: Buffer) => undefined as void };
        socket.on('data', (chunk: Buffer) => read.on(chunk));
        serve(shard, pool, socket, read, { security, caller: identityOfPeer(socket.getPeerCertificate()) }, metrics, replicate);
      });
      const stop = material.onChange((files) => tlsServer.setSecureContext({ ...files }));
      tlsServer.on('close', stop);
      tlsServer.on('tlsClientError', (err) => log.debug(`bulk TLS handshake refused: ${err.message}`));
      server = tlsServer;
    } else {
      server = net.createServer({ pauseOnConnect: true }, (accepted) => {
        const { socket, read } = withReadBuffer(accepted);
        track(socket);
        serve(shard, pool, socket, read, { security, caller: null }, metrics, replicate);
      });
    }
    // Connections beyond the cap are closed as they are accepted (ListenerLimits).
    server.maxConnections = limits.maxConnections;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.once('listening', resolve);
      if (host) server.listen(port, host);
      else server.listen(port);
    }).catch((err: Error) => {
      throw new InvalidArgumentError(`cannot serve the bulk transport on ${host || '*'}:${port}: ${err.message}; pick another --bulk-port, or 0 for a free one`);
    });
    bulk = new BulkServer(server, (server.address() as net.AddressInfo).port);
    return bulk;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * The accepted connection, reading into one buffer of its own, reused read
 * after read, instead of a new buffer per read: a 64 MB push then allocates
 * nothing per read, where fresh buffers cost a full garbage collection every
 * 64 MB (docs/benchmarks.md). Node offers `onread` only to sockets it
 * creates, so the accepted socket's handle is moved into one created with it
 * (a documented option of `net.Socket`, `handle` being the internal one);
 * where that handle is not there (another Node), the plain socket and its
 * 'data' events are used. `read` is set by the caller.
 */
export function withReadBuffer(accepted: net.Socket): { socket: net.Socket; read: { on: (bytes: Buffer) => void } } {
  const read = { on: (_bytes: Buffer) => undefined as void };
  const raw = accepted as net.Socket & { _handle?: unknown };
  if (raw._handle) {
    const handle = raw._handle;
    raw._handle = null;
    const buffer = Buffer.allocUnsafe(BULK_READ_BUFFER_BYTES);
    const socket = new net.Socket({
      handle,
      readable: true,
      writable: true,
      onread: {
        buffer,
        callback: (n: number, buf: Uint8Array) => {
          read.on(Buffer.from(buf.buffer, buf.byteOffset, n));
          return true;
        },
      },
    } as net.SocketConstructorOpts);
    // The server counts the accepted socket as a connection until it is destroyed (server.close waits for it).
    socket.once('close', () => accepted.destroy());
    socket.resume();
    return { socket, read };
  }
  accepted.on('data', (chunk: Buffer) => read.on(chunk));
  accepted.resume();
  return { socket: accepted, read };
}

/** Who is on the other end: the identity of its certificate under mTLS (null under plaintext). */
interface BulkPeer {
  security: TransportSecurity;
  caller: Identity | null;
}

/**
 * What a backup does with a primary's updates that came over the bulk port
 * (`op: 'replicate'`; server/replication.ts): applies them, given the shard
 * id of the sender's certificate (null under plaintext), and says how many.
 */
export type ReplicaSink = (entries: LogEntry[], sender: string | null) => Promise<number>;

function serve(shard: Shard, pool: GradientPool, socket: net.Socket, read: { on: (bytes: Buffer) => void }, peer: BulkPeer, metrics?: ShardMetrics, replicate?: ReplicaSink): void {
  socket.setNoDelay(true);
  let busy = false;
  /**
   * A pull's reply is being written. A pull that arrives meanwhile (a client
   * that sends before it has read the last reply) waits, with the socket not
   * read, until the reply has left this process; a second one ends the
   * connection. So a connection makes the shard hold one reply at a time,
   * whoever is at the other end.
   */
  let replying = false;
  let waiting: { req: BulkRequest; id: number } | null = null;
  let push: { id: number; assembler: PushAssembler | null; error: unknown; meter: RequestMeter } | null = null;
  /** A primary's updates being received (`replicate`): their heads, their arrays' bytes, what they hold of the budget. */
  let incoming: { id: number; heads: unknown; buffer: Buffer | null; lent: Float32Array | null; error: unknown } | null = null;

  const reply = (r: BulkReply) => socket.write(encodeHead(r));
  /** Answers request `id` with the status of `err`; returns its code. */
  const fail = (id: number, err: unknown): number => {
    const s = toStatus(err);
    const metadata: Record<string, string> = {};
    for (const [k, v] of Object.entries(s.metadata.getMap())) metadata[k] = String(v);
    reply({ id, ok: false, code: s.code, details: s.details, metadata });
    return s.code;
  };

  const reader = new BulkFrameReader(
    (header) => {
      if (busy) throw new Error('a bulk request arrived before the previous one was answered');
      busy = true;
      const req = header as BulkRequest;
      const id = Number.isInteger(req?.id) ? req.id : 0;
      if (req?.op === 'pull') {
        if (!replying) void pull(req, id);
        else if (waiting) throw new Error('more than one bulk pull arrived while a reply was still being written; send one request at a time');
        else {
          waiting = { req, id };
          socket.pause();
        }
        return 0;
      }
      const length = req?.length;
      if (req?.op === 'replicate') {
        if (!(Number.isSafeInteger(length) && length! >= 0 && length! <= 2 ** 31)) throw new Error(`replicated updates need the length of their arrays in bytes; got ${JSON.stringify(header).slice(0, 120)}`);
        incoming = { id, heads: req.entries, buffer: null, lent: null, error: null };
        try {
          checkRole(peer.caller, peer.security, ADMIN_RULES['ApplyLog']!, 'replicated updates');
          if (!replicate) throw new InvalidArgumentError('this shard takes no replicated updates');
          // A pooled buffer, from the budget, in the float heap (the checks and updates then run as SIMD kernels); the arrays are read as views of it.
          const lent = pool.acquire(Math.ceil(length! / 4), 'replicated updates');
          incoming.lent = lent;
          incoming.buffer = Buffer.from(lent.buffer, lent.byteOffset, length!);
        } catch (err) {
          incoming.error = err;
        }
        return length!;
      }
      if (req?.op !== 'push' || !(Number.isSafeInteger(length) && length! >= 0 && length! <= 2 ** 31)) {
        throw new Error(`a bulk request needs op "pull" or "push" and, for a push, a length; got ${JSON.stringify(header).slice(0, 120)}`);
      }
      // What follows the header: length × 4 bytes of float32, or wireBytes of an encoded gradient.
      const wireBytes = req.compression ? req.wireBytes : length! * 4;
      if (!(Number.isSafeInteger(wireBytes) && wireBytes! >= 0 && wireBytes! <= 2 ** 33)) throw new Error(`a compressed bulk push needs its wireBytes; got ${JSON.stringify(header).slice(0, 120)}`);
      push = { id: req.id, assembler: null, error: null, meter: metrics?.request('push', 'bulk') ?? noMeter() };
      try {
        checkRole(peer.caller, peer.security, DATA_RULES['Push']!, 'a bulk push');
        checkHeaderTypes(req);
        checkActsAs(peer.caller, req.workerId, 'a push');
        if (!Array.isArray(req.ranges)) throw new InvalidArgumentError('a bulk push needs its slot ranges');
        const compression = compressionOfBulk(req.compression);
        const clock = req.clock !== undefined ? { clock: req.clock } : {};
        push.assembler = new PushAssembler(shard, pool, { epoch: req.epoch, ranges: req.ranges, workerId: req.workerId, seq: req.seq as number, model: req.model || undefined, ...clock, compression, wireBytes: wireBytes!, length }, 'byte');
      } catch (err) {
        // Refused before anything was applied: read the payload and drop it, then answer.
        push.error = err;
      }
      return wireBytes!;
    },
    (bytes, offset) => {
      if (incoming) {
        if (incoming.buffer && !incoming.error) bytes.copy(incoming.buffer, offset);
        return;
      }
      if (!push?.assembler || push.error) return;
      try {
        push.assembler.write(bytes, offset);
      } catch (err) {
        push.error = err;
      }
    },
    () => {
      if (incoming) {
        const r = incoming;
        incoming = null;
        busy = false;
        const done = () => r.lent && pool.release(r.lent);
        if (r.error || !r.buffer) {
          done();
          fail(r.id, r.error);
          return;
        }
        void Promise.resolve()
          .then(() => replicate!(entriesOf(r.heads, r.buffer!), peer.caller?.id ?? null))
          .then(
            (entries) => reply({ id: r.id, ok: true, entries }),
            (err: unknown) => fail(r.id, err),
          )
          .finally(done);
        return;
      }
      const p = push;
      if (!p) return;
      push = null;
      busy = false;
      try {
        if (p.error) throw p.error;
        const res = p.assembler!.apply();
        const { header, applySeconds } = p.assembler!;
        // Acknowledged once every backup of its slots holds it (replication.ts).
        whenReplicated(shard, () => {
          reply({ id: p.id, ok: true, epoch: res.epoch, appliedSlots: res.appliedSlots, duplicateSlots: res.duplicateSlots, wireBytes: res.wireBytes });
          p.meter.end(status.OK, res.wireBytes, header.ranges, applySeconds);
        }, (err) => p.meter.end(fail(p.id, err)));
      } catch (err) {
        p.meter.end(fail(p.id, err));
      } finally {
        p.assembler?.release();
      }
    },
  );

  async function pull(req: BulkRequest, id: number): Promise<void> {
    const meter = metrics?.request('pull', 'bulk') ?? noMeter();
    try {
      checkRole(peer.caller, peer.security, DATA_RULES['Pull']!, 'a bulk pull');
      checkHeaderTypes(req);
      if (req.clock !== undefined) checkClockedPull(peer.caller, req.workerId);
      if (!Array.isArray(req.ranges)) throw new InvalidArgumentError('a bulk pull needs its slot ranges');
      const waited = await admitPull(shard, { epoch: req.epoch, ranges: req.ranges, model: req.model || undefined, workerId: req.workerId, clock: req.clock, join: req.join });
      if (req.clock !== undefined) metrics?.clockWaited(waited);
      const total = shard.lengthOf(req.ranges);
      // Views of slot memory, as over gRPC: a push applied while they drain may show in the later bytes (async reads latest values).
      const pieces = [...shard.pullChunks(req.ranges, PULL_PIECE_BYTES)].map((c) => c.bytes);
      busy = false;
      replying = true;
      reply({ id, ok: true, total, epoch: shard.epoch });
      // Each piece once the one before has left this process (but for the socket's high-water mark): a pull that came meanwhile waits for that.
      let sent = 0;
      for (const bytes of pieces) {
        sent += bytes.byteLength;
        if (!socket.write(bytes) && !socket.destroyed) await drained(socket);
      }
      meter.end(socket.destroyed ? status.CANCELLED : status.OK, sent, req.ranges);
    } catch (err) {
      busy = false;
      meter.end(socket.destroyed ? status.CANCELLED : fail(id, err));
    } finally {
      replying = false;
      const next = waiting;
      waiting = null;
      if (next && !socket.destroyed) {
        socket.resume();
        void pull(next.req, next.id);
      }
    }
  }

  read.on = (chunk: Buffer) => {
    try {
      reader.push(chunk);
    } catch (err) {
      log.warn(`closing a bulk connection from ${socket.remoteAddress}:${socket.remotePort}: ${(err as Error).message}`);
      push?.assembler?.release();
      // A stream that cannot be parsed gets no answer: the connection ends.
      push?.meter.end(status.INVALID_ARGUMENT);
      push = null;
      socket.destroy();
    }
  };
  // A connection that ends mid-push, cleanly or not, gives the push's memory back (its budget with it).
  const abandon = () => {
    if (incoming?.lent) pool.release(incoming.lent);
    incoming = null;
    push?.assembler?.release();
    push?.meter.end(status.CANCELLED);
    push = null;
  };
  socket.on('error', abandon);
  socket.on('close', abandon);
}

/**
 * The types of a request header's fields, which JSON leaves open: an integer
 * epoch (and clock), text model and worker ids. (Ranges, lengths and values
 * are checked where they are used, with the same checks as over gRPC.)
 * @throws InvalidArgumentError naming the field.
 */
function checkHeaderTypes(req: BulkRequest): void {
  const field = (name: string, ok: boolean) => {
    if (!ok) throw new InvalidArgumentError(`a bulk request's "${name}" must be ${name === 'epoch' || name === 'clock' ? 'a non-negative integer' : 'text'}`);
  };
  field('epoch', Number.isSafeInteger(req.epoch) && req.epoch >= 0);
  if (req.clock !== undefined) field('clock', Number.isSafeInteger(req.clock) && req.clock >= 0);
  if (req.model !== undefined && req.model !== null) field('model', typeof req.model === 'string');
  if (req.workerId !== undefined) field('workerId', typeof req.workerId === 'string');
}

/** Resolves once `socket` has written what it queued, or has closed. */
function drained(socket: net.Socket): Promise<unknown> {
  return Promise.race([once(socket, 'drain'), once(socket, 'close')]);
}
