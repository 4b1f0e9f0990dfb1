import { NotFoundError, InvalidArgumentError } from '../../cluster/errors.js';
import { createLogger } from '../../cluster/log.js';
import { DEFAULT_LEASE, Lease } from '../../cluster/membership/lease.js';
import { TesseraClient } from '../../client/tessera-client.js';
import { BACKENDS, type BackendName, selectBackend } from '../../worker/backend.js';
import { BlockPlan, DEFAULT_BLOCK_SIZE, claimedBatches } from '../../worker/data/work-source.js';
import { IDLE_WORKER_STATE, type MembershipStore } from '../../cluster/membership/store.js';
import { totalItems } from '../../cluster/membership/work-queue.js';
import { loadTask } from '../../worker/tasks/index.js';
import { TRAINER_DEFAULTS } from '../../worker/trainer.js';
import { WorkerMetrics } from '../../worker/worker-metrics.js';
import { MetricsServer } from '../../cluster/metrics/metrics-server.js';
import { METRICS_OPTION } from '../metrics-option.js';
import { type Command } from '../command.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';
import { EXIT } from '../handle-error.js';
import { type WorkerEvent } from '../local/worker-events.js';
import { taskFromOption } from '../model-option.js';
import { type TrainResult } from '../../worker/trainer.js';
import { checkPlaintextListener, processSecurity } from '../../cluster/tls/transport-security.js';
import { splitHostPort } from '../../cluster/address.js';

const log = createLogger('worker');

/** How often a worker reports its step (stdout with --json, its lease, the log). */
const REPORT_EVERY_MS = 250;

