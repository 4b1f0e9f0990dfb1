import { type ClusterConfig } from '../../cluster/cluster-config.js';
import { type Consistency } from '../../cluster/consistency.js';
import { type ModelSpec } from '../../cluster/model-spec.js';
import { type OptimizerConfig, optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { ShardServer } from '../../server/shard-server.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { type ClientOptions, type ClientOptionsInput } from '../../client/options.js';
import { type TransportSecurity } from '../../cluster/tls/transport-security.js';
import { type ListenerLimits } from '../../cluster/listener-limits.js';

/** A model of one dense tensor of `elements` floats, uniformly initialized. */
export function flatModel(elements: number, name = 'flat'): ModelSpec {
  return { name, seed: 7, tensors: [{ name: 'w', shape: [elements], init: { kind: 'uniform', low: -1, high: 1 } }] };
}

export interface TestCluster {
  store: MemoryMembershipStore;
  config: ClusterConfig;
  shards: ShardServer[];
  /** How `client()` moves dense values unless its options say otherwise. */
  transport: ClientOptions['transport'];
  client(options?: Partial<ClientOptionsInput>): Promise<TesseraClient>;
  close(): Promise<void>;
}

/**
 * An in-process cluster over real gRPC on loopback: an embedded store, `shards`
 * shard servers on free ports, slots spread evenly (epoch 1). Its clients
 * move dense values over `transport` (default `bulk`, the client's own default).
 */
export async function startCluster(opts: {
  shards: number;
  model: ModelSpec;
  optimizer?: Partial<OptimizerConfig> & { name: OptimizerConfig['name'] };
  slots?: number;
  consistency?: Consistency;
  initialWorkers?: number;
  transport?: ClientOptions['transport'];
  /** How shard `id` secures its listeners and its calls to other shards (default: plaintext). */
  security?: (id: string) => TransportSecurity;
  /** The cluster's name (default "test"): under mTLS, the one its certificates name. */
  name?: string;
  /** What each shard's listeners let callers hold (default: the shard's defaults). */
  limits?: ListenerLimits;
  /** Bytes each shard's requests may hold at once (default: the shard's default, 1 GiB). */
  maxInflightBytes?: number;
  /** Each shard's checkpoint directory (no timed checkpoints; one as it closes). Default: none, so the shards take no checkpoints. */
  checkpointDir?: string;
  /** Rows each sparse table may hold on each shard (default: the shard's default). */
  maxSparseRows?: number;
  /** Serve each shard's Prometheus metrics on a free loopback port (ShardServer.metricsAddress). Default: not served. */
  metrics?: boolean;
  /** Backups of every slot (ClusterConfig.replicas). Default none. */
  replicas?: number;
  /** Each shard's lease (default: the shard's default). */
  lease?: { ttlMs: number; renewMs: number };
  /** Each shard's map poll (default: the shard's default). */
  mapPollMs?: number;
  /** Whether the shards serve the bulk port (default true). */
  bulk?: boolean;
}): Promise<TestCluster> {
  const transport = opts.transport ?? 'bulk';
  const store = new MemoryMembershipStore();
  const config: ClusterConfig = {
    name: opts.name ?? 'test',
    slots: opts.slots ?? 1024,
    model: opts.model,
    optimizer: optimizerWithDefaults(opts.optimizer ?? { name: 'sgd' }),
    consistency: opts.consistency ?? 'async',
    initialShards: opts.shards,
    ...(opts.initialWorkers ? { initialWorkers: opts.initialWorkers } : {}),
    ...(opts.replicas ? { replicas: opts.replicas } : {}),
  };
  await store.createCluster(config);
  const shards: ShardServer[] = [];
  const clients: TesseraClient[] = [];
  // The last shard to register writes the first map (epoch 1, slots spread evenly); the others adopt it.
  for (let i = 0; i < opts.shards; i++) shards.push(await ShardServer.start({ id: `shard-${i}`, listen: '127.0.0.1:0', store, ...(opts.security ? { security: opts.security(`shard-${i}`) } : {}), ...(opts.limits ? { limits: opts.limits } : {}), ...(opts.checkpointDir ? { checkpoints: { directory: opts.checkpointDir, everyMs: 0 } } : {}), ...(opts.maxInflightBytes ? { maxInflightBytes: opts.maxInflightBytes } : {}), ...(opts.maxSparseRows ? { maxSparseRows: opts.maxSparseRows } : {}), ...(opts.metrics ? { metrics: '127.0.0.1:0' } : {}), ...(opts.lease ? { lease: opts.lease } : {}), ...(opts.mapPollMs ? { mapPollMs: opts.mapPollMs } : {}), ...(opts.bulk === false ? { bulk: false } : {}) }));
  for (const s of shards) await s.refresh();
  return {
    store,
    config,
    shards,
    transport,
    async client(options = {}) {
      const c = await TesseraClient.connect({ store, workerId: `client-${clients.length}`, ...options, transport: options.transport ?? transport });
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) await c.close();
      for (const s of shards) await s.close(100);
      await store.close();
    },
  };
}
