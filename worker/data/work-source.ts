import { InvalidArgumentError } from '../../cluster/errors.js';
import { createLogger } from '../../cluster/log.js';
import { type MembershipStore } from '../../cluster/membership/store.js';
import { type WorkPlan } from '../../cluster/membership/work-queue.js';
import { mixSeeds, permutation } from './random.js';

const log = createLogger('work');

/** The examples of one step: indices into the training set, and the pass they belong to. */
export interface IndexBatch {
  epoch: number;
  indices: Uint32Array;
  /** The last batch of its block: the block is reported done once this batch's push is acknowledged. */
  lastOfBlock?: boolean;
  /** The first batch after this worker was idle: under ssp/bsp it rejoins the run at the cluster's clock. */
  resumed?: boolean;
}

/** Examples per block unless a run says otherwise: 8 batches of 64. */
export const DEFAULT_BLOCK_SIZE = 512;

/**
 * A run's data cut into blocks: each epoch orders the `examples` by a seeded
 * permutation of (seed, epoch), the same on every worker, and cuts that order
 * into blocks of `blockSize` (the last one shorter). Block b of epoch e is
 * work item e·blocksPerEpoch + b (cluster/membership/work-queue.ts).
 */
export class BlockPlan {
  readonly blocksPerEpoch: number;
  private cached: { epoch: number; order: Uint32Array } | null = null;

  constructor(
    readonly examples: number,
    readonly epochs: number,
    readonly blockSize: number,
    readonly seed: number,
  ) {
    if (!(Number.isInteger(examples) && examples >= 1)) throw new InvalidArgumentError(`a run needs at least one training example, got ${examples}`);
    if (!(Number.isInteger(blockSize) && blockSize >= 1)) throw new InvalidArgumentError(`block size must be a positive integer, got ${blockSize}`);
    this.blocksPerEpoch = Math.ceil(examples / blockSize);
  }

  get plan(): WorkPlan {
    return { epochs: this.epochs, blocksPerEpoch: this.blocksPerEpoch };
  }

  /** The epoch and block of work item `item`. */
  locate(item: number): { epoch: number; block: number } {
    return { epoch: Math.floor(item / this.blocksPerEpoch), block: item % this.blocksPerEpoch };
  }

  /** The example indices of work item `item`, in training order. */
  indices(item: number): Uint32Array {
    const { epoch, block } = this.locate(item);
    if (this.cached?.epoch !== epoch) this.cached = { epoch, order: permutation(this.examples, mixSeeds(this.seed, epoch)) };
    return this.cached.order.subarray(block * this.blockSize, Math.min(this.examples, (block + 1) * this.blockSize));
  }
}

/** What a worker's data source reports. */
export interface WorkSourceEvents {
  /** A block was trained on in full and marked done (`counted`: the store still had it as this worker's). */
  onBlock?(e: { item: number; epoch: number; block: number; examples: number; counted: boolean }): void;
  /** True when there is nothing to claim for now (others hold the last blocks), false when work resumes. */
  onIdle?(idle: boolean): void;
}

export interface WorkSourceOptions extends WorkSourceEvents {
  store: MembershipStore;
  workerId: string;
  plan: BlockPlan;
  batchSize: number;
  signal?: AbortSignal;
  /** How often to ask again while idle. Default 200 ms. */
  idlePollMs?: number;
  /** How long a block stays with a holder whose lease is missing: the workers' lease TTL. Default DEFAULT_CLAIM_GRACE_MS. */
  claimGraceMs?: number;
}

/**
 * The batches of the blocks this worker claims from the membership store's
 * work queue, until the run is finished (or `signal` aborts). Each block is
 * cut into batches of `batchSize` (its last batch may be shorter, so every
 * example of every epoch is used); a block is completed once the batch after
 * its last is asked for: the trainer asks only once the push of a block's
 * last batch was acknowledged (`lastOfBlock`).
 * While the store is unreachable the source retries with backoff, logging
 * once: claims are control plane, pushes and pulls go on without the store.
 */
export async function* claimedBatches(o: WorkSourceOptions): AsyncGenerator<IndexBatch> {
  if (!(Number.isInteger(o.batchSize) && o.batchSize >= 1)) throw new InvalidArgumentError(`batch size must be a positive integer, got ${o.batchSize}`);
  const idlePollMs = o.idlePollMs ?? 200;
  let floor = 0;
  let idle = false;
  const retrying = new Retry(o.signal);
  while (!o.signal?.aborted) {
    const claim = await retrying.run(`claim work for ${o.workerId}`, () => o.store.claimWork(o.workerId, o.plan.plan, floor, o.claimGraceMs));
    if (!claim || claim.kind === 'finished') return;
    if (claim.kind === 'wait') {
      if (!idle) o.onIdle?.((idle = true));
      await sleep(idlePollMs, o.signal);
      continue;
    }
    const resumed = idle;
    if (idle) o.onIdle?.((idle = false));
    const item = claim.item;
    floor = Math.max(floor, claim.handedOut, item + 1);
    const { epoch, block } = o.plan.locate(item);
    const indices = o.plan.indices(item);
    for (let at = 0; at < indices.length; at += o.batchSize) {
      const end = Math.min(indices.length, at + o.batchSize);
      yield { epoch, indices: indices.subarray(at, end), lastOfBlock: end === indices.length, resumed: resumed && at === 0 };
      if (o.signal?.aborted) return;
    }
    const counted = await retrying.run(`complete work item ${item}`, () => o.store.completeWork(o.workerId, item));
    if (counted === undefined) return;
    o.onBlock?.({ item, epoch, block, examples: indices.length, counted });
  }
}

/** Runs a store call until it succeeds, with backoff; resolves undefined if `signal` aborts first. Errors of the caller's own making are thrown. */
class Retry {
  private failing = false;
  constructor(private readonly signal: AbortSignal | undefined) {}

  async run<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
    for (let attempt = 0; !this.signal?.aborted; attempt++) {
      try {
        const out = await fn();
        if (this.failing) log.info(`${what}: the membership store answers again`);
        this.failing = false;
        return out;
      } catch (err) {
        if (err instanceof InvalidArgumentError) throw err;
        if (!this.failing) log.warn(`${what}: the membership store is unreachable (${(err as Error).message}); this worker waits for it at the end of its block and retries`);
        this.failing = true;
        await sleep(Math.min(2_000, 100 * 2 ** attempt), this.signal);
      }
    }
    return undefined;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
