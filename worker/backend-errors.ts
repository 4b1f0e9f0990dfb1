import { status } from '@grpc/grpc-js';
import { TesseraError } from '../cluster/errors.js';

/**
 * A compute backend that was asked for (`--backend`) cannot run here. The
 * message names what is missing and what to install, or which backend to
 * choose instead.
 */
export class BackendUnavailableError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'backend-unavailable';
  constructor(
    readonly backend: string,
    readonly missing: string,
    readonly remedy: string,
  ) {
    super(`compute backend "${backend}" is unavailable: ${missing}. ${remedy}`);
  }
  override context(): Record<string, string> {
    return { backend: this.backend };
  }
}
