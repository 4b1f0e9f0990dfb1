import { ResourceExhaustedError, ShardBusyError } from '../cluster/errors.js';
import { createLogger } from '../cluster/log.js';

const log = createLogger('shard');

/** Bytes a shard lets its requests hold at once, by default: 1 GiB (`tessera shard --max-inflight-mib`). */
export const DEFAULT_MAX_INFLIGHT_BYTES = 1 << 30;

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 2 : 0);

/**
 * The memory a shard's requests hold at once, over every connection and
 * transport: the window a float32 push is received into, the encoded bytes of
 * a push under a codec as they arrive and its decoded gradient, the chunk of a
 * gRPC pull waiting to be sent. Each is taken before the memory is and given
 * back when it is released; a request that would take the shard past its
 * budget is refused with {@link ShardBusyError} (`RESOURCE_EXHAUSTED`, reason
 * `busy`), before it changes anything, and clients retry it after a back-off.
 * What the shard holds for itself (its slots, a checkpoint's copy) is not
 * counted: those are bounded by the model and by one checkpoint at a time.
 */
export class InflightBudget {
  private held = 0;

  constructor(readonly maxBytes = DEFAULT_MAX_INFLIGHT_BYTES) {
    if (!(Number.isSafeInteger(maxBytes) && maxBytes > 0)) throw new RangeError(`a budget of bytes in flight must be a positive integer, got ${maxBytes}`);
  }

  /** Bytes taken and not given back. */
  get heldBytes(): number {
    return this.held;
  }

  /**
   * Takes `bytes` for `what` (for the message).
   * @throws ResourceExhaustedError (not retried) when they could never fit, the budget empty;
   *   ShardBusyError (retried) when they do not fit now.
   */
  take(bytes: number, what: string): void {
    if (bytes > this.maxBytes) {
      throw new ResourceExhaustedError(`${what} needs ${mib(bytes)} MiB, more than the ${mib(this.maxBytes)} MiB the shard lets its requests hold at once (--max-inflight-mib): raise it, or send less at once`);
    }
    if (this.held + bytes > this.maxBytes) {
      throw new ShardBusyError(`${what} needs ${mib(bytes)} MiB but the shard's requests already hold ${mib(this.held)} of its ${mib(this.maxBytes)} MiB (--max-inflight-mib); retry shortly`);
    }
    this.held += bytes;
  }

  /** Gives back `bytes` from {@link take}. */
  give(bytes: number): void {
    if (bytes > this.held) {
      // A bug, never a caller's doing: said loudly, but not by throwing from the release paths it is called in.
      log.error(`giving back ${bytes} bytes of a budget of bytes in flight that holds ${this.held}: a request gave back more than it took`);
      this.held = 0;
      return;
    }
    this.held -= bytes;
  }
}

/**
 * What one call holds of the shard's budget of bytes in flight: taken piece
 * by piece, given back piece by piece as each is sent, and whatever is left
 * when the call closes (a cancelled call's writes may never complete).
 */
export class BudgetCharge {
  private held = 0;

  constructor(
    private readonly budget: InflightBudget,
    private readonly what: string,
  ) {}

  /** @throws ShardBusyError when the budget has no room for `bytes`. */
  take(bytes: number): void {
    this.budget.take(bytes, this.what);
    this.held += bytes;
  }

  give(bytes: number): void {
    const back = Math.min(bytes, this.held);
    this.held -= back;
    this.budget.give(back);
  }

  giveAll(): void {
    this.give(this.held);
  }
}
