import { type StepClock } from '../client/tessera-client.js';

/** What a worker's clock needs of the cluster: whether it is clocked, and where the run is. */
export interface ClockSource {
  readonly clocked?: boolean;
  clusterClock?(): Promise<number>;
}

/**
 * A training worker's clock under ssp/bsp (docs/consistency.md): step k of
 * this worker is clock `offset + k`. The offset is set from the cluster's
 * clock when the worker starts, and again when it comes back from idle (it
 * then joins anew: the shards set its clock instead of waiting for the steps
 * it missed). Under async every method is a no-op and {@link at} is undefined.
 */
export class WorkerClock {
  private offset = 0;
  private joinStep = 0;

  constructor(private readonly client: ClockSource) {}

  get clocked(): boolean {
    return Boolean(this.client.clocked);
  }

  /** (Re)joins the run at its current clock, as this worker's step `step`. */
  async join(step: number): Promise<void> {
    if (!this.clocked) return;
    this.offset = (await this.client.clusterClock!()) - step;
    this.joinStep = step;
  }

  /** The clock of this worker's step `step` (its pull joins when it is the first since {@link join}). */
  at(step: number): StepClock | undefined {
    return this.clocked ? { clock: this.offset + step, join: step === this.joinStep } : undefined;
  }
}
