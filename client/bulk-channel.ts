import * as net from 'node:net';
import * as tls from 'node:tls';
import { Metadata } from '@grpc/grpc-js';
import { splitHostPort } from '../cluster/address.js';
import { BULK_READ_BUFFER_BYTES, BulkFrameReader, type BulkReply, type BulkRequest, encodeHead } from '../cluster/wire/bulk-frames.js';
import { ShardUnavailableError, type TesseraError } from '../cluster/errors.js';
import { fromStatus } from '../cluster/wire/status-codec.js';
import { type TlsMaterial } from '../cluster/tls/tls-material.js';
import { type TransportSecurity, processSecurity, serverIdentityError } from '../cluster/tls/transport-security.js';

/** A request in flight on one connection. */
interface Pending {
  id: number;
  resolve(reply: BulkReply & { ok: true }): void;
  reject(err: TesseraError): void;
  /** Pull: gets the reply's values as they arrive (views of the received bytes). */
  onValues?(bytes: Buffer, offset: number): void;
  timer: NodeJS.Timeout;
}

/**
 * The client side of one shard's bulk transport (cluster/wire/bulk-frames.ts):
 * a few TCP connections, each carrying one request at a time, opened as
 * requests need them and kept for reuse. An error reply becomes the same
 * typed error a gRPC status would (so the client's redirect and retry policy
 * applies unchanged); a broken connection or a missed deadline is a
 * retryable ShardUnavailableError.
 */
export class BulkChannel {
  private readonly idle: BulkConnection[] = [];
  private readonly all = new Set<BulkConnection>();
  private closed = false;

  /** `address`: the bulk port; `shardAddress`: the shard's gRPC address, which errors name (it is the one in the map). */
  constructor(
    readonly address: string,
    readonly shardAddress: string = address,
    /** Under mTLS the connections are TLS, and the shard must present a shard certificate of the cluster. */
    private readonly security: TransportSecurity = processSecurity(),
  ) {}

  async request(req: Omit<BulkRequest, 'id'>, timeoutMs: number, payload?: Buffer[], onValues?: (bytes: Buffer, offset: number) => void): Promise<BulkReply & { ok: true }> {
    if (this.closed) throw new ShardUnavailableError(`bulk channel to ${this.address} is closed`, this.shardAddress);
    // An idle connection may have been closed by the shard since (it restarted, or went away).
    let conn = this.idle.pop();
    while (conn && !conn.usable) {
      this.all.delete(conn);
      conn = this.idle.pop();
    }
    conn ??= await this.open();
    try {
      return await conn.send(req, timeoutMs, payload, onValues);
    } finally {
      if (conn.usable && !this.closed) this.idle.push(conn);
      else this.all.delete(conn);
    }
  }

  close(): void {
    this.closed = true;
    for (const c of this.all) c.destroy();
    this.all.clear();
    this.idle.length = 0;
  }

  private async open(): Promise<BulkConnection> {
    if (this.security.kind === 'mtls') return this.openTls(this.security.material);
    const { host, port } = splitHostPort(this.address);
    // Replies are read into one buffer per connection, reused read after read: a 64 MB pull
    // then allocates nothing per read (the values are copied out as they arrive).
    let onRead: (bytes: Buffer) => void = () => undefined;
    const readBuffer = Buffer.allocUnsafe(BULK_READ_BUFFER_BYTES);
    const socket = net.connect({
      host,
      port,
      noDelay: true,
      onread: {
        buffer: readBuffer,
        callback: (n: number, buf: Uint8Array) => {
          onRead(Buffer.from(buf.buffer, buf.byteOffset, n));
          return true;
        },
      },
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err) => reject(new ShardUnavailableError(`shard ${this.shardAddress} unreachable (bulk transport at ${this.address}): ${err.message}`, this.shardAddress)));
    });
    const conn = new BulkConnection(socket, this.address, this.shardAddress);
    onRead = (bytes) => conn.read(bytes);
    this.all.add(conn);
    return conn;
  }

  /** A TLS connection (read through 'data' events: Node offers `onread` only to plain sockets). */
  private async openTls(material: TlsMaterial): Promise<BulkConnection> {
    const { host, port } = splitHostPort(this.address);
    const cluster = material.identity.cluster;
    // The server name is a fixed "tessera" (shards are dialled by IP); the server is checked by its certificate's identity.
    const socket = tls.connect({ host, port, secureContext: material.secureContext, servername: 'tessera', checkServerIdentity: (_h, cert) => serverIdentityError(cert, cluster, ['shard']) });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', (err) => reject(new ShardUnavailableError(`shard ${this.shardAddress} unreachable (bulk transport at ${this.address}, TLS): ${err.message}`, this.shardAddress)));
    });
    const conn = new BulkConnection(socket, this.address, this.shardAddress);
    socket.on('data', (bytes: Buffer) => conn.read(bytes));
    this.all.add(conn);
    return conn;
  }
}

