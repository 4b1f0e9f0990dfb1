import { type ClusterConfig } from '../../cluster/cluster-config.js';
import { type ShardMap, backupsOf } from '../../cluster/shard-map.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { RedisServer } from './redis-server.js';
import { type Running, start, waitFor } from './cli.js';

/**
 * The counting workload's cluster (docs/replication.md, "How it is tested"):
 * a real `redis-server`, each shard a `tessera shard` process, and writers in
 * this process whose every push adds exactly 1 to every element (SGD with
 * learning rate 1, gradient −1, weights from zero). At any quiet moment every
 * element must equal the number of acknowledged pushes: one lost shows as
 * less, one applied twice as more.
 */
export class ChaosCluster {
  readonly shards = new Map<string, Running>();
  /** The logs of shard processes that were replaced by a restart. */
  private readonly pastLogs: string[] = [];
  private readonly stores: RedisMembershipStore[] = [];
  readonly writers: CountingWriter[] = [];
  readonly observer: RedisMembershipStore;

  private constructor(
    readonly redis: RedisServer,
    readonly config: ClusterConfig,
    readonly leaseTtlMs: number,
  ) {
    this.observer = this.store();
  }

  static async start(o: { shards: number; replicas: number; elements: number; slots: number; leaseTtlMs?: number; name?: string; checkpointDir?: string }): Promise<ChaosCluster> {
    const redis = await RedisServer.start();
    const config: ClusterConfig = {
      name: o.name ?? 'chaos',
      slots: o.slots,
      model: { name: 'counting', seed: 1, tensors: [{ name: 'w', shape: [o.elements], init: { kind: 'zeros' } }] },
      optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 1 }),
      consistency: 'async',
      initialShards: o.shards,
      ...(o.replicas > 0 ? { replicas: o.replicas } : {}),
    };
    const c = new ChaosCluster(redis, config, o.leaseTtlMs ?? 1_500);
    c.checkpointDir = o.checkpointDir;
    await c.observer.createCluster(config);
    for (let i = 0; i < o.shards; i++) c.startShard(`shard-${i}`);
    await waitFor('the first map', () => c.observer.getMap().then((m) => m ?? undefined), 30_000);
    return c;
  }

  private checkpointDir: string | undefined;

  /** A Redis store of this cluster, closed with the cluster. */
  store(): RedisMembershipStore {
    const s = new RedisMembershipStore({ url: this.redis.url, cluster: this.config.name, commandTimeoutMs: 1_000, reconnectMaxDelayMs: 200 });
    this.stores.push(s);
    return s;
  }

  /** `tessera shard --id ID` against this cluster's Redis, on a free port. */
  startShard(id: string, extra: string[] = []): Running {
    const ttl = this.leaseTtlMs;
    const args = ['shard', '--redis', this.redis.url, '--cluster', this.config.name, '--id', id, '--listen', '127.0.0.1:0', '--lease-ttl-ms', String(ttl), '--lease-renew-ms', String(Math.floor(ttl / 4))];
    if (this.checkpointDir) args.push('--checkpoint-dir', this.checkpointDir, '--checkpoint-every-s', '0');
    const shard = start([...args, ...extra], 600_000, { TESSERA_LOG_LEVEL: 'info' });
    const before = this.shards.get(id);
    if (before) this.pastLogs.push(`--- ${id} (before its restart)\n${before.stderr()}`);
    this.shards.set(id, shard);
    return shard;
  }

  /** SIGKILL: the shard vanishes as in a crash, its lease left to lapse. */
  kill(id: string): void {
    this.shards.get(id)?.kill('SIGKILL');
  }

  /** SIGSTOP / SIGCONT: the shard freezes (its lease lapses, its connections stay open) and later carries on where it was. */
  pause(id: string): void {
    this.shards.get(id)?.kill('SIGSTOP');
  }

  resume(id: string): void {
    this.shards.get(id)?.kill('SIGCONT');
  }

  async map(): Promise<ShardMap> {
    return waitFor('a shard map', () => this.observer.getMap().then((m) => m ?? undefined), 30_000);
  }

  /**
   * Waits until every slot has its primary and `replicas` backups among the
   * live shards of `among` (default: every shard running) and nothing is
   * being copied: the cluster is whole again.
   */
  async whole(timeoutMs = 45_000, among?: readonly string[]): Promise<ShardMap> {
    const want = this.config.replicas ?? 0;
    return waitFor(
      `every slot on a live primary with ${want} live backup(s)`,
      async () => {
        const map = await this.observer.getMap();
        const live = new Set((await this.observer.members('shard')).filter((m) => m.state === 'serving' || m.state === 'joining').map((m) => m.id));
        const allowed = among ? new Set(among) : live;
        if (!map) return undefined;
        for (let s = 0; s < map.slots; s++) {
          const holders = [map.owners[s]!, ...backupsOf(map, s)];
          if (holders.length !== want + 1 || holders.some((h) => !live.has(h) || !allowed.has(h))) return undefined;
        }
        return map;
      },
      timeoutMs,
      200,
    );
  }

  /** Starts a writer pushing +1 to every element as fast as it is acknowledged. */
  async writer(workerId: string): Promise<CountingWriter> {
    const client = await TesseraClient.connect({ store: this.store(), workerId, retryForMs: 60_000 });
    const w = new CountingWriter(client);
    this.writers.push(w);
    w.run();
    return w;
  }

  /** Stops the writers and returns the values and the pushes they had acknowledged. */
  async settle(): Promise<{ values: Float32Array; acknowledged: number }> {
    for (const w of this.writers) await w.stop();
    const reader = await TesseraClient.connect({ store: this.store(), workerId: 'reader', retryForMs: 60_000 });
    try {
      return { values: await reader.pull(), acknowledged: this.writers.reduce((n, w) => n + w.acknowledged, 0) };
    } finally {
      await reader.close();
    }
  }

  /** Every shard's output so far (for a failure's message and for what the logs say). */
  logs(): string {
    return [...this.pastLogs, ...[...this.shards].map(([id, r]) => `--- ${id}\n${r.stderr()}`)].join('\n');
  }

  async close(): Promise<void> {
    for (const w of this.writers) await w.stop().catch(() => undefined);
    for (const w of this.writers) await w.client.close().catch(() => undefined);
    for (const s of this.shards.values()) s.kill('SIGKILL');
    await Promise.all([...this.shards.values()].map((s) => s.finished));
    for (const s of this.stores) await s.close().catch(() => undefined);
    await this.redis.dispose();
  }
}

/** Pushes +1 to every element in a loop; counts what was acknowledged and keeps the first failure. */
export class CountingWriter {
  acknowledged = 0;
  failure: Error | null = null;
  private stopping = false;
  private loop: Promise<void> = Promise.resolve();
  private readonly gradient: Float32Array;

  constructor(readonly client: TesseraClient) {
    this.gradient = new Float32Array(client.elements).fill(-1);
  }

  run(): void {
    this.loop = (async () => {
      while (!this.stopping && !this.failure) {
        try {
          await this.client.push(this.gradient);
          this.acknowledged++;
        } catch (err) {
          this.failure = err as Error;
        }
      }
    })();
  }

  /** Resolves once `n` more pushes are acknowledged than when it was called. */
  async advance(n: number, timeoutMs = 30_000): Promise<void> {
    const target = this.acknowledged + n;
    await waitFor(`${n} more acknowledged pushes (at ${this.acknowledged}${this.failure ? `; failed: ${this.failure.message}` : ''})`, () => this.acknowledged >= target || this.failure !== null, timeoutMs, 20);
    if (this.failure) throw this.failure;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }
}
