import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { type PushTraffic } from '../client/tessera-client.js';
import { LATENCY_BUCKETS, createRegistry } from '../cluster/metrics/registry.js';
import { type StepEvent, type StepSeconds } from './trainer.js';

const PHASES: readonly (keyof StepSeconds)[] = ['pull', 'compute', 'push'];

/**
 * A training worker's Prometheus metrics (docs/operations.md, "Metrics"), in
 * a registry of its own labelled `worker=<id>`: steps and examples trained
 * (rates of which are steps/s and samples/s), the last step's loss and
 * epoch, held-out metrics as evaluated, where each step's time went, and the
 * bytes its pushes carried. Fed from the training loop's step events (one
 * per step, a few increments each). How well the model does is in
 * `metrics/` beside this file; this is how the process does.
 */
export class WorkerMetrics {
  readonly registry: Registry;
  private readonly steps: Counter;
  private readonly samples: Counter;
  private readonly loss: Gauge;
  private readonly epoch: Gauge;
  private readonly heldOutValues: Gauge<'metric'>;
  private readonly heldOutEpoch: Gauge;
  private readonly phases: Histogram.Internal<'phase'>[];
  /** The cumulative samples of the last step event (events carry totals, the counter counts the difference). */
  private lastSamples = 0;

  /**
   * @param traffic the bytes its pushes carried so far (TesseraClient.traffic), read when scraped.
   * @param processMetrics also the process's own metrics (CPU, memory, event loop): for the registry a process serves.
   */
  constructor(
    readonly workerId: string,
    traffic: () => PushTraffic | undefined,
    processMetrics = false,
  ) {
    const registers = [(this.registry = createRegistry({ worker: workerId }, processMetrics))];
    this.steps = new Counter({ name: 'tessera_worker_steps_total', help: 'Training steps done (a pull, a gradient, a push each).', registers });
    this.samples = new Counter({ name: 'tessera_worker_samples_total', help: 'Training examples the steps consumed (rate: samples per second).', registers });
    this.loss = new Gauge({ name: 'tessera_worker_loss', help: 'Mean loss of the last step’s batch, at the parameters it pulled.', registers });
    this.epoch = new Gauge({ name: 'tessera_worker_epoch', help: 'Epoch (pass over the data, from 0) of the last step.', registers });
    this.heldOutValues = new Gauge({ name: 'tessera_worker_held_out', help: 'Held-out metrics of the cluster’s weights at the last evaluation (tessera worker --eval): test_accuracy, and test_auc for ctr.', labelNames: ['metric'], registers });
    this.heldOutEpoch = new Gauge({ name: 'tessera_worker_held_out_epoch', help: 'Epochs trained when the held-out metrics were last measured.', registers });
    const stepSeconds = new Histogram({
      name: 'tessera_worker_step_seconds',
      help: 'Time of each step by phase: pull (waiting for the parameters), compute (the gradient), push (waiting for a push’s acknowledgment); with pipelining, the network time that compute hides is not counted.',
      labelNames: ['phase'],
      buckets: [...LATENCY_BUCKETS],
      registers,
    });
    // Every phase's series from the start (at zero), so rates and ratios over them are defined before the first step.
    for (const phase of PHASES) stepSeconds.zero({ phase });
    this.phases = PHASES.map((phase) => stepSeconds.labels({ phase }));
    const sent = { raw: 0, wire: 0 };
    new Counter({
      name: 'tessera_worker_push_bytes_total',
      help: 'Bytes of gradients the worker pushed: as float32 (encoding="raw") and as sent under the cluster’s codec (encoding="wire").',
      labelNames: ['encoding'],
      registers,
      collect() {
        const now = traffic();
        if (!now) return;
        for (const encoding of ['raw', 'wire'] as const) {
          const more = Math.max(0, now[encoding] - sent[encoding]);
          this.inc({ encoding }, more);
          sent[encoding] += more;
        }
      },
    });
  }

  /** One step done (the training loop's onStep). */
  step(e: StepEvent): void {
    this.steps.inc();
    if (e.samples > this.lastSamples) this.samples.inc(e.samples - this.lastSamples);
    this.lastSamples = e.samples;
    if (Number.isFinite(e.loss)) this.loss.set(e.loss);
    this.epoch.set(e.epoch);
    if (!e.seconds) return;
    for (let i = 0; i < PHASES.length; i++) this.phases[i]!.observe(e.seconds[PHASES[i]!]);
  }

  /** Held-out metrics measured after `epoch` epochs. */
  heldOut(metrics: Record<string, number>, epoch: number): void {
    for (const [metric, value] of Object.entries(metrics)) if (Number.isFinite(value)) this.heldOutValues.set({ metric }, value);
    this.heldOutEpoch.set(epoch);
  }
}