class BulkConnection {
  private pending: Pending | null = null;
  private nextId = 1;
  private broken = false;
  private readonly reader: BulkFrameReader;

  constructor(
    private readonly socket: net.Socket,
    private readonly address: string,
    private readonly shardAddress: string,
  ) {
    this.reader = new BulkFrameReader(
      (header) => {
        const reply = header as BulkReply;
        const p = this.pending;
        if (!p || reply.id !== p.id) throw new Error(`reply ${reply.id} to no request in flight`);
        if (!reply.ok) {
          const md = new Metadata();
          for (const [k, v] of Object.entries(reply.metadata ?? {})) md.set(k, v);
          this.settle((q) => q.reject(fromStatus({ code: reply.code, details: reply.details, metadata: md }, this.shardAddress)));
          return 0;
        }
        if ('total' in reply) {
          this.total = reply.total * 4;
          this.reply = reply;
          if (this.total === 0) this.settle((q) => q.resolve(reply));
          return this.total;
        }
        this.settle((q) => q.resolve(reply));
        return 0;
      },
      (bytes, offset) => this.pending?.onValues?.(bytes, offset),
      () => {
        if (this.reply && this.total > 0) {
          const r = this.reply;
          this.settle((q) => q.resolve(r));
        }
      },
    );
    socket.on('error', (err) => this.fail(err.message));
    socket.on('close', () => this.fail('connection closed'));
  }

  private total = 0;
  private reply: (BulkReply & { ok: true }) | null = null;

  /** Bytes read from the socket (a view of its read buffer, valid during the call). */
  read(bytes: Buffer): void {
    try {
      this.reader.push(bytes);
    } catch (err) {
      this.fail(`bad reply: ${(err as Error).message}`);
    }
  }

  get usable(): boolean {
    return !this.broken && this.pending === null;
  }

  send(req: Omit<BulkRequest, 'id'>, timeoutMs: number, payload?: Buffer[], onValues?: (bytes: Buffer, offset: number) => void): Promise<BulkReply & { ok: true }> {
    const id = this.nextId++;
    if (this.broken) return Promise.reject(new ShardUnavailableError(`shard ${this.shardAddress} unavailable (bulk transport at ${this.address}): connection closed`, this.shardAddress));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(`no reply within ${timeoutMs} ms`), timeoutMs);
      this.pending = { id, resolve, reject, timer, ...(onValues ? { onValues } : {}) };
      this.total = 0;
      this.reply = null;
      this.socket.write(encodeHead({ ...req, id }));
      for (const b of payload ?? []) this.socket.write(b);
    });
  }

  destroy(): void {
    this.fail('channel closed');
    this.socket.destroy();
  }

  private settle(fn: (p: Pending) => void): void {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    clearTimeout(p.timer);
    fn(p);
  }

  private fail(why: string): void {
    if (!this.broken) {
      this.broken = true;
      this.socket.destroy();
    }
    this.settle((p) => p.reject(new ShardUnavailableError(`shard ${this.shardAddress} unavailable (bulk transport at ${this.address}): ${why}`, this.shardAddress)));
  }
}
