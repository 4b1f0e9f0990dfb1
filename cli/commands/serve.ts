import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger } from '../../cluster/log.js';
import { type MembershipStore } from '../../cluster/membership/store.js';
import { publicKeyFrom } from '../../serving/export/manifest.js';
import { versionLoader } from '../../serving/export/version-loader.js';
import { type Quantization, QUANTIZATIONS } from '../../serving/model/model-graph.js';
import { type ModelFormat } from '../../serving/runtime/runtime.js';
import { ClusterFollower } from '../../serving/serve/cluster-follower.js';
import { DEFAULT_POLL_MS, DirectoryWatcher, ModelRepository } from '../../serving/serve/model-repository.js';
import { MODEL_SERVER_DEFAULTS, startModelServer } from '../../serving/serve/model-server.js';
import { BACKENDS, type BackendName, selectBackend } from '../../worker/backend.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { readKeyFile } from '../key-file.js';
import { EXIT } from '../handle-error.js';
import { MEMBERSHIP_OPTIONS, openStore, redisUrl } from '../membership-options.js';
import { untilSignal } from '../signals.js';
import { MetricsServer } from '../../cluster/metrics/metrics-server.js';
import { processSecurity } from '../../cluster/tls/transport-security.js';
import { serveMetrics } from '../../serving/serve/serve-metrics.js';
import { applyTlsOptions } from '../tls-options.js';

const log = createLogger('serve');

