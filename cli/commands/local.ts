import { resolve } from 'node:path';
import { type ClusterConfig } from '../../cluster/cluster-config.js';
import { setLogLevel } from '../../cluster/log.js';
import { OPTIMIZERS, type OptimizerName } from '../../cluster/optimizer-config.js';
import { DEFAULT_SLOTS } from '../../cluster/slots.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { type MembershipStore } from '../../cluster/membership/store.js';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { DEFAULT_KEY_PREFIX } from '../../cluster/membership/redis-keys.js';
import { membershipImplementation } from '../../cluster/membership/membership-service.js';
import { startGrpcServer } from '../../cluster/grpc-server.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService } from '../../cluster/proto.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { BACKENDS, selectBackend } from '../../worker/backend.js';
import { TASK_NAMES } from '../../worker/tasks/index.js';
import { isModulePath } from '../../worker/tasks/user-task.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';
import { RoleProcesses } from '../local/processes.js';
import { ProgressLine } from '../local/progress.js';
import { parseWorkerEvent } from '../local/worker-events.js';
import { DEFAULT_TRAINING, clusterConfig, COMPRESSION_OPTION, REPLICAS_OPTION, parseCompressionOption, parseConsistencyOption, stepsOfRun } from '../local/defaults.js';
import { MEMBERSHIP_RULES } from '../../cluster/tls/authorization.js';
import { taskFromOption } from '../model-option.js';
import { checkRedisUrl, redisInsecure } from '../membership-options.js';
import { DashboardServer } from '../dashboard/dashboard-server.js';

/** With --metrics-base-port P, worker j serves its metrics on P + this + j (shard i on P + i). */
const LOCAL_WORKER_METRICS_OFFSET = 100;

/** How long shards may take to start and register before `local` gives up. */
const SHARD_START_TIMEOUT_MS = 30_000;