export const workerCommand: Command = {
  name: 'worker',
  summary: 'Run a training worker: pull the weights, compute gradients on the blocks of data it claims from the cluster, push them.',
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'id', type: 'string', metavar: 'ID', required: true, description: 'worker id, unique in the cluster (half of what makes pushes idempotent)' },
    { name: 'model', type: 'string', metavar: 'NAME|PATH', description: 'model to train (default: the one the cluster was created with; must match it; a module path for a model of your own)' },
    { name: 'epochs', type: 'int', description: "passes over the training data, shared by all workers of the run (every worker must be given the same; default: the model's, as `tessera local` uses: 10 for the MNIST models and your own, 1 for ctr)" },
    { name: 'batch-size', type: 'int', default: TRAINER_DEFAULTS.batchSize, description: 'examples per step' },
    { name: 'block-size', type: 'int', default: DEFAULT_BLOCK_SIZE, description: 'examples per block of work claimed from the cluster (same on every worker)' },
    { name: 'seed', type: 'int', default: 1, description: 'seed of the example order (same on every worker)' },
    { name: 'augment', type: 'int', metavar: 'PIXELS', description: "shift each training image by up to this many pixels each way (default: the model's, as `tessera local` uses: 1 for the MNIST models; 0: off)" },
    { name: 'lease-ttl-ms', type: 'int', metavar: 'MS', default: DEFAULT_LEASE.ttlMs, description: 'lease TTL: how soon a dead worker’s block goes to another and it stops holding back ssp/bsp (renewed every third of it)' },
    { name: 'backend', type: 'string', default: 'auto', choices: ['auto', ...BACKENDS], description: 'compute backend; a forced one that is unavailable is an error' },
    { name: 'pipeline', type: 'boolean', default: TRAINER_DEFAULTS.pipeline, description: 'overlap the next pull and this push with the compute (--pipeline=false: strictly in turn)' },
    { name: 'eval', type: 'boolean', default: false, description: 'evaluate on the held-out data each time this worker starts a new epoch, and once more when the run is over (see --final-eval); published with its lease (tessera status) and, with --json, as an event' },
    { name: 'final-eval', type: 'boolean', default: true, description: 'with --eval: once this worker has no more data, wait (up to 10 minutes) for the other workers to finish the run, then evaluate the final model (--final-eval=false: do not)' },
    { name: 'json', type: 'boolean', description: 'print progress as JSON lines on stdout (what `tessera local` reads)' },
    METRICS_OPTION,
    { name: 'insecure', type: 'boolean', description: 'serve --metrics plaintext on a non-loopback address (without it, that needs --tls-dir; a network you trust)' },
    { name: 'metrics-linger-s', type: 'number', metavar: 'S', default: 0, description: 'with --metrics: keep serving /metrics this many seconds after training ends, so that a last scrape sees the final counts (Ctrl-C or SIGTERM ends it sooner)' },
  ],
  async run(o) {
    const id = o['id'] as string;
    const ttlMs = o['lease-ttl-ms'] as number;
    if (!(ttlMs >= 100)) throw new InvalidArgumentError(`--lease-ttl-ms must be at least 100 ms, got ${ttlMs}`);
    const json = Boolean(o['json']);
    const linger = o['metrics-linger-s'] as number;
    if (!(linger >= 0)) throw new InvalidArgumentError(`--metrics-linger-s must be 0 or more seconds, got ${linger}`);
    const emit = (e: WorkerEvent) => json && process.stdout.write(`${JSON.stringify(e)}\n`);

    const backend = await selectBackend(o['backend'] === 'auto' ? undefined : (o['backend'] as BackendName));
    const store = openStore(o);
    let lease: Lease | undefined;
    let client: TesseraClient | undefined;
    let metricsServer: MetricsServer | undefined;
    const metricsAt = o['metrics'] as string | undefined;
    const workerMetrics = metricsAt === undefined ? null : new WorkerMetrics(id, () => client?.traffic(), true);
    const abort = new AbortController();
    // Stopping: the step under way finishes if it can; a call that would wait for a shard gives up instead.
    const stop = () => {
      abort.abort();
      void client?.close();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      if (workerMetrics) {
        checkPlaintextListener(processSecurity(), splitHostPort(metricsAt!).host, Boolean(o['insecure']), `worker ${id}'s metrics listener`);
        metricsServer = await MetricsServer.start(metricsAt!, workerMetrics.registry, processSecurity());
        log.info(`worker ${id}: metrics on ${metricsServer.scheme}://${metricsServer.address}/metrics`);
      }
      const config = await store.getConfig();
      if (!config) throw new NotFoundError('no cluster is configured in the membership store; create one first (tessera local)');
      const task = o['model'] !== undefined ? await taskFromOption(o['model'] as string) : await loadTask(config.model.name);
      if (task.name !== config.model.name) throw new InvalidArgumentError(`this cluster trains ${config.model.name}, not ${task.name}; drop --model or pass --model ${config.model.name} (or its module)`);
      const epochs = (o['epochs'] as number | undefined) ?? task.defaultEpochs;
      const batchSize = o['batch-size'] as number;
      const examples = task.trainExamples;
      const plan = new BlockPlan(examples, epochs, o['block-size'] as number, o['seed'] as number);
      lease = new Lease(store, 'worker', { id, state: 'training', step: 0, backend }, { ttlMs, renewMs: Math.max(50, Math.floor(ttlMs / 3)) });
      await lease.start();
      client = await TesseraClient.connect({ store, workerId: id });
      emit({ event: 'ready', id, backend, examples, epochs, blockSize: plan.blockSize, blocksPerEpoch: plan.blocksPerEpoch });
      log.info(`worker ${id}: ${task.name} on ${backend}, ${epochs} epochs of ${plan.blocksPerEpoch} blocks of ${plan.blockSize} examples, claimed from the cluster`);
      let lastReport = 0;
      // Held-out evaluation at each epoch this worker enters: one at a time, beside training.
      let evaluatedEpoch = 0;
      let evaluating: Promise<void> | null = null;
      const evaluateAfter = (epoch: number) => {
        if (!o['eval'] || evaluating || epoch <= evaluatedEpoch) return;
        evaluatedEpoch = epoch;
        evaluating = task
          .evaluate(client!)
          .then((metrics) => {
            lease!.update({ heldOut: metrics, heldOutEpoch: epoch });
            workerMetrics?.heldOut(metrics, epoch);
            emit({ event: 'eval', id, epoch, metrics });
            log.info(`worker ${id}: held-out after ${epoch} epoch(s): ${Object.entries(metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')}`);
          })
          .catch((err: unknown) => (abort.signal.aborted ? undefined : log.warn(`worker ${id}: held-out evaluation failed: ${(err as Error).message}`)))
          .finally(() => (evaluating = null));
      };
      const source = claimedBatches({
        store,
        workerId: id,
        plan,
        batchSize,
        signal: abort.signal,
        claimGraceMs: ttlMs,
        onBlock: (e) => emit({ event: 'block', id, ...e }),
        onIdle: (idle) => {
          lease!.update({ state: idle ? IDLE_WORKER_STATE : 'training' });
          void lease!.renew();
        },
      });
      const trainer = client;
      const result = await trainUnlessStopped(abort.signal, () => task.train({
        client: trainer,
        source,
        batchSize,
        seed: o['seed'] as number,
        pipeline: o['pipeline'] as boolean,
        augment: { maxShift: (o['augment'] as number | undefined) ?? task.defaultShift },
        signal: abort.signal,
        onStep: (e) => {
          workerMetrics?.step(e);
          evaluateAfter(e.epoch);
          const now = Date.now();
          if (now - lastReport < REPORT_EVERY_MS) return;
          lastReport = now;
          lease!.update({ step: e.step, trainEpoch: e.epoch, loss: e.loss, pushed: client!.traffic() });
          emit({ event: 'step', id, step: e.step, epoch: e.epoch, loss: e.loss, samples: e.samples });
          log.debug(`worker ${id}: step ${e.step}, epoch ${e.epoch}, loss ${e.loss.toFixed(4)}`);
        },
      }));
      await evaluating;
      // The run's summary carries the final model's held-out metric: once the run is over (every block
      // done, by this worker or the others), evaluated once more; not when this worker was stopped.
      if (o['eval'] && o['final-eval'] && !result.aborted && result.steps > 0) {
        if (await runFinished(store, abort.signal, FINAL_EVAL_WAIT_MS)) {
          try {
            const metrics = await task.evaluate(client);
            lease.update({ heldOut: metrics, heldOutEpoch: epochs });
            emit({ event: 'eval', id, epoch: epochs, metrics, final: true });
            log.info(`worker ${id}: held-out at the end of the run: ${Object.entries(metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')}`);
          } catch (err) {
            if (!abort.signal.aborted) log.warn(`worker ${id}: the final held-out evaluation failed: ${(err as Error).message}`);
          }
        } else if (!abort.signal.aborted) {
          log.warn(`worker ${id}: the run was not over within ${FINAL_EVAL_WAIT_MS / 60_000} minutes of this worker's last block (another worker holds blocks still); no final evaluation: \`tessera eval\` measures the model once it is`);
        }
      }
      const pushed = client.traffic();
      lease.update({ pushed });
      emit({ event: 'done', id, steps: result.steps, samples: result.samples, wallMs: result.wallMs, lastLoss: result.lastLoss, backend, pushRawBytes: pushed.raw, pushWireBytes: pushed.wire });
      if (result.steps === 0 && !result.aborted) log.warn(`worker ${id}: nothing to train: every block of the run's ${epochs} epochs was already done (by this worker before, or others); a new run starts with \`tessera init --force\``);
      else log.info(`worker ${id}: ${result.aborted ? 'stopped' : 'done'} after ${result.steps} steps, loss ${result.lastLoss.toFixed(4)}`);
      if (metricsServer && linger > 0 && !abort.signal.aborted) await lingerFor(linger * 1000, abort.signal);
      return result.aborted ? EXIT.interrupted : EXIT.ok;
    } finally {
      await metricsServer?.close();
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      await client?.close();
      await lease?.close();
      await store.close();
    }
  },
};

