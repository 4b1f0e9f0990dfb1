import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { InvalidArgumentError, RemoteError, ResourceExhaustedError, ShardUnavailableError, TesseraError, errorKind } from '../errors.js';
// Imported for its registration: the membership service's errors come back typed too.
import '../membership/membership-errors.js';

/**
 * Turns typed errors into gRPC statuses at a server's edge, and statuses back
 * into typed errors at a client's edge. The reason and context travel as
 * `tessera-*` metadata so a client in any language can act on them.
 */

const PREFIX = 'tessera-';

/** The status object a grpc-js handler passes to its callback or `emit('error')`. */
export function toStatus(err: unknown): Partial<ServiceError> & { code: status; details: string; metadata: Metadata } {
  const metadata = new Metadata();
  if (err instanceof TesseraError) {
    metadata.set(`${PREFIX}error`, err.reason);
    for (const [k, v] of Object.entries(err.context())) metadata.set(`${PREFIX}${k}`, v);
    return { code: err.code, details: wellFormed(err.message), metadata };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: status.INTERNAL, details: wellFormed(`internal error: ${message}`), metadata };
}

/**
 * `text` with each lone surrogate replaced by U+FFFD. A message may quote
 * what a caller sent (a name with a lone surrogate, or cut in the middle of a
 * pair), and grpc-js percent-encodes a status message with encodeURI, which
 * throws on a lone surrogate: outside any handler, so the throw ended the
 * process (found by the fuzz test).
 */
function wellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

function meta(md: Metadata | undefined, key: string): string {
  const v = md?.get(`${PREFIX}${key}`)[0];
  return v === undefined ? '' : String(v);
}

/** The typed error for a status received from a shard or membership service at `address`. */
export function fromStatus(err: Partial<ServiceError> & { code?: number; details?: string; message?: string }, address = ''): TesseraError {
  const md = err.metadata;
  const reason = meta(md, 'error');
  const details = err.details || err.message || 'unknown error';
  const kind = errorKind(reason);
  if (kind) return kind.decode(details, (key) => meta(md, key));
  switch (err.code) {
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
      return new ShardUnavailableError(`${address || 'server'} unavailable: ${details}`, address);
    case status.RESOURCE_EXHAUSTED:
      return new ResourceExhaustedError(details);
    case status.INVALID_ARGUMENT:
      return new InvalidArgumentError(details);
    default:
      return new RemoteError(err.code ?? status.UNKNOWN, details);
  }
}
