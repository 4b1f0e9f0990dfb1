import type * as grpc from '@grpc/grpc-js';
import { backoffDelay, sleep } from '../cluster/backoff.js';
import { TesseraError, TooManyRedirectionsError } from '../cluster/errors.js';
import { fromStatus } from '../cluster/wire/status-codec.js';
import { recoveryFor } from './error-policy.js';

/** The budget of one request's recovery (client/options.ts documents each). */
export interface RecoveryBudget {
  maxRedirections: number;
  retryForMs: number;
  maxRetries: number;
  retryDelayMs: number;
}

/** How many times a request waits again for slower workers (a clocked pull that timed out at the shard, 45 s each). */
export const MAX_CLOCK_WAITS = 5;

/** Longest wait between two retries: a shard that is back is found within about this long. */
export const MAX_RETRY_DELAY_MS = 1_000;

/** How a request's work is split by shard and re-split after a failure. */
export interface Recoverable<W, P> {
  /** The parts of `work` per shard, routed by the cached map as it is now. */
  route(work: W): P[];
  /** What is left to do when part `p` failed: its own work, routed again. */
  remaining(p: P): W;
  /** The shard address `p` went to, for errors that name it. */
  address(p: P): string;
  /** Re-reads the shard map (after a redirect, and before a retry). */
  refreshMap(): Promise<void>;
  budget: RecoveryBudget;
  /** Whether the client was closed: a retryable failure is then given to the caller at once. */
  stopped?(): boolean;
  /** Called before the work of a failed part is routed again. */
  onRecover?(p: P, err: TesseraError, how: 'redirect' | 'retry' | 'wait'): void;
}

/**
 * The one recovery path of every client operation, dense and sparse (in the
 * manner of ioredis's cluster client): runs `op` on each part in parallel;
 * a part that fails with a redirect (the slot moved, the map is stale) has
 * its work routed again on a fresh map, within `maxRedirections`; one that
 * fails with a retryable error (shard unreachable, not ready or busy) is
 * retried after a backoff (up to 1 s, the map re-read before each try), for
 * `retryForMs` from its first retry and at most `maxRetries` times; one the
 * shard answered after waiting its longest for slower workers is asked again
 * at once, up to 5 times; any other error goes to the caller. Only the failed part's work is sent again, never
 * the parts that succeeded.
 */
export async function withRecovery<W, P>(work: W, r: Recoverable<W, P>, op: (p: P) => Promise<void>, redirections = 0, retries = 0, retryingSince = 0, waits = 0): Promise<void> {
  await Promise.all(
    r.route(work).map(async (part) => {
      try {
        await op(part);
      } catch (e) {
        const err = e instanceof TesseraError ? e : fromStatus(e as grpc.ServiceError, r.address(part));
        switch (recoveryFor(err)) {
          case 'redirect':
            if (redirections >= r.budget.maxRedirections) throw new TooManyRedirectionsError(redirections, err);
            r.onRecover?.(part, err, 'redirect');
            await r.refreshMap();
            return withRecovery(r.remaining(part), r, op, redirections + 1, retries, retryingSince, waits);
          case 'retry': {
            const since = retries === 0 ? performance.now() : retryingSince;
            const delay = backoffDelay(retries, { minMs: r.budget.retryDelayMs, maxMs: MAX_RETRY_DELAY_MS, jitter: true });
            if (retries >= r.budget.maxRetries || performance.now() + delay - since > r.budget.retryForMs || r.stopped?.()) throw err;
            r.onRecover?.(part, err, 'retry');
            await sleep(delay);
            await r.refreshMap().catch(() => undefined);
            return withRecovery(r.remaining(part), r, op, redirections, retries + 1, since, waits);
          }
          case 'wait':
            if (waits >= MAX_CLOCK_WAITS) throw err;
            r.onRecover?.(part, err, 'wait');
            await r.refreshMap().catch(() => undefined);
            return withRecovery(r.remaining(part), r, op, redirections, retries, retryingSince, waits + 1);
          case 'fail':
            throw err;
        }
      }
    }),
  );
}