/**
 * Runs `train`; once `signal` has fired (SIGINT/SIGTERM), a call that fails
 * because the cluster is stopping too (a shard gone, the client closed) is
 * part of a clean stop, not an error: the run counts as stopped where it was.
 */
async function trainUnlessStopped(signal: AbortSignal, train: () => Promise<TrainResult>): Promise<TrainResult> {
  try {
    return await train();
  } catch (err) {
    if (!signal.aborted) throw err;
    log.debug(`a call failed while stopping: ${(err as Error).message}`);
    return { steps: 0, samples: 0, wallMs: 0, lastLoss: Number.NaN, aborted: true };
  }
}

/** How often a worker that has finished looks whether the others have too. */
const RUN_POLL_MS = 1_000;

/** How long a worker that has finished waits for the others before its final evaluation: 10 minutes. */
const FINAL_EVAL_WAIT_MS = 600_000;

/**
 * Waits until every block of the run is done (none handed out and still held),
 * so that the model is final; false when `signal` fires or `waitMs` passes first.
 */
async function runFinished(store: MembershipStore, signal: AbortSignal, waitMs: number): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  while (!signal.aborted && Date.now() < deadline) {
    const progress = await store.workProgress().catch(() => null);
    if (progress && progress.handedOut >= totalItems(progress.plan) && Object.values(progress.held).every((items) => items.length === 0)) return true;
    await new Promise((r) => setTimeout(r, RUN_POLL_MS));
  }
  return false;
}

/** Resolves after `ms`, or as soon as `signal` aborts. */
function lingerFor(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}
