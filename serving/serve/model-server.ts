import { splitHostPort } from '../../cluster/address.js';
import { createLogger } from '../../cluster/log.js';
import type { LoadedModel } from '../runtime/runtime.js';
import { Batcher, BatchStats, type BatchStatsSnapshot } from './batcher.js';
import { startGrpcInferenceServer, type InferenceGrpcServer } from './grpc-server.js';
import { DEFAULT_MAX_BODY_BYTES, startHttpServer, type InferenceHttpServer } from './http-server.js';
import { DEFAULT_MAX_ROWS, resolveVersion, type DecodedInput, type InferenceBackend, type InferenceResult, type RequestCounters } from './inference-request.js';
import type { ModelRepository, RepositoryStatus } from './model-repository.js';
import type { ServedVersion } from './served-version.js';

const log = createLogger('model-server');

/** Options of {@link startModelServer}; every default is in {@link MODEL_SERVER_DEFAULTS}. */
export interface ModelServerOptions {
  /** The model name in URLs and requests (letters, digits, `.`, `_`, `-`); default: the repository's name. */
  name?: string;
  /** `HOST:PORT` for the REST edge (Open Inference Protocol and TensorFlow Serving); port 0 picks a free one. Not served if absent. */
  http?: string;
  /** `HOST:PORT` for the gRPC edge (`inference.GRPCInferenceService`); port 0 picks a free one. Not served if absent. */
  grpc?: string;
  /** Most rows in one run of the model; ≤ 1 runs every request alone. Default 32. */
  maxBatch?: number;
  /** Longest a request waits for others to join its run, in ms. Default 2. */
  maxDelayMs?: number;
  /** Most rows in one request (more: 413 / RESOURCE_EXHAUSTED). Default 1024. */
  maxRows?: number;
  /** Largest request body (REST) or message (gRPC) in bytes. Default 8 MiB. */
  maxBodyBytes?: number;
  /** Where the served version comes from; the caller owns it (and its watcher) and closes it after the server. */
  source: { repository: ModelRepository };
}

/** The defaults of {@link ModelServerOptions}. */
export const MODEL_SERVER_DEFAULTS = {
  maxBatch: 32,
  maxDelayMs: 2,
  maxRows: DEFAULT_MAX_ROWS,
  maxBodyBytes: DEFAULT_MAX_BODY_BYTES,
} as const;

/** Counters of a running server. */
export interface ModelServerStats {
  /** The version being served, if any. */
  version?: number;
  /** Runs of the model, over every version served so far. */
  batching: BatchStatsSnapshot;
  /** Requests and error answers per protocol edge. */
  http: RequestCounters;
  grpc: RequestCounters;
}

/** A running model server. */
export interface ModelServer {
  /** `host:port` of the REST edge with its real port, if served. */
  httpAddress?: string;
  /** `host:port` of the gRPC edge with its real port, if served. */
  grpcAddress?: string;
  repository: ModelRepository;
  stats(): ModelServerStats;
  /** Stops both edges (calls in progress get a short grace); leaves the repository to its owner. */
  close(): Promise<void>;
}

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * Starts the model server behind `tessera serve`: one model name, its
 * current version from the repository (swapped without failing a request),
 * dynamic batching per version, over REST and/or gRPC.
 */
export async function startModelServer(options: ModelServerOptions): Promise<ModelServer> {
  const o = withDefaults(options);
  const stats = new BatchStats();
  const counters = { http: { requests: 0, errors: 0 }, grpc: { requests: 0, errors: 0 } };
  const backend = new RepositoryBackend(o.name, o.repository, o.maxRows, { maxBatch: o.maxBatch, maxDelayMs: o.maxDelayMs }, stats);

  let http: InferenceHttpServer | undefined;
  let grpc: InferenceGrpcServer | undefined;
  try {
    if (o.http) http = await startHttpServer(o.http, backend, o, counters.http);
    if (o.grpc) grpc = await startGrpcInferenceServer(o.grpc, backend, o, counters.grpc);
  } catch (err) {
    await http?.close(0);
    throw err;
  }
  const grpcAddress = grpc && o.grpc ? `${o.grpc.slice(0, o.grpc.lastIndexOf(':'))}:${grpc.port}` : undefined;
  log.info(
    `serving model ${o.name}${http ? ` over HTTP at ${http.address}` : ''}${grpc ? `${http ? ',' : ''} over gRPC at ${grpcAddress}` : ''} ` +
      `(maxBatch ${o.maxBatch}, maxDelayMs ${o.maxDelayMs}, maxRows ${o.maxRows}, maxBodyBytes ${o.maxBodyBytes}); ` +
      `${o.repository.current() ? `version ${o.repository.current()!.version}` : 'no version loaded yet'}`,
  );
  let closing: Promise<void> | undefined;
  return {
    ...(http ? { httpAddress: http.address } : {}),
    ...(grpcAddress ? { grpcAddress } : {}),
    repository: o.repository,
    stats: () => {
      const version = o.repository.current()?.version;
      return { ...(version !== undefined ? { version } : {}), batching: stats.snapshot(), http: { ...counters.http }, grpc: { ...counters.grpc } };
    },
    close() {
      closing ??= Promise.all([http?.close(), grpc?.close()]).then(() => log.info(`model server for ${o.name} stopped`));
      return closing;
    },
  };
}

