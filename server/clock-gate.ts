import { type ConsistencyModel, isClocked } from '../cluster/consistency.js';
import { ClockTimeoutError, InvalidArgumentError, NotReadyError, StepAheadError } from '../cluster/errors.js';

/**
 * A shard's side of the clocked consistency models (`ssp:K`, `bsp`): the
 * workers that take part, their clocks, and the pulls waiting on them.
 *
 * A worker's clock is the number of steps it has pushed. It joins with its
 * first clocked pull (at the clock it starts from: 0 at the start of a run,
 * the cluster's clock for one that joins later). A worker stops counting when
 * the live-worker set read from the membership store no longer holds it
 * (its lease expired, it left, or it said it is idle); a worker the set has
 * not seen yet (it joined after the set was read) counts.
 *
 * - `ssp:K`: a pull at clock c waits until every live worker's clock is
 *   ≥ c − K. Pushes apply on arrival.
 * - `bsp`: pushes of the open step are summed, not applied; once every live
 *   worker's clock is past the step, the listeners given to
 *   {@link onStepClosed} apply the sums divided by the number of workers that
 *   pushed in the step (their mean gradient), and the next step opens. A
 *   pull at clock c waits until c steps are closed.
 *   A push for a step already closed (a worker that joined as the step closed)
 *   counts towards the open step instead: nothing is lost, nothing waits.
 *
 * Until `initialWorkers` workers have joined (or `startTimeoutMs` after the
 * first did), no pull waits through and no step closes, so a run's workers
 * start from the same weights.
 */
export class ClockGate {
  private readonly participants = new Map<string, { clock: number; joinedAt: number }>();
  private live: ReadonlySet<string> | null = null;
  private liveReadAt = -Infinity;
  private firstJoinAt: number | null = null;
  private started = false;
  private startTimedOut = false;
  private closed = false;
  private waiters: Waiter[] = [];
  private startTimer: NodeJS.Timeout | undefined;
  /** bsp: steps closed (applied) so far; the open step's number. */
  closedSteps = 0;
  private readonly stepListeners: StepListener[] = [];
  /** One-shot callbacks run once `closedSteps` reaches their step, after the listeners applied it. */
  private stepWatchers: { steps: number; run: () => void }[] = [];
  /** bsp: limits on `closedSteps` while something must see the run at that step (a checkpoint). */
  private holds: number[] = [];
  /** bsp: the workers whose pushes were summed into the open step. */
  private stepWorkers = new Set<string>();

  constructor(
    readonly model: ConsistencyModel,
    private readonly initialWorkers = 1,
    private readonly startTimeoutMs = 30_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether this gate does anything (every model but async). */
  get clocked(): boolean {
    return isClocked(this.model);
  }

  /**
   * The clock a worker joining now should start from: under bsp the open
   * step, under ssp the slowest live worker's clock (0 before any joined).
   */
  clock(): number {
    if (this.model.kind === 'bsp') return this.closedSteps;
    const min = this.minLiveClock();
    return Number.isFinite(min) ? min : 0;
  }

  /** Live workers' clocks, for status and tests. */
  clocks(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [id, p] of this.participants) if (this.isLive(id, p.joinedAt)) out.set(id, p.clock);
    return out;
  }

  /**
   * The live workers as the membership store last listed them (read at
   * `readAt`, before the call that returned them). Re-evaluates every wait.
   */
  setLive(workers: Iterable<string>, readAt: number = this.now()): void {
    this.live = new Set(workers);
    this.liveReadAt = readAt;
    this.settle();
  }

