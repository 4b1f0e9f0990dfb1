import { badWorkerId } from '../cluster/worker-id.js';

/**
 * Remembers which (worker, seq) pushes a slot has applied, so a retried push is
 * applied once. Per worker it keeps the highest sequence seen and a bitmap of
 * the `window` sequences up to it (512 bytes for the default 4096); anything
 * older than the window counts as applied (a worker never has that many pushes
 * in flight). Memory per slot and worker is constant, and each check is O(1).
 */
export const DEDUP_WINDOW = 4096;

class SeqWindow {
  high = -1;
  private readonly bits: Uint32Array;

  constructor(private readonly window: number) {
    this.bits = new Uint32Array(Math.ceil(window / 32));
  }

  has(seq: number): boolean {
    if (seq > this.high) return false;
    if (seq <= this.high - this.window) return true;
    const i = seq % this.window;
    return (this.bits[i >>> 5]! & (1 << (i & 31))) !== 0;
  }

  add(seq: number): void {
    if (seq > this.high) {
      // Sequences between the old high and this one have not been seen: clear their bits.
      if (this.high < 0 || seq - this.high >= this.window) this.bits.fill(0);
      else for (let s = this.high + 1; s < seq; s++) this.clear(s % this.window);
      this.high = seq;
    } else if (seq <= this.high - this.window) return;
    const i = seq % this.window;
    this.bits[i >>> 5]! |= 1 << (i & 31);
  }

  private clear(i: number): void {
    this.bits[i >>> 5]! &= ~(1 << (i & 31));
  }

  /** The bitmap, for a checkpoint. */
  get words(): Uint32Array {
    return this.bits;
  }
}

/** One worker's applied pushes as a checkpoint holds them: its highest sequence and the window's bitmap, base64. */
export interface DedupImage {
  worker: string;
  high: number;
  bits: string;
}

/** Why `image` cannot be a slot's record of a worker's applied pushes under a window of `window` sequences, or null when it can. */
export function badDedupImage(image: unknown, window = DEDUP_WINDOW): string | null {
  if (typeof image !== 'object' || image === null) return 'applied pushes that are not a {worker, high, bits} record';
  const { worker, high, bits } = image as Partial<DedupImage>;
  const bad = badWorkerId(worker);
  if (bad) return `applied pushes of a worker that cannot be one: ${bad}`;
  const bytes = typeof bits === 'string' ? Buffer.from(bits, 'base64').byteLength : -1;
  if (bytes !== Math.ceil(window / 32) * 4 || !Number.isSafeInteger(high)) return `a dedup window of ${bytes} bytes (high ${String(high).slice(0, 40)}) does not fit this shard's ${Math.ceil(window / 32) * 4}-byte window`;
  return null;
}

export class PushDedup {
  private readonly workers = new Map<string, SeqWindow>();
  /** The worker looked up last, and its window: a push checks and marks each slot under one worker. */
  private lastWorker: string | null = null;
  private lastWindow: SeqWindow | undefined;

  /** @param window sequences remembered per worker below its highest. */
  constructor(private readonly window = DEDUP_WINDOW) {
    if (!Number.isInteger(window) || window < 1) throw new Error(`dedup window must be a positive integer, got ${window}`);
  }

  /** Whether this slot already applied (worker, seq). */
  has(worker: string, seq: number): boolean {
    return this.windowOf(worker)?.has(seq) ?? false;
  }

  add(worker: string, seq: number): void {
    let w = this.windowOf(worker);
    if (!w) {
      this.workers.set(worker, (w = new SeqWindow(this.window)));
      this.lastWindow = w;
    }
    w.add(seq);
  }

  private windowOf(worker: string): SeqWindow | undefined {
    if (worker !== this.lastWorker) {
      this.lastWorker = worker;
      this.lastWindow = this.workers.get(worker);
    }
    return this.lastWindow;
  }

  /** What this slot applied, per worker, copied (for a checkpoint). */
  save(): DedupImage[] {
    return [...this.workers].map(([worker, w]) => ({ worker, high: w.high, bits: Buffer.from(w.words.buffer, w.words.byteOffset, w.words.byteLength).toString('base64') }));
  }

  /** Replaces what this slot applied with `images` (from {@link save}, with the same window). */
  load(images: readonly DedupImage[]): void {
    this.workers.clear();
    this.lastWorker = null;
    for (const image of images) {
      const bad = badDedupImage(image, this.window);
      if (bad) throw new Error(bad);
      const w = new SeqWindow(this.window);
      const bits = Buffer.from(image.bits, 'base64');
      w.high = image.high;
      w.words.set(new Uint32Array(bits.buffer.slice(bits.byteOffset, bits.byteOffset + bits.byteLength)));
      this.workers.set(image.worker, w);
    }
  }
}
