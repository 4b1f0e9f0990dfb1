import type * as grpc from '@grpc/grpc-js';
import { backoffDelay, sleep } from '../cluster/backoff.js';
import { TesseraError, TooManyRedirectionsError } from '../cluster/errors.js';
import { fromStatus } from '../cluster/wire/status-codec.js';
import { recoveryFor } from './error-policy.js';

/** The budget of one request's recovery (client/options.ts documents each). */
export interface RecoveryBudget {
  maxRedirections: number;
  maxRetries: number;
  retryDelayMs: number;
}

/** Longest wait between two retries. */
export const MAX_RETRY_DELAY_MS = 2_000;

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
  /** Called before the work of a failed part is routed again. */
  onRecover?(p: P, err: TesseraError, how: 'redirect' | 'retry'): void;
}

/**
 * The one recovery path of every client operation, dense and sparse (in the
 * manner of ioredis's cluster client): runs `op` on each part in parallel;
 * a part that fails with a redirect (the slot moved, the map is stale) has
 * its work routed again on a fresh map, within `maxRedirections`; one that
 * fails with a retryable error (shard unreachable or not ready) is retried
 * after a backoff, within `maxRetries`; any other error goes to the caller.
 * Only the failed part's work is sent again, never the parts that succeeded.
 */
export async function withRecovery<W, P>(work: W, r: Recoverable<W, P>, op: (p: P) => Promise<void>, redirections = 0, retries = 0): Promise<void> {
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
            return withRecovery(r.remaining(part), r, op, redirections + 1, retries);
          case 'retry':
            if (retries >= r.budget.maxRetries) throw err;
            r.onRecover?.(part, err, 'retry');
            await sleep(backoffDelay(retries, { minMs: r.budget.retryDelayMs, maxMs: MAX_RETRY_DELAY_MS }));
            await r.refreshMap().catch(() => undefined);
            return withRecovery(r.remaining(part), r, op, redirections, retries + 1);
          case 'fail':
            throw err;
        }
      }
    }),
  );
}
