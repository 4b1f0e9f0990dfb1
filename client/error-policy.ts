import { ClockTimeoutError, MovedError, NotReadyError, ShardUnavailableError, StaleEpochError, type TesseraError } from '../cluster/errors.js';

/** What the client does after a failed call to one shard. */
export type Recovery =
  /** Re-read the map and send the request where it now routes (counts against maxRedirections). */
  | 'redirect'
  /** Wait with backoff, re-read the map, resend (counts against maxRetries). */
  | 'retry'
  /** Give the error to the caller. */
  | 'fail';

/**
 * The one table that decides how each typed error is handled, in the manner of
 * ioredis's cluster client (MOVED / ASK / TRYAGAIN handlers with a budget).
 */
const HANDLERS: [new (...args: never[]) => TesseraError, Recovery][] = [
  [MovedError, 'redirect'],
  [StaleEpochError, 'redirect'],
  [NotReadyError, 'retry'],
  [ShardUnavailableError, 'retry'],
  // A slower worker held a clocked pull back past the shard's wait bound (it may be waiting for
  // the membership store): wait again, within maxRetries, before giving up.
  [ClockTimeoutError, 'retry'],
];

export function recoveryFor(err: unknown): Recovery {
  for (const [cls, recovery] of HANDLERS) if (err instanceof cls) return recovery;
  return 'fail';
}
