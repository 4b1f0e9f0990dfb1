import { NotFoundError, InvalidArgumentError } from '../../cluster/errors.js';
import { createLogger } from '../../cluster/log.js';
import { DEFAULT_LEASE, Lease } from '../../cluster/membership/lease.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { BACKENDS, type BackendName, selectBackend } from '../../worker/backend.js';
import { partition } from '../../worker/data/dataset.js';
import { mnistSplit } from '../../worker/data/mnist.js';
import { getModel } from '../../worker/models/index.js';
import { TRAINER_DEFAULTS, train } from '../../worker/trainer.js';
import { type Command } from '../command.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';
import { EXIT } from '../handle-error.js';
import { type WorkerEvent } from '../local/worker-events.js';

const log = createLogger('worker');

/** How often a worker reports its step (stdout with --json, its lease, the log). */
const REPORT_EVERY_MS = 250;

export const workerCommand: Command = {
  name: 'worker',
  summary: 'Run a training worker: pull the weights, compute gradients on its part of the data, push them.',
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'id', type: 'string', metavar: 'ID', required: true, description: 'worker id, unique in the cluster (half of what makes pushes idempotent)' },
    { name: 'index', type: 'int', default: 0, description: "this worker's part of the training data, 0 … count−1" },
    { name: 'count', type: 'int', default: 1, description: 'number of parts the training data is split into' },
    { name: 'model', type: 'string', description: 'model to train (default: the one the cluster was created with; must match it)' },
    { name: 'epochs', type: 'int', default: 5, description: 'passes over this worker’s part of the data' },
    { name: 'batch-size', type: 'int', default: TRAINER_DEFAULTS.batchSize, description: 'examples per step' },
    { name: 'seed', type: 'int', default: 1, description: 'seed of the example order' },
    { name: 'backend', type: 'string', default: 'auto', choices: ['auto', ...BACKENDS], description: 'compute backend; a forced one that is unavailable is an error' },
    { name: 'pipeline', type: 'boolean', default: TRAINER_DEFAULTS.pipeline, description: 'overlap the next pull and this push with the compute (--pipeline=false: strictly in turn)' },
    { name: 'json', type: 'boolean', description: 'print progress as JSON lines on stdout (what `tessera local` reads)' },
  ],
  async run(o) {
    const id = o['id'] as string;
    const index = o['index'] as number;
    const count = o['count'] as number;
    if (count < 1 || index >= count) throw new InvalidArgumentError(`--index must be in [0, --count), got index ${index} of ${count}`);
    const json = Boolean(o['json']);
    const emit = (e: WorkerEvent) => json && process.stdout.write(`${JSON.stringify(e)}\n`);

    const backend = await selectBackend(o['backend'] === 'auto' ? undefined : (o['backend'] as BackendName));
    const store = openStore(o);
    let lease: Lease | undefined;
    let client: TesseraClient | undefined;
    const abort = new AbortController();
    const stop = () => abort.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      const config = await store.getConfig();
      if (!config) throw new NotFoundError('no cluster is configured in the membership store; create one first (tessera local)');
      const model = getModel((o['model'] as string | undefined) ?? config.model.name);
      if (model.name !== config.model.name) throw new InvalidArgumentError(`this cluster trains ${config.model.name}, not ${model.name}; drop --model or pass --model ${config.model.name}`);
      const data = partition(mnistSplit().train, index, count);
      lease = new Lease(store, 'worker', { id, state: 'training', step: 0, backend }, DEFAULT_LEASE);
      await lease.start();
      client = await TesseraClient.connect({ store, workerId: id });
      emit({ event: 'ready', id, backend, examples: data.count });
      log.info(`worker ${id}: ${data.count} examples (part ${index + 1} of ${count}), ${model.name} on ${backend}`);
      let lastReport = 0;
      const result = await train({
        client,
        model,
        data,
        epochs: o['epochs'] as number,
        batchSize: o['batch-size'] as number,
        seed: (o['seed'] as number) * 1000 + index,
        pipeline: o['pipeline'] as boolean,
        signal: abort.signal,
        onStep: (e) => {
          const now = Date.now();
          if (now - lastReport < REPORT_EVERY_MS) return;
          lastReport = now;
          lease!.update({ step: e.step });
          emit({ event: 'step', id, ...e });
          log.debug(`worker ${id}: step ${e.step}, epoch ${e.epoch}, loss ${e.loss.toFixed(4)}`);
        },
      });
      emit({ event: 'done', id, steps: result.steps, samples: result.samples, wallMs: result.wallMs, lastLoss: result.lastLoss, backend });
      log.info(`worker ${id}: ${result.aborted ? 'stopped' : 'done'} after ${result.steps} steps, loss ${result.lastLoss.toFixed(4)}`);
      return result.aborted ? EXIT.interrupted : EXIT.ok;
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      await client?.close();
      await lease?.close();
      await store.close();
    }
  },
};
