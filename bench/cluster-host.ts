import { type ClusterConfig } from '../cluster/cluster-config.js';
import { startGrpcServer, type TesseraGrpcServer } from '../cluster/grpc-server.js';
import { MemoryMembershipStore } from '../cluster/membership/memory-store.js';
import { membershipImplementation } from '../cluster/membership/membership-service.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService } from '../cluster/proto.js';
import { Child } from './child-rpc.js';
import { MEMBERSHIP_RULES } from '../cluster/tls/authorization.js';

/**
 * A cluster for benchmarks, laid out as `tessera local` lays one out: the
 * embedded membership store lives in this (the bench's) process and is served
 * over gRPC; each shard is its own process.
 */
export class BenchCluster {
  private constructor(
    readonly store: MemoryMembershipStore,
    private readonly membership: TesseraGrpcServer,
    readonly membershipAddress: string,
    readonly shards: Child[],
    private readonly lease?: { ttlMs: number; renewMs: number },
  ) {}

  /**
   * `tlsDir(id)`: the `--tls-dir` of shard `id`, for mutual TLS on its
   * listeners (default: plaintext); `lease`: the shards' lease (default theirs).
   */
  static async start(config: ClusterConfig, shardCount: number, tlsDir?: (id: string) => string, lease?: { ttlMs: number; renewMs: number }): Promise<BenchCluster> {
    const store = new MemoryMembershipStore();
    // The shards write the first map themselves once this many have registered.
    await store.createCluster({ ...config, initialShards: shardCount });
    const membership = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(store), rules: MEMBERSHIP_RULES }]);
    membership.setServing([MEMBERSHIP_SERVICE_NAME], 'SERVING');
    const address = `127.0.0.1:${membership.port}`;
    const shards = Array.from({ length: shardCount }, (_, i) => Child.start(`shard-${i}`, 'shard'));
    const cluster = new BenchCluster(store, membership, address, shards, lease);
    try {
      await Promise.all(shards.map((s, i) => s.call<{ address: string }>('start', { membership: address, id: `shard-${i}`, ...(tlsDir ? { tlsDir: tlsDir(`shard-${i}`) } : {}), ...(lease ? { lease } : {}) })));
      await Promise.all(shards.map((s) => s.call('awaitEpoch', { epoch: 1 })));
    } catch (err) {
      await cluster.close();
      throw err;
    }
    return cluster;
  }

  /** Starts shard `i` again (after {@link Child.kill}): a new process under the same id. */
  async restart(i: number): Promise<void> {
    const child = Child.start(`shard-${i}`, 'shard');
    this.shards[i] = child;
    await child.call('start', { membership: this.membershipAddress, id: `shard-${i}`, ...(this.lease ? { lease: this.lease } : {}) });
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((s) => s.stop()));
    await this.membership.close(200);
    await this.store.close();
  }
}