export const localCommand: Command = {
  name: 'local',
  summary: 'Run a whole cluster on this machine (each role its own process; an embedded membership store unless --redis), train a model, evaluate it on held-out data, shut down. Plaintext on loopback only: nothing listens beyond this machine (TLS between hosts: docs/security.md).',
  options: [
    { name: 'shards', type: 'int', default: DEFAULT_TRAINING.shards, description: 'shard server processes' },
    { name: 'workers', type: 'int', default: DEFAULT_TRAINING.workers, description: 'training worker processes' },
    { name: 'model', type: 'string', default: DEFAULT_TRAINING.model, metavar: 'NAME|PATH', description: `model to train: ${TASK_NAMES.join(', ')}, or a module of your own (docs/user-models.md)` },
    { name: 'epochs', type: 'int', description: "passes over the training data (default: the model's, 10 for the MNIST models and your own, 1 for ctr)" },
    { name: 'batch-size', type: 'int', default: DEFAULT_TRAINING.batchSize, description: 'examples per step per worker' },
    { name: 'optimizer', type: 'string', default: DEFAULT_TRAINING.optimizer, choices: OPTIMIZERS, description: 'server-side optimizer' },
    { name: 'learning-rate', type: 'number', description: 'learning rate (default: per optimizer, tuned for the model)' },
    { name: 'augment', type: 'int', metavar: 'PIXELS', description: "shift each training image by up to this many pixels each way (default: the model's, 1 for the MNIST models, which lifts mnist-mlp by about a point; 0: off)" },
    { name: 'lr-drop-epoch', type: 'int', metavar: 'E', description: 'multiply the learning rate by --lr-drop-factor from epoch E on (counted from 0; default: constant rate)' },
    { name: 'lr-drop-factor', type: 'number', default: 0.1, description: 'what --lr-drop-epoch multiplies the learning rate by' },
    { name: 'slots', type: 'int', default: DEFAULT_SLOTS, description: 'slots in the key space' },
    { name: 'seed', type: 'int', default: DEFAULT_TRAINING.seed, description: 'seed of initial weights, data split and shuffling' },
    { name: 'backend', type: 'string', default: 'auto', choices: ['auto', ...BACKENDS], description: 'compute backend of the workers' },
    { name: 'consistency', type: 'string', default: 'async', metavar: 'async|ssp:K|bsp', description: 'consistency model: async (no waiting), ssp:K (no worker more than K steps ahead of the slowest), bsp (every step the mean of all workers’ gradients)' },
    COMPRESSION_OPTION,
    REPLICAS_OPTION,
    { name: 'pipeline', type: 'boolean', default: true, description: 'workers overlap communication with compute (--pipeline=false: strictly in turn)' },
    { name: 'redis', type: 'string', metavar: 'URL', description: 'keep the membership in this Redis instead of the embedded store (the cluster named by --cluster is overwritten)' },
    { name: 'cluster', type: 'string', metavar: 'NAME', default: 'local', description: 'cluster name, with --redis' },
    { name: 'key-prefix', type: 'string', metavar: 'PREFIX', default: DEFAULT_KEY_PREFIX, description: 'first part of every Redis key, with --redis' },
    { name: 'redis-insecure', type: 'boolean', description: 'with --redis: allow plaintext redis:// to a host other than loopback (a network you trust)' },
    { name: 'stay', type: 'boolean', description: 'after training, keep the cluster up (for `tessera export` / `tessera serve --membership ADDRESS`, the address printed) until Ctrl-C' },
    { name: 'json', type: 'boolean', description: 'print one JSON object with the results on stdout, nothing else' },
    { name: 'dashboard', type: 'int', metavar: 'PORT', description: 'serve the live page of `tessera dashboard` on 127.0.0.1:PORT while the cluster runs (0: a free port; the URL is printed; docs/operations.md)' },
    { name: 'metrics-base-port', type: 'int', metavar: 'P', description: `serve each process's Prometheus metrics on loopback (docs/operations.md): shard i on 127.0.0.1:P+i, worker j on 127.0.0.1:P+${LOCAL_WORKER_METRICS_OFFSET}+j (default: off)` },
  ],
  async run(o) {
    const started = Date.now();
    // The progress line and the summary are the output; logs only for what goes wrong, unless asked for.
    if (!process.env['TESSERA_LOG_LEVEL']) setLogLevel('warn');
    const shards = o['shards'] as number;
    const workers = o['workers'] as number;
    const batchSize = o['batch-size'] as number;
    const json = Boolean(o['json']);
    if (shards < 1) throw new UsageError('--shards must be at least 1');
    if (workers < 1) throw new UsageError('--workers must be at least 1');
    if (batchSize < 1) throw new UsageError('--batch-size must be at least 1');
    if ((o['replicas'] as number) >= shards) throw new UsageError(`--replicas ${o['replicas']} needs at least ${(o['replicas'] as number) + 1} shards (each backup of a slot on another shard than its primary); give --shards`);
    const metricsBase = o['metrics-base-port'] as number | undefined;
    if (metricsBase !== undefined && (metricsBase < 1 || shards > LOCAL_WORKER_METRICS_OFFSET || metricsBase + LOCAL_WORKER_METRICS_OFFSET + workers > 65_536)) {
      throw new UsageError(`--metrics-base-port P needs P ≥ 1, at most ${LOCAL_WORKER_METRICS_OFFSET} shards, and P + ${LOCAL_WORKER_METRICS_OFFSET} + workers ≤ 65536`);
    }
    const metricsFlag = (port: number) => (metricsBase === undefined ? [] : ['--metrics', `127.0.0.1:${metricsBase + port}`]);
    const modelArg = o['model'] as string;
    const task = await taskFromOption(modelArg);
    const epochs = (o['epochs'] as number | undefined) ?? task.defaultEpochs;
    if (epochs < 1) throw new UsageError('--epochs must be at least 1');
    // Workers load a user's module themselves: give them a path that does not depend on their directory.
    const augment = (o['augment'] as number | undefined) ?? task.defaultShift;
    if (augment < 0) throw new UsageError('--augment must be 0 or more pixels');
    const modelFlag = isModulePath(modelArg) ? resolve(modelArg) : modelArg;
    const optimizerName = o['optimizer'] as OptimizerName;
    const config = clusterConfig({
      name: o['cluster'] as string,
      slots: o['slots'] as number,
      task,
      seed: o['seed'] as number,
      optimizer: optimizerName,
      learningRate: o['learning-rate'] as number | undefined,
      initialShards: shards,
      consistency: parseConsistencyOption(o['consistency'] as string),
      compression: parseCompressionOption(o['compression'] as string),
      initialWorkers: workers,
      replicas: o['replicas'] as number,
      ...(o['lr-drop-epoch'] !== undefined ? { lrDrop: { epoch: o['lr-drop-epoch'] as number, factor: o['lr-drop-factor'] as number, workers, batchSize } } : {}),
    });

    const redis = o['redis'] as string | undefined;
    if (redis) checkRedisUrl(redis, redisInsecure(o));
    const membership = await openMembership(config, redis, o['key-prefix'] as string, redisInsecure(o));
    const store = membership.store;
    const dashboardPort = o['dashboard'] as number | undefined;
    if (dashboardPort !== undefined && !(dashboardPort >= 0 && dashboardPort <= 65535)) {
      await membership.close();
      throw new UsageError('--dashboard takes a port, 0 to 65535 (0: a free one)');
    }
    const dashboard = dashboardPort === undefined ? null : await DashboardServer.start({ listen: `127.0.0.1:${dashboardPort}`, store, cluster: config.name, everyS: 2 }).catch(async (err: Error) => {
      await membership.close();
      throw err;
    });
    if (dashboard) process.stderr.write(`dashboard: ${dashboard.url}\n`);
    // Children log warnings only unless the user asked for more.
    const procs = new RoleProcesses({ ...process.env, TESSERA_LOG_LEVEL: process.env['TESSERA_LOG_LEVEL'] ?? 'warn' });
    const interrupted = new Promise<'interrupted'>((resolve) => {
      const on = () => resolve('interrupted');
      process.once('SIGINT', on);
      process.once('SIGTERM', on);
    });
    try {
      const shardNames = Array.from({ length: shards }, (_, i) => `shard-${i}`);
      shardNames.forEach((id, i) => procs.start(id, ['shard', ...membership.args, '--id', id, '--listen', '127.0.0.1:0', ...metricsFlag(i)]));
      // The shards write the first map themselves once all of them hold leases.
      const ready = await Promise.race([waitForMap(store, shards), procs.failureOf(shardNames), interrupted]);
      if (ready === 'interrupted') return EXIT.interrupted;

      const run = await Promise.race([trainWithWorkers(), interrupted]);
      if (run === 'interrupted') return EXIT.interrupted;

      const backend = await selectBackend(o['backend'] === 'auto' ? undefined : (o['backend'] as (typeof BACKENDS)[number]));
      // The store may be catching up (Redis just came back empty and the shards are rebuilding the map).
      await waitForMap(store, shards);
      const client = await TesseraClient.connect({ store, workerId: 'local-evaluator' });
      const metrics = await task.evaluate(client).finally(() => client.close());
      const result = {
        ...Object.fromEntries(Object.entries(metrics).map(([k, v]) => [k, round(v, 4)])),
        steps: run.steps,
        samples: run.samples,
        samples_per_sec: round(run.samples / (run.trainMs / 1000), 1),
        train_wall_s: round(run.trainMs / 1000, 2),
        wall_s: round((Date.now() - started) / 1000, 2),
        final_loss: round(run.lastLoss, 4),
        shards,
        workers,
        backend: run.backend || backend,
        model: task.name,
        optimizer: config.optimizer.name,
        learning_rate: config.optimizer.learningRate,
        epochs,
        batch_size: batchSize,
        pipeline: o['pipeline'] as boolean,
        consistency: config.consistency,
        replicas: config.replicas ?? 0,
        compression: config.compression ?? 'none',
        push_raw_bytes: run.pushRawBytes,
        push_wire_bytes: run.pushWireBytes,
        augment,
        ...(config.optimizer.schedule ? { lr_drop_after_steps: config.optimizer.schedule[0]!.afterSteps } : {}),
      };
      const address = membership.address ? { membership: membership.address } : {};
      if (json) process.stdout.write(`${JSON.stringify({ ...result, ...address, held_out_by_epoch: run.heldOut })}\n`);
      else printSummary(result);
      if (o['stay']) {
        process.stderr.write(`the cluster stays up: reach it with ${membership.args.join(' ')} (e.g. tessera export ${membership.args.join(' ')} --out models); Ctrl-C stops it\n`);
        await interrupted;
      }
      return EXIT.ok;
    } finally {
      // Workers first: a shard that stopped under them would make their last calls fail.
      await procs.stopAll(5_000, (name) => !name.startsWith('shard-'));
      await dashboard?.close();
      await membership.close();
    }

    async function trainWithWorkers(): Promise<{ steps: number; samples: number; trainMs: number; lastLoss: number; backend: string; heldOut: Record<string, number>[]; pushRawBytes: number; pushWireBytes: number }> {
      const workerNames = Array.from({ length: workers }, (_, i) => `worker-${i}`);
      const heldOut: Record<string, number>[] = [];
      const state = new Map<string, { steps: number; samples: number; loss: number; epoch: number; done: boolean; backend: string; examples: number; raw: number; wire: number }>();
      let t0 = 0;
      const line = json ? null : new ProgressLine();
      const redraw = (force = false) => {
        if (!line) return;
        const all = [...state.values()];
        const steps = all.reduce((a, s) => a + s.steps, 0);
        const samples = all.reduce((a, s) => a + s.samples, 0);
        const elapsedS = t0 ? (Date.now() - t0) / 1000 : 0;
        const loss = all.length ? all.reduce((a, s) => a + s.loss, 0) / all.length : 0;
        const epoch = all.length ? Math.min(...all.map((s) => s.epoch)) : 0;
        line.update({ steps, epoch, epochs, loss, samplesPerSec: elapsedS > 0 ? samples / elapsedS : 0, elapsedS }, force);
      };
      for (const [j, id] of workerNames.entries()) {
        procs.start(
          id,
          ['worker', ...membership.args, '--id', id, '--model', modelFlag, '--epochs', String(epochs), '--batch-size', String(batchSize), '--seed', String(o['seed']), '--backend', String(o['backend']), `--pipeline=${o['pipeline'] as boolean}`, '--augment', String(augment), ...(id === workerNames[0] ? ['--eval', '--final-eval=false'] : []), '--json', ...metricsFlag(LOCAL_WORKER_METRICS_OFFSET + j)],
          (text) => {
            const e = parseWorkerEvent(text);
            if (!e) return;
            const s = state.get(e.id) ?? { steps: 0, samples: 0, loss: 0, epoch: 0, done: false, backend: '', examples: 0, raw: 0, wire: 0 };
            state.set(e.id, s);
            if (e.event === 'ready') {
              s.backend = e.backend;
              s.examples = e.examples;
              if (line && line.totalSteps === 0) line.totalSteps = stepsOfRun(e.examples, e.blockSize, batchSize) * epochs;
              t0 ||= Date.now();
            } else if (e.event === 'block') {
              return;
            } else if (e.event === 'eval') {
              heldOut.push({ epoch: e.epoch, ...e.metrics });
              return;
            } else if (e.event === 'step') {
              Object.assign(s, { steps: e.step, samples: e.samples, loss: e.loss, epoch: e.epoch });
            } else {
              Object.assign(s, { steps: e.steps, samples: e.samples, loss: e.lastLoss, done: true, backend: e.backend, raw: e.pushRawBytes ?? 0, wire: e.pushWireBytes ?? 0 });
            }
            redraw(e.event === 'done');
          },
        );
      }
      const codes = await Promise.race([Promise.all(workerNames.map((n) => procs.exited(n))), procs.failureOf(workerNames)]);
      const trainMs = Date.now() - (t0 || started);
      line?.done();
      const failed = codes.findIndex((c) => c !== 0);
      if (failed >= 0) throw new Error(`${workerNames[failed]} exited with code ${codes[failed]}; its log is above`);
      const all = [...state.values()];
      return {
        steps: all.reduce((a, s) => a + s.steps, 0),
        samples: all.reduce((a, s) => a + s.samples, 0),
        trainMs,
        lastLoss: all.reduce((a, s) => a + s.loss, 0) / Math.max(1, all.length),
        backend: [...new Set(all.map((s) => s.backend))].join(','),
        heldOut,
        pushRawBytes: all.reduce((a, s) => a + s.raw, 0),
        pushWireBytes: all.reduce((a, s) => a + s.wire, 0),
      };
    }
  },
};