/** The options with defaults filled in, checked once. */
function withDefaults(options: ModelServerOptions): Required<Omit<ModelServerOptions, 'http' | 'grpc' | 'source'>> & Pick<ModelServerOptions, 'http' | 'grpc'> & { repository: ModelRepository } {
  const repository = options.source?.repository;
  if (!repository) throw new Error('startModelServer needs a source: { repository }');
  const o = { ...MODEL_SERVER_DEFAULTS, ...stripUndefined(options), name: options.name ?? repository.name, repository };
  if (!MODEL_NAME.test(o.name)) throw new Error(`model name "${o.name}" must be letters, digits, ".", "_" or "-" (it appears in URLs)`);
  if (!o.http && !o.grpc) throw new Error('give an http or a grpc address (HOST:PORT), or both');
  for (const [key, address] of [['http', o.http], ['grpc', o.grpc]] as const) {
    if (address === undefined) continue;
    const { port } = splitHostPort(address);
    if (!address.includes(':') || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${key} address "${address}" is not HOST:PORT (port 0 picks a free one)`);
  }
  if (!Number.isInteger(o.maxBatch) || o.maxBatch < 0) throw new Error(`maxBatch must be an integer ≥ 0 (≤ 1: no batching), got ${o.maxBatch}`);
  if (!Number.isFinite(o.maxDelayMs) || o.maxDelayMs < 0) throw new Error(`maxDelayMs must be a number ≥ 0, got ${o.maxDelayMs}`);
  if (!Number.isInteger(o.maxRows) || o.maxRows < 1) throw new Error(`maxRows must be an integer ≥ 1, got ${o.maxRows}`);
  if (!Number.isInteger(o.maxBodyBytes) || o.maxBodyBytes < 1) throw new Error(`maxBodyBytes must be an integer ≥ 1, got ${o.maxBodyBytes}`);
  return o;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Inference on the repository's current version, held for the whole request, through that version's batcher. */
class RepositoryBackend implements InferenceBackend {
  /** One batcher per version: requests of different versions never share a run. Weak, so a retired version's goes with it. */
  private readonly batchers = new WeakMap<ServedVersion, Batcher>();

  constructor(
    readonly modelName: string,
    private readonly repository: ModelRepository,
    readonly maxRows: number,
    private readonly batching: { maxBatch: number; maxDelayMs: number },
    private readonly stats: BatchStats,
  ) {}

  current(): ServedVersion | undefined {
    return this.repository.current();
  }

  status(): RepositoryStatus {
    return this.repository.status();
  }

  statistics(): object {
    return { name: this.modelName, version: this.repository.current()?.version ?? null, batching: this.stats.snapshot() };
  }

  async infer(name: string, version: string | undefined, decode: (model: LoadedModel) => DecodedInput): Promise<InferenceResult> {
    const lease = this.repository.acquire();
    try {
      const served = resolveVersion(this.modelName, lease?.served, name, version);
      const input = decode(served.model);
      const output = await this.batcherFor(served).submit(input.data, input.rows);
      return { served, rows: input.rows, output };
    } finally {
      lease?.release();
    }
  }

  private batcherFor(served: ServedVersion): Batcher {
    let batcher = this.batchers.get(served);
    if (!batcher) {
      batcher = new Batcher(served.model, this.batching, this.stats);
      this.batchers.set(served, batcher);
    }
    return batcher;
  }
}
