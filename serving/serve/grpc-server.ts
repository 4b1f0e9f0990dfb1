import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { TesseraError } from '../../cluster/errors.js';
import { shutdown } from '../../cluster/grpc-server.js';
import { createLogger } from '../../cluster/log.js';
import { LOADER_OPTIONS, protoRoot } from '../../cluster/proto.js';
import { toStatus } from '../../cluster/wire/status-codec.js';
import { floatBytes } from '../../cluster/wire/dense-values.js';
import {
  checkModelName,
  decodeGrpcInfer,
  modelMetadata,
  resolveVersion,
  serverMetadata,
  type GrpcInferRequest,
  type InferenceBackend,
  type RequestCounters,
} from './inference-request.js';

const log = createLogger('serve-grpc');

/** The Open Inference Protocol's gRPC contract, relative to {@link protoRoot}. */
export const INFERENCE_PROTO_FILE = 'inference/grpc_service.proto';

/** The full name of the service, as clients and health checks name it. */
export const INFERENCE_SERVICE_NAME = 'inference.GRPCInferenceService';

/**
 * How the inference contract maps to JavaScript: Tessera's usual options
 * (camelCase fields, defaults filled in), but 64-bit integers as decimal
 * strings, because INT64 inputs use their full range (ids, hashes) and a
 * `Number` would round them above 2^53.
 */
export const INFERENCE_LOADER_OPTIONS: protoLoader.Options = { ...LOADER_OPTIONS, longs: String };

let cachedService: grpc.ServiceClientConstructor | undefined;

/** Constructor of an `inference.GRPCInferenceService` client; its `.service` is the server-side definition. */
export function inferenceService(): grpc.ServiceClientConstructor {
  if (!cachedService) {
    const definition = protoLoader.loadSync(INFERENCE_PROTO_FILE, { ...INFERENCE_LOADER_OPTIONS, includeDirs: [protoRoot()] });
    const inference = grpc.loadPackageDefinition(definition)['inference'] as grpc.GrpcObject;
    cachedService = inference['GRPCInferenceService'] as grpc.ServiceClientConstructor;
  }
  return cachedService;
}

/** The gRPC edge, listening. */
export interface InferenceGrpcServer {
  server: grpc.Server;
  /** The port actually bound (real when 0 was asked for). */
  port: number;
  /** Stops accepting, lets calls in progress finish for up to `graceMs`, then cuts the rest. */
  close(graceMs?: number): Promise<void>;
}

/**
 * Serves `inference.GRPCInferenceService` for one model. ModelInfer takes
 * its input in `contents` or in `raw_input_contents` and always answers in
 * `raw_output_contents` (little-endian float32), as Triton does: a client
 * then reads the result without a repeated-float decode. Errors are statuses
 * (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, RESOURCE_EXHAUSTED) with the
 * message and `tessera-error` metadata (cluster/wire/status-codec.ts).
 */
export async function startGrpcInferenceServer(address: string, backend: InferenceBackend, options: { maxBodyBytes: number }, counters: RequestCounters): Promise<InferenceGrpcServer> {
  const server = new grpc.Server({
    // A request may be as large as the REST edge allows; grpc-js refuses larger ones with RESOURCE_EXHAUSTED before decoding them.
    'grpc.max_receive_message_length': options.maxBodyBytes,
    // Answers are bounded by maxRows × the output width, not by the request's size.
    'grpc.max_send_message_length': -1,
    'grpc.keepalive_permit_without_calls': 1,
  });
  server.addService(inferenceService().service, implementation(backend, counters));
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(new Error(`cannot listen on ${address}: ${err.message}`)) : resolve(p))),
  );
  return {
    server,
    port,
    close(graceMs = 2000) {
      return shutdown(server, graceMs);
    },
  };
}

function implementation(backend: InferenceBackend, counters: RequestCounters): grpc.UntypedServiceImplementation {
  const name = backend.modelName;
  const unary =
    <Req, Res>(f: (req: Req) => Res | Promise<Res>): grpc.handleUnaryCall<Req, Res> =>
    (call, callback) => {
      counters.requests++;
      Promise.resolve()
        .then(() => f(call.request))
        .then(
          (res) => callback(null, res),
          (err: unknown) => {
            counters.errors++;
            if (!(err instanceof TesseraError)) log.error(`${call.getPath()} failed: ${(err as Error)?.stack ?? String(err)}`);
            callback(toStatus(err));
          },
        );
    };
  return {
    ServerLive: unary(() => ({ live: true })),
    ServerReady: unary(() => ({ ready: backend.current() !== undefined })),
    ModelReady: unary((req: { name: string; version: string }) => {
      checkModelName(name, req.name);
      if (!backend.current()) return { ready: false };
      resolveVersion(name, backend.current(), req.name, req.version);
      return { ready: true };
    }),
    ServerMetadata: unary(() => serverMetadata()),
    ModelMetadata: unary((req: { name: string; version: string }) => modelMetadata(name, resolveVersion(name, backend.current(), req.name, req.version))),
    ModelInfer: unary(async (req: GrpcInferRequest) => {
      const result = await backend.infer(req.modelName, req.modelVersion, (model) => decodeGrpcInfer(req, model, backend.maxRows));
      const { output } = result.served.model;
      return {
        modelName: name,
        modelVersion: String(result.served.version),
        id: req.id,
        outputs: [{ name: output.name, datatype: 'FP32', shape: [result.rows, output.width] }],
        rawOutputContents: [floatBytes(result.output)],
      };
    }),
  };
}
