import * as grpc from '@grpc/grpc-js';
import { RemoteError, ShardUnavailableError, type TesseraError } from '../cluster/errors.js';
import { channelOptions, deadlineIn } from '../cluster/grpc-client.js';
import { shardService, sparseShardService } from '../cluster/proto.js';
import { fromStatus } from '../cluster/wire/status-codec.js';
import { type TransportSecurity, channelCredentials } from '../cluster/tls/transport-security.js';
import { BulkChannel } from './bulk-channel.js';
import { BulkDenseTransport } from './transport/bulk-dense.js';
import { type DenseTransport, type TransportProvider } from './transport/dense-transport.js';
import { GrpcDenseTransport } from './transport/grpc-dense.js';

/** What the pool holds for one shard address. */
interface Node {
  shard: grpc.Client;
  sparse?: grpc.Client;
  grpcDense: GrpcDenseTransport;
  /** The bulk transport, or null where the shard serves none (learnt once, from the map or Describe). */
  bulk?: Promise<BulkDenseTransport | null>;
  /** Set once a bulk channel failed: the map's bulk address may be stale (the shard restarted on another port), so Describe decides. */
  askShard?: boolean;
}

export interface NodePoolOptions {
  /** `bulk`: dense values over each shard's bulk port where it has one; `grpc`: always gRPC. */
  transport: 'bulk' | 'grpc';
  deadlineMs: number;
  chunkBytes: number;
  /** How every connection is secured; under mTLS each shard must present a shard certificate of the cluster. */
  security: TransportSecurity;
}

/**
 * Every connection a client holds, keyed by shard address (in the manner of
 * ioredis's ConnectionPool): the `tessera.v1.Shard` and `SparseShard` stubs
 * (grpc-js shares one HTTP/2 connection between them) and the bulk channel.
 * Dense requests get their transport here; the sparse client its stubs.
 */
export class NodePool implements TransportProvider {
  private readonly nodes = new Map<string, Node>();
  private closed = false;

  private readonly stopReload: () => void;

  constructor(private readonly o: NodePoolOptions) {
    // A rotated certificate: connections made from now on use it, so drop the ones held (re-dialled on next use).
    this.stopReload = o.security.kind === 'mtls' ? o.security.material.onChange(() => this.redial()) : () => undefined;
  }

  private node(address: string): Node {
    // A request still recovering when its client closed must not open connections again.
    if (this.closed) throw new RemoteError(grpc.status.CANCELLED, `the client is closed; no new connection to ${address}`);
    let n = this.nodes.get(address);
    if (!n) {
      const Shard = shardService();
      const shard = new Shard(address, channelCredentials(this.o.security), channelOptions(this.o.security));
      n = { shard, grpcDense: new GrpcDenseTransport(shard, address, this.o) };
      this.nodes.set(address, n);
    }
    return n;
  }

  async dense(address: string, bulkAddress?: string): Promise<DenseTransport> {
    const n = this.node(address);
    if (this.o.transport !== 'bulk') return n.grpcDense;
    if (!n.bulk) {
      // The map names most shards' bulk port (published with their lease); only a shard it does not name is asked.
      const where = bulkAddress && !n.askShard ? Promise.resolve(bulkAddress) : this.describe(address).then((d) => d.bulkAddress);
      const bulk = where.then((b) => (b ? new BulkDenseTransport(new BulkChannel(b, address, this.o.security), this.o.deadlineMs) : null));
      // A failed lookup is asked again on the next request (the shard may be starting).
      bulk.catch(() => {
        if (n.bulk === bulk) n.bulk = undefined;
      });
      n.bulk = bulk;
    }
    return (await n.bulk) ?? n.grpcDense;
  }

  /** The `tessera.v1.SparseShard` stub of the shard at `address`. */
  sparse(address: string): grpc.Client {
    const n = this.node(address);
    if (!n.sparse) {
      const Sparse = sparseShardService();
      n.sparse = new Sparse(address, channelCredentials(this.o.security), channelOptions(this.o.security));
    }
    return n.sparse;
  }

  describe(address: string): Promise<{ clock: number; bulkAddress: string }> {
    const stub = this.node(address).shard as grpc.Client & { describe(req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { clock: number; bulkAddress: string }) => void): void };
    return new Promise((resolve, reject) => stub.describe({}, { deadline: deadlineIn(this.o.deadlineMs) }, (err, res) => (err ? reject(fromStatus(err, address)) : resolve(res!))));
  }

  /** An unreachable shard's bulk channel is dropped, so the retry asks the shard (perhaps restarted on another bulk port) anew. */
  failed(address: string, err: TesseraError): void {
    const n = this.nodes.get(address);
    if (!n?.bulk || !(err instanceof ShardUnavailableError)) return;
    const bulk = n.bulk;
    n.bulk = undefined;
    n.askShard = true;
    void bulk.then((t) => t?.channel.close(), () => undefined);
  }

  prune(live: ReadonlySet<string>): void {
    for (const address of [...this.nodes.keys()]) if (!live.has(address)) this.drop(address);
  }

  close(): void {
    this.closed = true;
    this.stopReload();
    for (const address of [...this.nodes.keys()]) this.drop(address);
  }

  /** Closes every connection held; the next request to a shard opens new ones. */
  private redial(): void {
    for (const address of [...this.nodes.keys()]) this.drop(address);
  }

  private drop(address: string): void {
    const n = this.nodes.get(address)!;
    this.nodes.delete(address);
    n.shard.close();
    n.sparse?.close();
    void n.bulk?.then((t) => t?.channel.close(), () => undefined);
  }
}
