import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type ListenerLimits } from '../../cluster/listener-limits.js';
import { type ChildReply, type ChildRequest } from './shard-child.js';

const CHILD = fileURLToPath(new URL('./shard-child.js', import.meta.url));

/** How long the child may take to start its shard. */
const START_TIMEOUT_MS = 20_000;
/** How often {@link ShardProcess.watchPeak} samples resident memory where the kernel's own peak cannot be reset. */
const SAMPLE_EVERY_MS = 5;

export const MiB = 1 << 20;

/** Whether this host can show another process's resident memory (Linux's /proc). */
export function canMeasureRss(): boolean {
  return existsSync(`/proc/${process.pid}/status`);
}

/**
 * One shard alone in a child process (shard-child.ts), started with a flat
 * model and the listener limits a test gives, so that the process's resident
 * set (VmRSS in /proc/PID/status) is the shard's own. Linux only.
 */
export class ShardProcess {
  private readonly replies: ChildReply[] = [];
  private waiting: (() => void) | null = null;
  private exited = false;
  address = '';
  bulkAddress = '';

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: ChildReply) => {
      this.replies.push(m);
      this.waiting?.();
    });
    child.on('exit', () => {
      this.exited = true;
      this.waiting?.();
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  static async start(opts: { elements: number; slots: number; limits: ListenerLimits }): Promise<ShardProcess> {
    // --expose-gc: a baseline is taken after a full collection, so garbage left by the set-up does not count either way.
    const child = fork(CHILD, [], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const p = new ShardProcess(child);
    const timer = setTimeout(() => child.kill('SIGKILL'), START_TIMEOUT_MS);
    try {
      const r = await p.ask({ kind: 'start', ...opts });
      if (r.kind !== 'started') throw new Error(`the shard process did not start: ${r.kind === 'failed' ? r.message : r.kind}`);
      p.address = r.address;
      p.bulkAddress = r.bulkAddress;
      return p;
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resident memory now, in bytes (VmRSS). */
  rss(): number {
    return this.status('VmRSS');
  }

  /** Collects garbage in the shard's process twice, then reads its resident memory: the baseline a case starts from. */
  async settledRss(): Promise<number> {
    await this.ask({ kind: 'gc' });
    return this.rss();
  }

  /**
   * Starts watching the peak of resident memory from now: the kernel's own
   * high-water mark (VmHWM), reset by writing 5 to /proc/PID/clear_refs, where
   * that is allowed; else (and besides) VmRSS sampled every few milliseconds.
   * `stop()` ends the watch and returns the highest seen.
   */
  watchPeak(): { stop(): number } {
    let kernelPeak = false;
    try {
      writeFileSync(`/proc/${this.pid}/clear_refs`, '5');
      kernelPeak = true;
    } catch {
      // Not ours to reset (another user, or an old kernel): sampling alone.
    }
    let sampled = this.rss();
    const timer = setInterval(() => {
      try {
        sampled = Math.max(sampled, this.rss());
      } catch {
        // The process has gone; the last sample stands.
      }
    }, SAMPLE_EVERY_MS);
    const peak = () => {
      try {
        sampled = Math.max(sampled, this.rss());
        return kernelPeak ? Math.max(sampled, this.status('VmHWM')) : sampled;
      } catch {
        return sampled;
      }
    };
    return {
      stop: () => {
        clearInterval(timer);
        return peak();
      },
    };
  }

  /** Open connections on the shard's gRPC port and on its bulk port, as its servers count them, and the bytes its open bulk connections have read. */
  async connections(): Promise<{ bulk: number; grpc: number; bulkBytesRead: number }> {
    const r = await this.ask({ kind: 'connections' });
    if (r.kind !== 'connections') throw new Error(`unexpected answer from the shard process: ${JSON.stringify(r)}`);
    return { bulk: r.bulk, grpc: r.grpc, bulkBytesRead: r.bulkBytesRead };
  }

  /** Stops the shard (the child closes it when its channel closes) and waits for the process to end; killed after 5 s. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    if (this.child.connected) this.child.disconnect();
    else this.child.kill('SIGKILL');
    await gone;
    clearTimeout(timer);
  }

  private status(field: 'VmRSS' | 'VmHWM'): number {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    if (!m) throw new Error(`no ${field} in /proc/${this.pid}/status`);
    return Number(m[1]) * 1024;
  }

  private async ask(req: ChildRequest): Promise<ChildReply> {
    this.child.send(req);
    while (this.replies.length === 0) {
      if (this.exited) throw new Error('the shard process exited');
      await new Promise<void>((r) => (this.waiting = r));
    }
    return this.replies.shift()!;
  }
}
