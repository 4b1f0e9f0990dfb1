/** How fast old traffic stops counting: it weighs half as much every minute. */
export const LOAD_HALF_LIFE_MS = 60_000;

/** The global decay is applied at most this often (so recording a request stays one addition). */
const DECAY_EVERY_MS = 1_000;

/**
 * The traffic each slot of a shard carries: bytes of values pulled and pushed
 * (dense values, sparse rows), as an exponentially weighted rate with a
 * one-minute half-life — what `tessera rebalance --by load` reads. Recording
 * adds to one counter; the decay of all of them runs at most once a second,
 * when a request begins or the rates are read.
 */
export class SlotLoad {
  private readonly bytes: Float64Array;
  private decayedAt: number;

  constructor(
    slots: number,
    private readonly now: () => number = () => performance.now(),
    private readonly halfLifeMs = LOAD_HALF_LIFE_MS,
  ) {
    this.bytes = new Float64Array(slots);
    this.decayedAt = now();
  }

  /**
   * Brings the counts up to now: call once per request, before its {@link add}s
   * (the clock is read here, not per slot or row).
   */
  begin(): void {
    this.decay();
  }

  /** Counts `bytes` of traffic on slot `s` (after {@link begin} for the request). */
  add(s: number, bytes: number): void {
    this.bytes[s]! += bytes;
  }

  /**
   * Bytes per second each slot carries, for the slots with any: the weighted
   * sum times ln 2 / half-life, which equals a steady rate once traffic has
   * run for a few half-lives.
   */
  rates(): { slot: number; bytesPerSec: number }[] {
    this.decay();
    const perSec = (Math.LN2 / this.halfLifeMs) * 1000;
    const out: { slot: number; bytesPerSec: number }[] = [];
    this.bytes.forEach((b, slot) => {
      if (b >= 1) out.push({ slot, bytesPerSec: Math.round(b * perSec) });
    });
    return out;
  }

  private decay(): void {
    const now = this.now();
    const elapsed = now - this.decayedAt;
    if (elapsed < DECAY_EVERY_MS) return;
    const factor = 2 ** (-elapsed / this.halfLifeMs);
    for (let s = 0; s < this.bytes.length; s++) this.bytes[s]! *= factor;
    this.decayedAt = now;
  }
}
