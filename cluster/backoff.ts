/**
 * The one backoff of the project, used at every retry site: the client's
 * retries of an unreachable shard, the Redis store's reconnects, the embedded
 * store's map watch.
 *
 * Attempt 0 waits `minMs`; each further attempt doubles the wait, up to
 * `maxMs`. With `jitter`, the wait is "equal jitter": half of it fixed, the
 * other half random, so that many clients that failed together do not come
 * back in step.
 */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  jitter?: boolean;
}

/** Milliseconds to wait before retry `attempt` (counted from 0). */
export function backoffDelay(attempt: number, o: BackoffOptions, random: () => number = Math.random): number {
  const ceiling = Math.min(o.maxMs, o.minMs * 2 ** Math.min(30, Math.max(0, attempt)));
  return o.jitter ? Math.round(ceiling / 2 + (random() * ceiling) / 2) : ceiling;
}

/** Resolves after `ms`, without holding the process open. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