export const serveCommand: Command = {
  name: 'serve',
  summary:
    'Serve a model for predictions over the Open Inference Protocol (KServe v2, REST and gRPC) and TensorFlow Serving REST: the newest version under DIR/NAME/, reloaded when a new one appears; or, with --redis/--membership and --refresh, the weights of a cluster still training.',
  options: [
    { name: 'model-dir', type: 'string', metavar: 'DIR', description: 'model repository written by `tessera export --out DIR`' },
    { name: 'name', type: 'string', metavar: 'NAME', description: 'the model to serve: DIR/NAME/ (default: the only model in DIR, or the cluster’s model)' },
    { name: 'http', type: 'string', metavar: 'HOST:PORT', default: '127.0.0.1:8080', description: 'REST listener (v2 and v1 routes); "off" for none' },
    { name: 'grpc', type: 'string', metavar: 'HOST:PORT', default: '127.0.0.1:8081', description: 'gRPC listener (inference.GRPCInferenceService); "off" for none' },
    { name: 'max-batch', type: 'int', default: MODEL_SERVER_DEFAULTS.maxBatch, description: 'most rows merged into one run of the model (1: no batching)' },
    { name: 'max-delay-ms', type: 'number', default: MODEL_SERVER_DEFAULTS.maxDelayMs, description: 'longest a request waits for others to join its batch' },
    { name: 'max-rows', type: 'int', default: MODEL_SERVER_DEFAULTS.maxRows, description: 'most examples in one request' },
    { name: 'max-body-bytes', type: 'int', default: MODEL_SERVER_DEFAULTS.maxBodyBytes, description: 'largest request body (REST) or message (gRPC)' },
    { name: 'poll-ms', type: 'int', default: DEFAULT_POLL_MS, description: 'how often DIR/NAME/ is looked at for a new version' },
    { name: 'public-key', type: 'string', metavar: 'PUB', description: 'serve only versions whose manifest is signed by this Ed25519 public key (PEM)' },
    { name: 'runtime', type: 'string', default: 'auto', choices: ['auto', 'onnx', 'tfjs'], description: 'which of a version’s formats to run (auto: ONNX when the version has it, else TensorFlow.js)' },
    { name: 'backend', type: 'string', default: 'auto', choices: ['auto', ...BACKENDS], description: 'TensorFlow.js backend, for the tfjs runtime' },
    ...MEMBERSHIP_OPTIONS,
    { name: 'refresh', type: 'number', metavar: 'S', description: 'with --redis/--membership: pull fresh weights from the cluster every S seconds' },
    { name: 'prune', type: 'number', default: 0, metavar: 'FRACTION', description: 'with --refresh: prune each pull as `tessera export --prune` does' },
    { name: 'prune-units', type: 'number', default: 0, metavar: 'FRACTION', description: 'with --refresh: as `tessera export --prune-units`' },
    { name: 'quantize', type: 'string', default: 'none', choices: QUANTIZATIONS, description: 'with --refresh: as `tessera export --quantize`' },
    { name: 'json', type: 'boolean', description: 'print one JSON line with the listeners once serving' },
    { name: 'metrics', type: 'string', metavar: 'HOST:PORT', description: 'serve Prometheus metrics (requests and errors by protocol, batches, rows, the version served) on http://HOST:PORT/metrics; HTTPS with client certificates under --tls-dir (docs/operations.md)' },
  ],
  async run(o) {
    const modelDir = o['model-dir'] as string | undefined;
    const fromCluster = Boolean(redisUrl(o) || o['membership']);
    if (modelDir && fromCluster) throw new UsageError('give either --model-dir DIR or a cluster (--redis/--membership with --refresh S), not both' + (process.env['TESSERA_REDIS_URL'] && !o['redis'] ? ' (TESSERA_REDIS_URL is set in the environment)' : ''));
    if (!modelDir && !fromCluster) throw new UsageError('say what to serve: --model-dir DIR (written by tessera export), or --redis URL / --membership HOST:PORT with --refresh S');
    if (fromCluster && !(typeof o['refresh'] === 'number' && o['refresh'] > 0)) throw new UsageError('serving a live cluster needs --refresh S: how often to pull its weights, in seconds');
    if (!fromCluster && o['refresh'] !== undefined) throw new UsageError('--refresh goes with --redis/--membership (a live cluster); a model directory is watched every --poll-ms');
    const listener = (flag: string) => (o[flag] === 'off' ? undefined : (o[flag] as string));
    const http = listener('http');
    const grpc = listener('grpc');
    if (!http && !grpc) throw new UsageError('--http and --grpc are both off: nothing would be served');

    const runtime = o['runtime'] as 'auto' | ModelFormat;
    if (runtime === 'tfjs' && fromCluster) throw new UsageError('a live cluster is served through ONNX Runtime: drop --runtime tfjs');
    // TensorFlow.js runs a version that has only its files (auto) or every version (tfjs).
    if (modelDir && runtime !== 'onnx') await selectBackend(o['backend'] === 'auto' ? undefined : (o['backend'] as BackendName));
    let store: MembershipStore | undefined;
    let stopSource: () => Promise<void>;
    let repository: ModelRepository;
    if (modelDir) {
      const name = (o['name'] as string | undefined) ?? (await onlyModelIn(modelDir));
      const keyPath = o['public-key'] as string | undefined;
      const publicKey = keyPath ? publicKeyFrom(await readKeyFile(keyPath), keyPath) : undefined;
      repository = new ModelRepository(name);
      const prefer: ModelFormat[] = runtime === 'auto' ? ['onnx', 'tfjs'] : [runtime];
      const watcher = new DirectoryWatcher({ dir: join(modelDir, name), loader: versionLoader({ publicKey, prefer }), repository, pollMs: o['poll-ms'] as number });
      await watcher.start();
      if (!repository.current()) log.warn(`no loadable version under ${join(modelDir, name)} yet: not ready until one appears (tessera export --out ${modelDir})`);
      stopSource = () => watcher.close();
    } else {
      store = openStore(o);
      const config = await store.getConfig();
      if (!config) throw new UsageError('no cluster is configured in this membership store; check --redis / --membership and --cluster');
      repository = new ModelRepository((o['name'] as string | undefined) ?? config.model.name);
      const follower = new ClusterFollower({ store, repository, refreshS: o['refresh'] as number, prune: o['prune'] as number, pruneUnits: o['prune-units'] as number, quantize: o['quantize'] as Quantization });
      await follower.start();
      stopSource = () => follower.close();
    }

    const server = await startModelServer({
      name: repository.name,
      http,
      grpc,
      maxBatch: o['max-batch'] as number,
      maxDelayMs: o['max-delay-ms'] as number,
      maxRows: o['max-rows'] as number,
      maxBodyBytes: o['max-body-bytes'] as number,
      source: { repository },
    });
    const metricsAt = o['metrics'] as string | undefined;
    if (metricsAt) applyTlsOptions(o);
    const metrics = metricsAt ? await MetricsServer.start(metricsAt, serveMetrics(repository.name, () => server.stats()), processSecurity()) : null;
    if (metrics) log.info(`metrics on ${metrics.scheme}://${metrics.address}/metrics`);
    const version = repository.current()?.version;
    if (o['json']) process.stdout.write(`${JSON.stringify({ event: 'serving', name: repository.name, version: version ?? null, http: server.httpAddress ?? null, grpc: server.grpcAddress ?? null, metrics: metrics?.address ?? null })}\n`);
    const signal = await untilSignal();
    log.info(`${signal}: stopping`);
    await metrics?.close();
    await server.close();
    await stopSource();
    await repository.close();
    await store?.close();
    return EXIT.ok;
  },
};

/** The name of the one model in a repository directory. */
async function onlyModelIn(dir: string): Promise<string> {
  const entries = await readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    throw new UsageError(`cannot read the model directory ${dir}: ${err.code ?? err.message}`);
  });
  const names = entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name);
  if (names.length === 1) return names[0]!;
  throw new UsageError(names.length === 0 ? `${dir} holds no model yet; export one with tessera export --out ${dir}, or give --name NAME to wait for it` : `${dir} holds ${names.length} models (${names.join(', ')}); choose one with --name`);
}
