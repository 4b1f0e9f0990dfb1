import { floatHeap } from './float-heap.js';
import { InflightBudget } from './inflight-budget.js';

/** Bytes of idle push buffers a shard keeps for reuse: windows of many float32 pushes at once, or two whole decoded pushes of a 64 MB model under a codec. */
export const GRADIENT_POOL_BYTES = 128 << 20;

/**
 * Reusable buffers that pushed gradients are received in: a float32 push's
 * window (push-assembler.ts, 1 MiB or its largest slot) and, under a codec,
 * the decoded gradient (tens of MB for a large model). Allocating them fresh
 * for every push made the kernel map and zero new pages on first touch and V8
 * collect garbage for the external memory, which together cost more than the
 * copy itself (docs/benchmarks.md). Buffers come from the float heap where
 * there is one, so the optimizers' SIMD kernels read the gradient where it
 * lies. A buffer is reused only once its push is settled, and every value a
 * slot is applied from was written by that push first (pieces must arrive in
 * order and cover the push exactly), so no stale value is ever applied.
 */
export class GradientPool {
  /** Idle buffers, largest first. */
  private idle: Float32Array[] = [];
  private idleBytes = 0;
  /** The whole buffer behind each view handed out. */
  private readonly lent = new WeakMap<Float32Array, Float32Array>();
  /** A view dropped without {@link release} (a call that vanished) gives its heap block and its budget back when collected. */
  private readonly lost = new FinalizationRegistry<Float32Array>((whole) => {
    this.budget.give(whole.byteLength);
    floatHeap()?.free(whole);
  });

  /**
   * @param maxIdleBytes idle buffers kept for reuse at most.
   * @param budget the shard's bytes in flight: every buffer lent is taken from it, and given back on release.
   */
  constructor(
    private readonly maxIdleBytes = GRADIENT_POOL_BYTES,
    readonly budget = new InflightBudget(),
  ) {}

  /**
   * A buffer of exactly `length` floats (a view of a pooled one when one is
   * large enough); contents unspecified. Its bytes are taken from the budget.
   * @throws ShardBusyError when they do not fit in it (nothing is allocated).
   */
  acquire(length: number, what = 'a push'): Float32Array {
    let best = -1;
    for (let i = 0; i < this.idle.length; i++) if (this.idle[i]!.length >= length) best = i;
    this.budget.take(best >= 0 ? this.idle[best]!.byteLength : length * 4, what);
    let whole: Float32Array;
    if (best >= 0) {
      whole = this.idle.splice(best, 1)[0]!;
      this.idleBytes -= whole.byteLength;
    } else {
      whole = floatHeap()?.alloc(length, this) ?? new Float32Array(length);
    }
    // Always a distinct object from `whole`, so `lost` can hold `whole` without keeping the view alive.
    const view = whole.subarray(0, length);
    this.lent.set(view, whole);
    this.lost.register(view, whole, view);
    return view;
  }

  /** Gives back a buffer from {@link acquire}; the caller must not touch it afterwards. */
  release(view: Float32Array): void {
    const whole = this.lent.get(view);
    if (!whole) return;
    this.lent.delete(view);
    this.lost.unregister(view);
    this.budget.give(whole.byteLength);
    this.idle.push(whole);
    this.idleBytes += whole.byteLength;
    // Over budget: drop the smallest idle buffers first, keeping the ones big pushes need.
    this.idle.sort((a, b) => b.length - a.length);
    while (this.idleBytes > this.maxIdleBytes) {
      const dropped = this.idle.pop()!;
      this.idleBytes -= dropped.byteLength;
      floatHeap()?.free(dropped);
    }
  }
}
