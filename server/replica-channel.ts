import * as net from 'node:net';
import * as tls from 'node:tls';
import { Metadata } from '@grpc/grpc-js';
import { splitHostPort } from '../cluster/address.js';
import { ShardUnavailableError } from '../cluster/errors.js';
import { BulkFrameReader, type BulkReply, encodeHead } from '../cluster/wire/bulk-frames.js';
import { fromStatus } from '../cluster/wire/status-codec.js';
import { type TransportSecurity, serverIdentityError } from '../cluster/tls/transport-security.js';
import { type LogEntry } from './migration-log.js';
import { entryFrames } from './migration.js';

/**
 * A primary's connection to one backup's bulk port, for its updates
 * (server/replication.ts): one `replicate` request at a time — a JSON head
 * naming the entries, then their arrays written straight from where they lie
 * (no copy into one buffer) — and its reply. Dense values move over plain TCP
 * (or TLS under mTLS) at several times what a gRPC message of the same bytes
 * costs on this kind of host (docs/benchmarks.md). A broken connection is
 * dialled again on the next request.
 */
export class ReplicaChannel {
  private socket: net.Socket | null = null;
  private waiting: { id: number; resolve: (n: number) => void; reject: (err: Error) => void } | null = null;
  private nextId = 1;
  private closed = false;

  constructor(
    /** host:port of the backup's bulk port. */
    readonly address: string,
    /** host:port of its gRPC listener, for errors that name the shard. */
    private readonly shardAddress: string,
    private readonly security: TransportSecurity,
  ) {}

  /** Sends `entries`; resolves with how many the backup took, or rejects with its typed error (ShardUnavailableError when it cannot be reached). */
  async send(entries: readonly LogEntry[]): Promise<number> {
    const socket = this.socket ?? (await this.open());
    const { heads, arrays, bytes } = entryFrames(entries);
    const id = this.nextId++;
    const reply = new Promise<number>((resolve, reject) => (this.waiting = { id, resolve, reject }));
    socket.cork();
    socket.write(encodeHead({ id, op: 'replicate', length: bytes, entries: heads }));
    for (const a of arrays) socket.write(a);
    socket.uncork();
    return reply;
  }

  /** Drops the connection (a request waiting on it is refused); the next request dials again. */
  reset(): void {
    this.drop(new ShardUnavailableError(`backup ${this.shardAddress} did not answer; its connection was dropped`, this.shardAddress));
  }

  close(): void {
    this.closed = true;
    this.drop(new ShardUnavailableError(`the stream to backup ${this.shardAddress} was closed`, this.shardAddress));
  }

  private async open(): Promise<net.Socket> {
    if (this.closed) throw new ShardUnavailableError(`the stream to backup ${this.shardAddress} was closed`, this.shardAddress);
    const { host, port } = splitHostPort(this.address);
    const security = this.security;
    const socket =
      security.kind === 'mtls'
        ? tls.connect({ host, port, secureContext: security.material.secureContext, servername: 'tessera', checkServerIdentity: (_h, cert) => serverIdentityError(cert, security.material.identity.cluster, ['shard']) })
        : net.connect({ host, port, noDelay: true });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once(security.kind === 'mtls' ? 'secureConnect' : 'connect', resolve);
      socket.once('error', (err) => reject(new ShardUnavailableError(`backup ${this.shardAddress} unreachable (bulk port ${this.address}): ${err.message}`, this.shardAddress)));
    });
    const reader = new BulkFrameReader(
      (header) => {
        const r = header as BulkReply;
        const w = this.waiting;
        if (!w || r.id !== w.id) throw new Error(`reply ${r.id} to no request in flight`);
        this.waiting = null;
        if (r.ok) w.resolve('entries' in r ? r.entries : 0);
        else {
          const md = new Metadata();
          for (const [k, v] of Object.entries(r.metadata ?? {})) md.set(k, v);
          w.reject(fromStatus({ code: r.code, details: r.details, metadata: md }, this.shardAddress));
        }
        return 0;
      },
      () => undefined,
      () => undefined,
    );
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (err) {
        this.drop(new ShardUnavailableError(`backup ${this.shardAddress} sent what is not a bulk reply (${(err as Error).message})`, this.shardAddress));
      }
    });
    const lost = (why: string) => () => this.drop(new ShardUnavailableError(`the connection to backup ${this.shardAddress} ${why}`, this.shardAddress));
    socket.on('error', lost('failed'));
    socket.on('close', lost('closed'));
    this.socket = socket;
    return socket;
  }

  /** Ends the connection; a request waiting on it is refused with `err`. */
  private drop(err: Error): void {
    const w = this.waiting;
    this.waiting = null;
    this.socket?.destroy();
    this.socket = null;
    w?.reject(err);
  }
}