  /**
   * Waits until a pull by `worker` at `clock` may be served. `join` (a
   * worker's first clocked pull since it started or came back) sets its clock
   * to `clock`; otherwise an unknown worker joins at `clock` and a known one
   * keeps the clock its pushes gave it.
   *
   * @throws ClockTimeoutError after `timeoutMs`.
   */
  async beforePull(worker: string, clock: number, join: boolean, timeoutMs: number): Promise<void> {
    if (!this.clocked) return;
    if (this.closed) throw new NotReadyError('the shard is shutting down; retry against the new owner');
    this.join(worker, clock, join);
    this.settle();
    if (this.pullReady(clock)) return;
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        ready: () => this.pullReady(clock),
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(new ClockTimeoutError(`pull at clock ${clock} waited ${timeoutMs} ms for slower workers (${this.describeWait()}); is a worker stuck?`));
        }, timeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  /**
   * Where a push by `worker` for step `clock` goes under bsp: 'open' (sum it
   * into the open step) — also for a late push, which counts towards the open
   * step. Under ssp the push is applied by the caller at once.
   *
   * @throws StepAheadError for a bsp push ahead of the open step (its
   *   worker never pulled at that clock).
   */
  checkPush(worker: string, clock: number): void {
    if (this.model.kind !== 'bsp') return;
    this.adopt(clock);
    if (clock > this.closedSteps) {
      throw new StepAheadError(`push for step ${clock} from ${worker} is ahead of this shard's open step ${this.closedSteps}; pull at clock ${clock} before pushing it`);
    }
  }

  /**
   * bsp: `listener` applies the open step's sums, divided by `workers` (the
   * workers that pushed in it), just before the step closes.
   */
  onStepClosed(listener: StepListener): void {
    this.stepListeners.push(listener);
  }

  /**
   * Records that `worker` pushed step `clock` (after the push was applied or
   * summed): its clock moves past the step, which may close it. `summed`: the
   * push was summed into the open step now (not a duplicate), so its worker
   * counts in the step's mean.
   */
  afterPush(worker: string, clock: number, summed = false): void {
    if (!this.clocked) return;
    this.join(worker, clock, false);
    const p = this.participants.get(worker)!;
    p.clock = Math.max(p.clock, clock + 1);
    if (summed) this.stepWorkers.add(worker);
    this.settle();
  }

