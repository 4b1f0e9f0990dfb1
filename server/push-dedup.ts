/**
 * Remembers which (worker, seq) pushes a slot has applied, so a retried push is
 * applied once. Per worker it keeps the highest sequence seen and the set of
 * sequences within `window` of it; anything older than the window counts as
 * applied (a worker never has that many pushes in flight).
 */
export const DEDUP_WINDOW = 4096;

class SeqWindow {
  high = -1;
  readonly seen = new Set<number>();

  has(seq: number, window: number): boolean {
    return seq <= this.high - window || this.seen.has(seq);
  }

  add(seq: number, window: number): void {
    this.seen.add(seq);
    if (seq > this.high) {
      this.high = seq;
      // Prune in batches so the cost per push stays O(1) amortised.
      if (this.seen.size > 2 * window) for (const s of this.seen) if (s <= this.high - window) this.seen.delete(s);
    }
  }
}

export class PushDedup {
  private readonly workers = new Map<string, SeqWindow>();

  constructor(private readonly window = DEDUP_WINDOW) {}

  /** Whether this slot already applied (worker, seq). */
  has(worker: string, seq: number): boolean {
    return this.workers.get(worker)?.has(seq, this.window) ?? false;
  }

  add(worker: string, seq: number): void {
    let w = this.workers.get(worker);
    if (!w) this.workers.set(worker, (w = new SeqWindow()));
    w.add(seq, this.window);
  }
}