/**
 * The membership store of this run and the flags that lead children to it:
 * the embedded store, hosted here and served over gRPC on loopback, or Redis.
 */
async function openMembership(config: ClusterConfig, redis: string | undefined, keyPrefix: string, insecure: boolean): Promise<{ store: MembershipStore; args: string[]; address?: string; close(): Promise<void> }> {
  if (redis) {
    const store = new RedisMembershipStore({ url: redis, cluster: config.name, keyPrefix });
    try {
      await store.createCluster(config, true);
    } catch (err) {
      // The store reconnects in the background, which would keep this process up for ever.
      await store.close();
      throw new Error(`cannot use Redis at ${redactedUrl(redis)} (${(err as Error).message}); start it, or leave out --redis: tessera local runs its own membership store`);
    }
    return { store, args: ['--redis', redis, '--cluster', config.name, '--key-prefix', keyPrefix, ...(insecure ? ['--redis-insecure'] : [])], close: () => store.close() };
  }
  const store = new MemoryMembershipStore();
  await store.createCluster(config);
  const server = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(store), rules: MEMBERSHIP_RULES }]);
  server.setServing([MEMBERSHIP_SERVICE_NAME], 'SERVING');
  return {
    store,
    args: ['--membership', `127.0.0.1:${server.port}`],
    address: `127.0.0.1:${server.port}`,
    async close() {
      await server.close(500);
      await store.close();
    },
  };
}