  /**
   * bsp: closes no step past `steps` applied until the returned function is
   * called: pushes are summed and pulls wait meanwhile, as for a slow worker.
   */
  hold(steps: number): () => void {
    this.holds.push(steps);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holds.splice(this.holds.indexOf(steps), 1);
      this.settle();
    };
  }

  /**
   * bsp: runs `fn` when exactly `steps` steps are applied — now if they are,
   * else right after the step that makes them so is applied, before anything
   * else happens — and resolves with its result.
   *
   * @throws StepAheadError (as a rejection) when more steps are already
   *   applied; ClockTimeoutError when `steps` is not reached within `timeoutMs`.
   */
  whenApplied<T>(steps: number, fn: () => T, timeoutMs: number): Promise<T> {
    if (this.model.kind !== 'bsp') return Promise.reject(new InvalidArgumentError(`a step can be waited for only under bsp; this cluster runs ${this.model.kind}`));
    if (this.closedSteps > steps) return Promise.reject(new StepAheadError(`step ${steps} is past: this shard has applied ${this.closedSteps} steps`));
    if (this.closedSteps === steps) return Promise.resolve().then(fn);
    return new Promise<T>((resolve, reject) => {
      const watcher = {
        steps,
        run: () => {
          clearTimeout(timer);
          try {
            resolve(fn());
          } catch (err) {
            reject(err as Error);
          }
        },
      };
      const timer = setTimeout(() => {
        this.stepWatchers = this.stepWatchers.filter((w) => w !== watcher);
        reject(new ClockTimeoutError(`step ${steps} was not reached within ${timeoutMs} ms (this shard has applied ${this.closedSteps}); are the workers running?`));
      }, timeoutMs);
      this.stepWatchers.push(watcher);
    });
  }

  /**
   * bsp: records that `worker` summed a push into the open step without
   * moving its clock — a sparse push, which a worker sends before the dense
   * push that ends its step (sparse-store.ts).
   */
  noteSummed(worker: string): void {
    this.stepWorkers.add(worker);
  }

  /** Fails every waiting pull with a retryable error (the shard is closing). */
  close(): void {
    this.closed = true;
    clearTimeout(this.startTimer);
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new NotReadyError('the shard is shutting down; retry against the new owner'));
    }
    this.waiters = [];
  }

  /**
   * bsp on a gate that has seen no worker yet, met at a clock past 0: a shard
   * that (re)started in the middle of a run. Its open step is where the
   * workers are, not step 0.
   */
  private adopt(clock: number): void {
    if (this.model.kind === 'bsp' && this.participants.size === 0 && this.closedSteps === 0 && clock > 0) this.closedSteps = clock;
  }

  private join(worker: string, clock: number, reset: boolean): void {
    this.adopt(clock);
    const p = this.participants.get(worker);
    const now = this.now();
    if (!p) this.participants.set(worker, { clock, joinedAt: now });
    else if (reset) Object.assign(p, { clock, joinedAt: now });
    if (this.firstJoinAt === null) {
      this.firstJoinAt = now;
      this.startTimer = setTimeout(() => {
        this.startTimedOut = true;
        this.settle();
      }, this.startTimeoutMs);
      this.startTimer.unref();
    }
  }

  private isLive(id: string, joinedAt: number): boolean {
    return this.live === null || joinedAt > this.liveReadAt || this.live.has(id);
  }

  private minLiveClock(): number {
    let min = Infinity;
    for (const [id, p] of this.participants) if (this.isLive(id, p.joinedAt) && p.clock < min) min = p.clock;
    return min;
  }

  private pullReady(clock: number): boolean {
    if (!this.started) return false;
    if (this.model.kind === 'bsp') return this.closedSteps >= clock;
    if (this.model.kind === 'ssp') return this.minLiveClock() >= clock - this.model.staleness;
    return true;
  }

  /** Starts the run when it may, closes every bsp step it can, releases every pull that may go. */
  private settle(): void {
    if (!this.started) {
      const joined = this.participants.size;
      const waited = this.startTimedOut || (this.firstJoinAt !== null && this.now() - this.firstJoinAt >= this.startTimeoutMs);
      if (joined >= this.initialWorkers || waited) {
        this.started = true;
        clearTimeout(this.startTimer);
      }
    }
    if (this.started && this.model.kind === 'bsp') {
      // A step closes once every live worker is past it; with none live, the pushes already summed still count.
      while (this.minLiveClock() > this.closedSteps && Number.isFinite(this.minLiveClock()) && !this.holds.some((h) => this.closedSteps >= h)) {
        const workers = Math.max(1, this.stepWorkers.size);
        for (const listener of this.stepListeners) listener(this.closedSteps, workers);
        this.stepWorkers = new Set();
        this.closedSteps++;
        const due = this.stepWatchers.filter((w) => w.steps === this.closedSteps);
        if (due.length > 0) {
          this.stepWatchers = this.stepWatchers.filter((w) => w.steps !== this.closedSteps);
          for (const w of due) w.run();
        }
      }
    }
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.ready()) {
        clearTimeout(w.timer);
        w.resolve();
      } else still.push(w);
    }
    this.waiters = still;
  }

  private describeWait(): string {
    const clocks = [...this.clocks()].map(([id, c]) => `${id}@${c}`).join(', ');
    return this.started ? `live clocks: ${clocks || 'none'}` : `${this.participants.size} of ${this.initialWorkers} workers joined`;
  }
}

/**
 * bsp: turns a step's sum into its mean over `workers` in place (× 1/workers,
 * which is exact for 1, 2, 4, … workers).
 */
export function toMean(sum: Float32Array, workers: number): void {
  if (workers <= 1) return;
  const k = 1 / workers;
  for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! * k;
}

/** bsp: applies step `step`'s sums divided by `workers`, the workers that pushed in it. */
export type StepListener = (step: number, workers: number) => void;

interface Waiter {
  ready(): boolean;
  resolve(): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}
