import { InvalidArgumentError } from '../cluster/errors.js';
import { firstSeq } from '../cluster/worker-id.js';
import { type MembershipStore } from '../cluster/membership/store.js';
import { DEFAULT_CHUNK_BYTES, MAX_MESSAGE_BYTES } from '../cluster/wire/dense-values.js';
import { type TransportSecurity, processSecurity } from '../cluster/tls/transport-security.js';
import { type TransportProvider } from './transport/dense-transport.js';

export interface ClientOptions {
  /** Where the cluster's configuration and shard map are read. */
  store: MembershipStore;
  /** This client's id: half of the (worker id, seq) that makes pushes idempotent. Must be unique in the cluster. */
  workerId: string;
  /** Redirects (moved, stale epoch, not ready) followed per request before giving up. Default 16. */
  maxRedirections: number;
  /**
   * How long a request keeps retrying while its shard is unreachable, not
   * ready or busy (a planned restart, a move's last moment, a full budget),
   * from its first failure; then the last error goes to the caller. Default
   * 30 000 ms: a shard restarted within that is ridden out.
   */
  retryForMs: number;
  /** Retries of one request at most, within retryForMs. Default 1 000 (the time bound is the one that counts). */
  maxRetries: number;
  /** First backoff between retries, doubled each time up to 1 s (so a shard back is found within a second). Default 50 ms. */
  retryDelayMs: number;
  /** Deadline of one pull or push call to one shard. Default 60 000 ms. */
  deadlineMs: number;
  /** Largest chunk of values per message. Default 1 MiB; at most 15 MiB. */
  chunkBytes: number;
  /** Re-read the map this often, besides the store's announcements and every redirect. Default 5 000 ms. */
  mapRefreshMs: number;
  /**
   * How dense values travel: `bulk`, over each shard's plain-TCP bulk port
   * (cluster/wire/bulk-frames.ts; the client learns it from the shard's Describe and
   * falls back to gRPC where a shard has none), or `grpc`, as chunked gRPC
   * streams. Default `bulk`.
   */
  transport: 'bulk' | 'grpc';
  /** Push sequence numbers start after this. Default: the current time in ms × 256 (cluster/worker-id.ts), so a worker restarted under the same id never reuses one. */
  firstSeq: number;
  /**
   * How pushed gradients are encoded on the wire: `none` (float32), `fp16`,
   * `int8` (a scale per block of 256) or `topk:R` (the fraction R of each
   * slot's values largest in magnitude), with error feedback for the lossy
   * ones (cluster/wire/gradient-codec.ts, docs/wire-protocol.md). Default: the
   * cluster's `compression`, else `none`.
   */
  compression?: string;
  /**
   * How its connections are secured: plaintext, or mutual TLS with a
   * certificate of the cluster CA (cluster/tls/transport-security.ts; a
   * worker's certificate must name its `workerId`). Default: the process's
   * (`--tls-dir`), else plaintext.
   */
  security: TransportSecurity;
  /**
   * Where the client's connections come from, one set per shard address
   * (client/transport/dense-transport.ts). Default: a NodePool over gRPC and
   * the bulk transport as `transport` says; tests give an in-memory one.
   */
  transports?: TransportProvider;
}

export type ClientOptionsInput = Pick<ClientOptions, 'store' | 'workerId'> & Partial<ClientOptions>;

/** Fills every option not given with its documented default and checks them once. */
export function clientWithDefaults(input: ClientOptionsInput): ClientOptions {
  const o: ClientOptions = {
    maxRedirections: 16,
    retryForMs: 30_000,
    maxRetries: 1_000,
    retryDelayMs: 50,
    deadlineMs: 60_000,
    chunkBytes: DEFAULT_CHUNK_BYTES,
    mapRefreshMs: 5_000,
    transport: 'bulk',
    firstSeq: firstSeq(),
    security: processSecurity(),
    ...input,
  };
  if (!o.workerId) throw new InvalidArgumentError('client needs a workerId');
  if (o.transport !== 'bulk' && o.transport !== 'grpc') throw new InvalidArgumentError(`client transport must be "bulk" or "grpc", got ${String(o.transport)}`);
  if (!(o.chunkBytes >= 4 && o.chunkBytes <= MAX_MESSAGE_BYTES - (1 << 20))) {
    throw new InvalidArgumentError(`chunkBytes must be in [4, ${MAX_MESSAGE_BYTES - (1 << 20)}], got ${o.chunkBytes}`);
  }
  for (const k of ['maxRedirections', 'retryForMs', 'maxRetries', 'retryDelayMs', 'deadlineMs', 'mapRefreshMs', 'firstSeq'] as const) {
    if (!(Number.isInteger(o[k]) && o[k] >= 0)) throw new InvalidArgumentError(`client option ${k} must be a non-negative integer, got ${o[k]}`);
  }
  return o;
}