async function waitForMap(store: MembershipStore, shards: number): Promise<void> {
  const deadline = Date.now() + SHARD_START_TIMEOUT_MS;
  while (!(await store.getMap().catch(() => null))) {
    if (Date.now() > deadline) throw new Error(`the shards did not form a cluster within ${SHARD_START_TIMEOUT_MS / 1000} s (${(await store.members('shard').catch(() => [])).length} of ${shards} registered)`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function round(v: number, digits: number): number {
  const k = 10 ** digits;
  return Math.round(v * k) / k;
}

function printSummary(r: Record<string, string | number | boolean>): void {
  const rows: [string, string | number | boolean][] = [
    ['test accuracy', `${(Number(r['test_accuracy']) * 100).toFixed(2)} %`],
    ...(r['test_auc'] !== undefined ? [['test AUC', `${r['test_auc']} (the ground-truth model: ${r['reference_auc']})`] as [string, string]] : []),
    ['model', `${r['model']} (${r['optimizer']}, lr ${r['learning_rate']}, batch ${r['batch_size']}, ${r['epochs']} epochs)`],
    ['cluster', `${r['shards']} shard(s)${r['replicas'] ? ` with ${r['replicas']} backup(s) per slot` : ''}, ${r['workers']} worker(s), backend ${r['backend']}, ${r['consistency']}${r['pipeline'] ? ', pipelined' : ''}`],
    ['steps', r['steps']!],
    ['pushed', `${(Number(r['push_wire_bytes']) / 2 ** 20).toFixed(1)} MiB on the wire${r['compression'] !== 'none' ? ` (${r['compression']}: ${(Number(r['push_raw_bytes']) / Math.max(1, Number(r['push_wire_bytes']))).toFixed(1)}× less than float32)` : ''}`],
    ['throughput', `${Number(r['samples_per_sec']).toLocaleString('en-US')} samples/s`],
    ['final loss', r['final_loss']!],
    ['wall time', `${r['wall_s']} s (training ${r['train_wall_s']} s)`],
  ];
  process.stdout.write(rows.map(([k, v]) => `${k.padEnd(14)} ${v}`).join('\n') + '\n');
}

/** `url` with any password replaced, for a message. */
function redactedUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@').slice(0, 120);
}
