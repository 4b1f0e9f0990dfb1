import { DEFAULT_LEASE } from '../../cluster/membership/lease.js';
import { DEFAULT_LISTENER_LIMITS } from '../../cluster/listener-limits.js';
import { DEFAULT_MAX_INFLIGHT_BYTES } from '../../server/inflight-budget.js';
import { createLogger } from '../../cluster/log.js';
import { DEFAULT_CHECKPOINT_KEEP } from '../../server/checkpoint.js';
import { DEFAULT_MAX_SPARSE_ROWS } from '../../server/sparse-row-cap.js';
import { ShardServer } from '../../server/shard-server.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';
import { EXIT } from '../handle-error.js';
import { untilSignal } from '../signals.js';
import { METRICS_OPTION } from '../metrics-option.js';

const log = createLogger('cli');

export const shardCommand: Command = {
  name: 'shard',
  summary: 'Run a shard server: own slots of the model, apply pushed gradients, serve pulls.',
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'id', type: 'string', metavar: 'ID', required: true, description: 'shard id, unique in the cluster' },
    { name: 'listen', type: 'string', metavar: 'HOST:PORT', default: '127.0.0.1:0', description: 'address to serve gRPC on; port 0 picks a free one' },
    { name: 'advertise', type: 'string', metavar: 'HOST:PORT', description: 'address clients dial (default: the listen address with the bound port)' },
    { name: 'bulk-port', type: 'int', default: 0, description: 'port of the bulk transport (dense values over plain TCP, on the listen host; 0 picks a free one)' },
    { name: 'max-connections', type: 'int', default: DEFAULT_LISTENER_LIMITS.maxConnections, description: 'open connections each listener (gRPC, bulk) keeps; more are closed as they come' },
    { name: 'idle-timeout-s', type: 'number', default: DEFAULT_LISTENER_LIMITS.idleMs / 1000, description: 'seconds a connection may carry nothing before it is closed' },
    { name: 'max-inflight-mib', type: 'int', default: DEFAULT_MAX_INFLIGHT_BYTES / 2 ** 20, description: 'MiB that requests may hold at once over every connection (push windows, encoded pushes, gRPC pull chunks being sent); beyond it a request is refused RESOURCE_EXHAUSTED and clients retry it' },
    { name: 'max-sparse-rows', type: 'int', metavar: 'N', default: DEFAULT_MAX_SPARSE_ROWS, description: 'rows each sparse table may hold on this shard; a push that would create more is refused whole (RESOURCE_EXHAUSTED), pushes to rows held and pulls go on' },
    { name: 'insecure', type: 'boolean', description: 'serve plaintext on a non-loopback --listen address (without it, such a shard needs --tls-dir; a network you trust)' },
    { name: 'bulk', type: 'boolean', default: true, description: 'serve the bulk transport (--bulk=false: clients move dense values over gRPC)' },
    { name: 'lease-ttl-ms', type: 'int', default: DEFAULT_LEASE.ttlMs, description: 'membership lease TTL' },
    { name: 'lease-renew-ms', type: 'int', default: DEFAULT_LEASE.renewMs, description: 'how often the lease is renewed' },
    { name: 'restore', type: 'string', metavar: 'FILE', description: 'start from this checkpoint (written by `tessera checkpoint` or --checkpoint-dir): its slots and rows, optimizer state included' },
    { name: 'checkpoint-dir', type: 'string', metavar: 'DIR', description: 'write <id>.tessera-checkpoint to DIR every --checkpoint-every-s and once more on shutdown; `tessera checkpoint` writes here too, and nowhere else (without it the shard refuses checkpoint requests)' },
    { name: 'checkpoint-every-s', type: 'number', default: 300, description: 'seconds between checkpoints with --checkpoint-dir (0: only on shutdown)' },
    { name: 'checkpoint-keep', type: 'int', default: DEFAULT_CHECKPOINT_KEEP, description: 'how many of its own checkpoints the shard keeps in --checkpoint-dir: the newest, <id>.tessera-checkpoint, and those before it (.1, .2, …)' },
    METRICS_OPTION,
    { name: 'topology', type: 'string', metavar: 'DOMAIN', description: 'the failure domain this shard runs in (a node, rack or zone name): a slot\'s backups go to shards of other domains than its primary when there are any (docs/replication.md)' },
    { name: 'resume', type: 'boolean', description: 'with --checkpoint-dir: start from the newest of its own checkpoints there that is whole, falling back to older ones (a restarted pod picks up where it stopped); none there: start afresh' },
  ],
  async run(o) {
    if (!((o['checkpoint-every-s'] as number) >= 0)) throw new UsageError('--checkpoint-every-s must be 0 or more seconds');
    if (!((o['max-connections'] as number) >= 1)) throw new UsageError('--max-connections must be at least 1');
    if (!((o['max-inflight-mib'] as number) >= 16)) throw new UsageError('--max-inflight-mib must be at least 16 (a push takes a 1 MiB window, or its largest slot)');
    if (!((o['max-sparse-rows'] as number) >= 1)) throw new UsageError('--max-sparse-rows must be at least 1');
    if (!((o['idle-timeout-s'] as number) >= 60)) throw new UsageError('--idle-timeout-s must be at least 60 seconds (a clocked pull may wait 45 s for slower workers)');
    const dir = o['checkpoint-dir'] as string | undefined;
    if (o['resume'] && !dir) throw new UsageError('--resume needs --checkpoint-dir, where the shard keeps its checkpoints');
    if (o['resume'] && o['restore']) throw new UsageError('give --restore FILE or --resume, not both');
    if (!((o['checkpoint-keep'] as number) >= 1)) throw new UsageError('--checkpoint-keep must be at least 1');
    const restore = o['restore'] as string | undefined;
    const store = openStore(o);
    let server: ShardServer;
    try {
      server = await ShardServer.start({
        id: o['id'] as string,
        listen: o['listen'] as string,
        advertise: o['advertise'] as string | undefined,
        bulk: o['bulk'] as boolean,
        bulkPort: o['bulk-port'] as number,
        insecure: Boolean(o['insecure']),
        maxInflightBytes: (o['max-inflight-mib'] as number) * 2 ** 20,
        limits: { ...DEFAULT_LISTENER_LIMITS, maxConnections: o['max-connections'] as number, idleMs: 1000 * (o['idle-timeout-s'] as number) },
        maxSparseRows: o['max-sparse-rows'] as number,
        ...(o['topology'] ? { topology: o['topology'] as string } : {}),
        store,
        lease: { ttlMs: o['lease-ttl-ms'] as number, renewMs: o['lease-renew-ms'] as number },
        ...(restore ? { restore } : {}),
        resume: Boolean(o['resume']),
        ...(o['metrics'] !== undefined ? { metrics: o['metrics'] as string } : {}),
        ...(dir ? { checkpoints: { directory: dir, everyMs: 1000 * (o['checkpoint-every-s'] as number), keep: o['checkpoint-keep'] as number } } : {}),
      });
    } catch (err) {
      // A shard that cannot start (a bad checkpoint, a taken port) lets the process exit.
      await store.close();
      throw err;
    }
    if (server.metricsAddress) log.info(`shard ${server.shard.id}: metrics on http://${server.metricsAddress}/metrics`);
    const signal = await untilSignal();
    log.info(`shard ${server.shard.id}: ${signal}, shutting down`);
    await server.close();
    await store.close();
    return EXIT.ok;
  },
};
