import { status } from '@grpc/grpc-js';
import { TesseraError, registerError } from '../errors.js';

/**
 * The membership store (Redis) could not be reached, or did not answer in time.
 * Retryable: the store reconnects with backoff in the background. A write that
 * fails this way may or may not have been applied (the command may have reached
 * Redis before the connection broke); re-read before acting on it.
 */
export class MembershipUnavailableError extends TesseraError {
  readonly code = status.UNAVAILABLE;
  readonly reason = 'membership-unavailable';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

registerError('membership-unavailable', { decode: (d) => new MembershipUnavailableError(d), recovery: 'retry' });
