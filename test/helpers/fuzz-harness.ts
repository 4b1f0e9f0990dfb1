import { readFileSync } from 'node:fs';
import { type SparseClient } from '../../client/sparse-client.js';
import { type TesseraClient } from '../../client/tessera-client.js';

/**
 * What the fuzz test (test/functional/fuzz.test.ts) runs beside the fuzz: a
 * valid workload whose every value is known, a tally of outcomes, and the
 * memory of the processes under test.
 */

/** Resident and peak resident memory of a process, in MiB, from /proc. */
export function memoryOf(pid: number): { rss: number; peak: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
}

/** The gradient of valid push `step`: small multiples of 1/256, so SGD's float32 arithmetic is exactly replayable. */
function gradient(step: number, n: number): Float32Array {
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) g[i] = (((step * 31 + i * 7) % 17) - 8) / 256;
  return g;
}

/**
 * The valid workload: one worker pushes a known gradient to every dense value
 * and to `rows` of `table`, step after step, alternating the bulk and gRPC
 * transports, and replays each acknowledged push on its own copy of the
 * values (SGD with learning rate 1: w ← fround(w − g)), starting from the
 * values the worker pulled before.
 */
export class CountingWorkload {
  steps = 0;
  private running: Promise<void> | null = null;
  private stopping = false;
  private failure: unknown = null;

  constructor(
    private readonly viaBulk: TesseraClient,
    private readonly viaGrpc: TesseraClient,
    private readonly sparseClient: SparseClient,
    private readonly table: string,
    private readonly rows: bigint[],
    /** The dense values and the rows' values, as the pushes so far make them. */
    readonly dense: Float32Array,
    readonly sparse: Float32Array,
    private readonly firstSeq: number,
  ) {}

  start(): void {
    const slots = this.viaBulk.config.slots;
    this.running = (async () => {
      while (!this.stopping) {
        const step = this.steps;
        const g = gradient(step, this.dense.length);
        const client = step % 2 === 0 ? this.viaBulk : this.viaGrpc;
        const ack = await client.push(g, this.firstSeq + step);
        if (ack.appliedSlots !== slots) throw new Error(`valid push ${step} applied ${ack.appliedSlots} of ${slots} slots (${ack.duplicateSlots} duplicates)`);
        for (let i = 0; i < g.length; i++) this.dense[i] = Math.fround(this.dense[i]! - g[i]!);
        const r = gradient(step + 1000, this.sparse.length);
        await this.sparseClient.push(this.table, this.rows, r, this.firstSeq + step);
        for (let i = 0; i < r.length; i++) this.sparse[i] = Math.fround(this.sparse[i]! - r[i]!);
        this.steps++;
        // Leave the two cores to the fuzz most of the time.
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })().catch((err: unknown) => {
      this.failure = err;
    });
  }

  /** Stops after the push in progress; throws what failed a valid push, if one did. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.running;
    if (this.failure) throw this.failure;
  }
}

/** Runs `work` over `items` with at most `limit` at a time. */
export async function pool<T>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await work(items[i]!, i);
      }
    }),
  );
}

/** A tally of outcomes, and the first few bad ones in words (with the bytes that made them). */
export class Outcomes {
  readonly counts = new Map<string, number>();
  readonly bad: string[] = [];
  badTotal = 0;

  count(what: string): void {
    this.counts.set(what, (this.counts.get(what) ?? 0) + 1);
  }

  fail(where: string, what: string, bytes: Buffer[]): void {
    this.badTotal++;
    if (this.bad.length < 5) this.bad.push(`${where}: ${what}; request (base64, first 300 bytes of each message): ${bytes.map((b) => b.subarray(0, 300).toString('base64')).join(' | ')}`);
  }

  summary(): string {
    return [...this.counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ');
  }
}
