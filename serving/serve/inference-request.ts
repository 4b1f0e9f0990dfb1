import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { InvalidArgumentError, NotReadyError, ResourceExhaustedError } from '../../cluster/errors.js';
import { protoRoot } from '../../cluster/proto.js';
import { ModelNotFoundError } from '../errors.js';
import type { LoadedModel, TensorSignature } from '../runtime/runtime.js';
import type { RepositoryStatus } from './model-repository.js';
import type { ServedVersion } from './served-version.js';

/**
 * The request and response logic both protocol edges share: which version a
 * request names, the Open Inference Protocol's tensor checks (for JSON, gRPC
 * `contents` and gRPC `raw_input_contents`), TensorFlow Serving's predict
 * body, and the metadata answers. The edges (http-server.ts, grpc-server.ts)
 * only frame and parse; every refusal is a typed error made here.
 */

/** Most examples in one request unless the server is told otherwise. */
export const DEFAULT_MAX_ROWS = 1024;

/** The server's name in the protocol's server metadata. */
export const SERVER_NAME = 'tessera';

/** A request's input, checked and in the model's input type: `rows × input.width` values, row-major. */
export interface DecodedInput {
  data: Float32Array | BigInt64Array;
  rows: number;
}

/** A request's answer: the version that ran it and its `rows × output.width` values. */
export interface InferenceResult {
  served: ServedVersion;
  rows: number;
  output: Float32Array;
}

/** Requests and error answers of one protocol edge. */
export interface RequestCounters {
  requests: number;
  errors: number;
}

/** What a protocol edge serves: one model name, its current version, inference through the batcher. */
export interface InferenceBackend {
  /** The model name clients ask for. */
  readonly modelName: string;
  /** Most rows in one request. */
  readonly maxRows: number;
  /** The version being served; undefined before the first load. */
  current(): ServedVersion | undefined;
  /** The repository's status (current version, failed versions). */
  status(): RepositoryStatus;
  /**
   * Holds the current version for the whole request, checks `name` and
   * `version` against it, decodes the input for its signature with `decode`,
   * and runs it in a batch.
   */
  infer(name: string, version: string | undefined, decode: (model: LoadedModel) => DecodedInput): Promise<InferenceResult>;
  /** Counters of the runs so far (batches, rows, requests, largest batch), for `GET /v2/models/{name}/stats`. */
  statistics(): object;
}

const MAX_INT64 = 2n ** 63n - 1n;
const MIN_INT64 = -(2n ** 63n);
const DECIMAL_INTEGER = /^-?[0-9]+$/;

// ---- names and versions ----------------------------------------------------

/** @throws ModelNotFoundError when `requested` is not the served model's name. */
export function checkModelName(served: string, requested: string): void {
  if (requested !== served) throw new ModelNotFoundError(`model "${requested}" is not served here; this server serves "${served}"`);
}

/**
 * The version a request runs on: the current one, which a request may name
 * (empty or undefined: whichever is current). Only the current version is served.
 * @throws ModelNotFoundError for another model or another version; NotReadyError when no version is loaded.
 */
export function resolveVersion(modelName: string, current: ServedVersion | undefined, requestedName: string, requestedVersion?: string): ServedVersion {
  checkModelName(modelName, requestedName);
  if (!current) throw new NotReadyError(`model "${modelName}" has no version loaded yet; retry once /v2/health/ready answers 200`);
  if (requestedVersion !== undefined && requestedVersion !== '' && requestedVersion !== String(current.version)) {
    throw new ModelNotFoundError(`version "${requestedVersion}" of model "${modelName}" is not served; the served version is ${current.version}`);
  }
  return current;
}

// ---- metadata --------------------------------------------------------------

let serverVersion: string | undefined;

/** The protocol's server metadata: Tessera's name and package version; no extensions. */
export function serverMetadata(): { name: string; version: string; extensions: string[] } {
  if (serverVersion === undefined) {
    try {
      // package.json sits beside proto/ in the source tree and in the published package.
      serverVersion = String((JSON.parse(readFileSync(join(dirname(protoRoot()), 'package.json'), 'utf8')) as { version?: unknown }).version ?? 'unknown');
    } catch {
      serverVersion = 'unknown';
    }
  }
  return { name: SERVER_NAME, version: serverVersion, extensions: [] };
}

/** The protocol's platform name for a runtime format. */
export function platformOf(model: LoadedModel): string {
  return model.format === 'tfjs' ? 'tensorflowjs' : model.format;
}

/** A tensor's metadata: its name, datatype and shape `[-1, width]` (any number of rows). */
export interface TensorMetadata {
  name: string;
  datatype: string;
  shape: number[];
}

/** The protocol's model metadata of the served version. */
export function modelMetadata(name: string, served: ServedVersion): { name: string; versions: string[]; platform: string; inputs: TensorMetadata[]; outputs: TensorMetadata[] } {
  const tensor = (s: TensorSignature): TensorMetadata => ({ name: s.name, datatype: s.datatype, shape: [-1, s.width] });
  return { name, versions: [String(served.version)], platform: platformOf(served.model), inputs: [tensor(served.model.input)], outputs: [tensor(served.model.output)] };
}

// ---- the tensor checks -----------------------------------------------------

/** The header of a request's input tensor, whatever the wire. */
export interface TensorHeader {
  name: unknown;
  datatype: unknown;
  shape: unknown;
}

/**
 * Checks one input tensor's name, datatype and shape against the model and
 * the row limit; returns its rows and how many values it must carry.
 */
export function checkTensorHeader(t: TensorHeader, input: TensorSignature, maxRows: number): { rows: number; values: number } {
  if (t.name !== input.name) {
    const given = t.name === undefined || t.name === '' ? 'the input has no name' : `input ${describe(t.name)} is unknown`;
    throw new InvalidArgumentError(`${given}; this model's one input is named "${input.name}"`);
  }
  if (t.datatype !== input.datatype) {
    throw new InvalidArgumentError(`input "${input.name}" has datatype ${describe(t.datatype)}; this model takes ${input.datatype}`);
  }
  const shape = shapeOf(t.shape, input.name);
  const expected = `[n, ${input.width}] (or [${input.width}] for one example)`;
  if (!(shape.length === 2 && shape[1] === input.width) && !(shape.length === 1 && shape[0] === input.width)) {
    throw new InvalidArgumentError(`input "${input.name}" has shape [${shape.join(', ')}]; this model takes ${expected}`);
  }
  const rows = shape.length === 2 ? shape[0]! : 1;
  if (rows === 0) throw new InvalidArgumentError(`input "${input.name}" has shape [${shape.join(', ')}]: no examples; send at least one row`);
  if (rows > maxRows) {
    throw new ResourceExhaustedError(`input "${input.name}" has ${rows} rows; this server takes at most ${maxRows} per request (its maxRows option): split the request`);
  }
  return { rows, values: rows * input.width };
}

function shapeOf(shape: unknown, name: string): number[] {
  if (!Array.isArray(shape)) throw new InvalidArgumentError(`input "${name}" has no shape; give it as [n, width]`);
  return shape.map((d: unknown) => {
    // gRPC's int64 dimensions arrive as decimal strings, JSON's as numbers.
    const n = typeof d === 'string' && DECIMAL_INTEGER.test(d) ? Number(d) : d;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
      throw new InvalidArgumentError(`input "${name}" has shape dimension ${describe(d)}; dimensions are non-negative integers`);
    }
    return n;
  });
}

/** The one input of a request: exactly one tensor. */
export function singleInput<T>(inputs: unknown, input: TensorSignature): T {
  if (!Array.isArray(inputs) || inputs.length !== 1) {
    const got = Array.isArray(inputs) ? `${inputs.length} inputs` : 'no inputs array';
    throw new InvalidArgumentError(`this model takes exactly one input tensor, "${input.name}"; the request has ${got}`);
  }
  if (typeof inputs[0] !== 'object' || inputs[0] === null) throw new InvalidArgumentError(`input 0 is ${describe(inputs[0])}; give an object with name, shape, datatype and data`);
  return inputs[0] as T;
}

/** Checks requested output names (none: the model's one output). */
export function checkRequestedOutputs(outputs: unknown, output: TensorSignature): void {
  if (outputs === undefined || outputs === null) return;
  if (!Array.isArray(outputs)) throw new InvalidArgumentError(`"outputs" must be a list of {"name": ...}; this model's one output is "${output.name}"`);
  for (const o of outputs) {
    const name = (o as { name?: unknown } | null)?.name;
    if (name !== output.name) throw new InvalidArgumentError(`output ${describe(name)} is not this model's; its one output is named "${output.name}"`);
  }
}

// ---- JSON (Open Inference Protocol REST, TensorFlow Serving REST) ------------

/** An Open Inference Protocol REST infer body, checked: its id and its input. */
export function decodeJsonInfer(body: unknown, model: LoadedModel, maxRows: number): { id?: string; input: DecodedInput } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InvalidArgumentError('the request body must be a JSON object {"inputs": [{"name", "shape", "datatype", "data"}]}');
  }
  const { id, inputs, outputs } = body as { id?: unknown; inputs?: unknown; outputs?: unknown };
  if (id !== undefined && typeof id !== 'string') throw new InvalidArgumentError(`"id" must be a string, got ${describe(id)}`);
  checkRequestedOutputs(outputs, model.output);
  const tensor = singleInput<TensorHeader & { data?: unknown }>(inputs, model.input);
  const { rows, values } = checkTensorHeader(tensor, model.input, maxRows);
  if (!Array.isArray(tensor.data)) throw new InvalidArgumentError(`input "${model.input.name}" has no "data" array`);
  const data = fillJson(tensor.data, values, model.input, `shape [${(tensor.shape as unknown[]).join(', ')}]`);
  return { ...(id !== undefined ? { id } : {}), input: { data, rows } };
}

/** An Open Inference Protocol REST infer answer. */
export function encodeJsonInfer(name: string, result: InferenceResult, id?: string): object {
  const { output } = result.served.model;
  return {
    model_name: name,
    model_version: String(result.served.version),
    ...(id !== undefined ? { id } : {}),
    outputs: [{ name: output.name, datatype: 'FP32', shape: [result.rows, output.width], data: Array.from(result.output) }],
  };
}

/**
 * A TensorFlow Serving predict body — row form `{"instances": [[...], ...]}`
 * or columnar form `{"inputs": [[...], ...]}` (either may name the input:
 * `[{"x": [...]}, ...]`, `{"inputs": {"x": [[...], ...]}}`) — checked.
 */
export function decodePredict(body: unknown, model: LoadedModel, maxRows: number): { input: DecodedInput; columnar: boolean } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InvalidArgumentError('the request body must be a JSON object {"instances": [[...], ...]} or {"inputs": [[...], ...]}');
  }
  const { instances, inputs, signature_name: signature } = body as { instances?: unknown; inputs?: unknown; signature_name?: unknown };
  if (signature !== undefined && signature !== 'serving_default') {
    throw new InvalidArgumentError(`signature_name ${describe(signature)} is unknown; this model has one signature, "serving_default"`);
  }
  if ((instances === undefined) === (inputs === undefined)) throw new InvalidArgumentError('give exactly one of "instances" (rows) or "inputs" (columns)');
  const { name, width } = model.input;
  let rowList: unknown = instances ?? inputs;
  if (inputs !== undefined && typeof inputs === 'object' && inputs !== null && !Array.isArray(inputs)) {
    const keys = Object.keys(inputs);
    if (keys.length !== 1 || keys[0] !== name) throw new InvalidArgumentError(`"inputs" names ${keys.map((k) => `"${k}"`).join(', ') || 'nothing'}; this model's one input is "${name}"`);
    rowList = (inputs as Record<string, unknown>)[name];
  }
  const what = instances !== undefined ? 'instances' : 'inputs';
  if (!Array.isArray(rowList) || rowList.length === 0) throw new InvalidArgumentError(`"${what}" must be a non-empty list of rows of ${width} values`);
  const rows = rowList.length;
  if (rows > maxRows) throw new ResourceExhaustedError(`"${what}" has ${rows} rows; this server takes at most ${maxRows} per request (its maxRows option): split the request`);
  const flat = rowList.map((row: unknown, i) => {
    let r = row;
    if (typeof r === 'object' && r !== null && !Array.isArray(r)) {
      const keys = Object.keys(r);
      if (keys.length !== 1 || keys[0] !== name) throw new InvalidArgumentError(`${what}[${i}] names ${keys.map((k) => `"${k}"`).join(', ') || 'nothing'}; this model's one input is "${name}"`);
      r = (r as Record<string, unknown>)[name];
    }
    if (!Array.isArray(r) || r.length !== width || r.some(Array.isArray)) {
      throw new InvalidArgumentError(`${what}[${i}] must be a list of ${width} values (this model's input width); got ${Array.isArray(r) ? `${r.length} values` : describe(r)}`);
    }
    return r as unknown[];
  });
  return { input: { data: fillJson(flat, rows * width, model.input, `${rows} rows of ${width}`), rows }, columnar: instances === undefined };
}

/** A TensorFlow Serving predict answer: `predictions` for the row form, `outputs` for the columnar form (as TensorFlow Serving answers). */
export function encodePredict(result: InferenceResult, columnar: boolean): object {
  const width = result.served.model.output.width;
  const rows: number[][] = [];
  for (let r = 0; r < result.rows; r++) rows.push(Array.from(result.output.subarray(r * width, (r + 1) * width)));
  return columnar ? { outputs: rows } : { predictions: rows };
}

/**
 * Flattens JSON data — a flat list, or a list of rows — into `count` values
 * of the input's type. FP32: numbers within FP32's range; INT64: integers of
 * at most 2^53 in magnitude, or decimal strings for any INT64.
 */
function fillJson(data: unknown[], count: number, input: TensorSignature, shape: string): Float32Array | BigInt64Array {
  const int64 = input.datatype === 'INT64';
  const out = int64 ? new BigInt64Array(count) : new Float32Array(count);
  let n = 0;
  const put = (v: unknown) => {
    if (n < count) {
      if (int64) (out as BigInt64Array)[n] = int64Of(v, n, input.name);
      else (out as Float32Array)[n] = fp32Of(v, n, input.name);
    }
    n++;
  };
  for (const item of data) {
    if (!Array.isArray(item)) put(item);
    else
      for (const v of item) {
        if (Array.isArray(v)) throw new InvalidArgumentError(`input "${input.name}" nests its data more than two levels deep; send a flat list or a list of rows`);
        put(v);
      }
  }
  if (n !== count) throw new InvalidArgumentError(`input "${input.name}" has ${n} values; ${shape} needs ${count}`);
  return out;
}

function fp32Of(v: unknown, i: number, name: string): number {
  if (typeof v !== 'number') throw new InvalidArgumentError(`value ${i} of input "${name}" is ${describe(v)}; FP32 values are numbers`);
  if (!Number.isFinite(Math.fround(v))) throw new InvalidArgumentError(`value ${i} of input "${name}" (${v}) is beyond FP32's range`);
  return v;
}

function int64Of(v: unknown, i: number, name: string): bigint {
  if (typeof v === 'number') {
    if (Number.isSafeInteger(v)) return BigInt(v);
    throw new InvalidArgumentError(`value ${i} of input "${name}" (${v}) is not an integer of at most 2^53 in magnitude; send larger INT64 values as decimal strings`);
  }
  if (typeof v === 'string' && DECIMAL_INTEGER.test(v)) {
    const b = BigInt(v);
    if (b >= MIN_INT64 && b <= MAX_INT64) return b;
    throw new InvalidArgumentError(`value ${i} of input "${name}" ("${v}") is outside INT64's range`);
  }
  throw new InvalidArgumentError(`value ${i} of input "${name}" is ${describe(v)}; INT64 values are integers or decimal strings`);
}

// ---- gRPC (Open Inference Protocol) ------------------------------------------

/** `InferTensorContents` as proto-loader gives it (camelCase, 64-bit integers as decimal strings). */
export interface GrpcTensorContents {
  boolContents?: unknown[];
  intContents?: unknown[];
  int64Contents?: (string | number)[];
  uintContents?: unknown[];
  uint64Contents?: unknown[];
  fp32Contents?: number[];
  fp64Contents?: unknown[];
  bytesContents?: unknown[];
}

/** `ModelInferRequest` as proto-loader gives it. */
export interface GrpcInferRequest {
  modelName: string;
  modelVersion: string;
  id: string;
  inputs: (TensorHeader & { contents?: GrpcTensorContents | null })[];
  outputs: { name: string }[];
  rawInputContents: Uint8Array[];
}

/** Each `contents` field and its name in the .proto, for messages. */
const CONTENT_FIELDS: Record<keyof GrpcTensorContents, string> = {
  boolContents: 'bool_contents',
  intContents: 'int_contents',
  int64Contents: 'int64_contents',
  uintContents: 'uint_contents',
  uint64Contents: 'uint64_contents',
  fp32Contents: 'fp32_contents',
  fp64Contents: 'fp64_contents',
  bytesContents: 'bytes_contents',
};

/**
 * A gRPC ModelInfer request's input, checked: from `raw_input_contents`
 * (little-endian; copied into aligned memory, since a received buffer may
 * start at any byte) or from `contents` (fp32_contents or int64_contents).
 */
export function decodeGrpcInfer(req: GrpcInferRequest, model: LoadedModel, maxRows: number): DecodedInput {
  checkRequestedOutputs(req.outputs, model.output);
  const tensor = singleInput<GrpcInferRequest['inputs'][number]>(req.inputs, model.input);
  const { rows, values } = checkTensorHeader(tensor, model.input, maxRows);
  const { name, datatype } = model.input;
  const int64 = datatype === 'INT64';
  const field = int64 ? 'int64Contents' : 'fp32Contents';
  const given = (Object.keys(CONTENT_FIELDS) as (keyof GrpcTensorContents)[]).filter((f) => (tensor.contents?.[f]?.length ?? 0) > 0);
  const raw = req.rawInputContents ?? [];

  if (raw.length > 0) {
    if (raw.length !== 1) throw new InvalidArgumentError(`raw_input_contents has ${raw.length} entries; this model takes one input, "${name}"`);
    if (given.length > 0) throw new InvalidArgumentError(`input "${name}" has both contents and raw_input_contents; send its values in one of them`);
    const bytes = raw[0]!;
    const size = int64 ? 8 : 4;
    if (bytes.byteLength !== values * size) {
      throw new InvalidArgumentError(`raw_input_contents[0] has ${bytes.byteLength} bytes; ${rows} × ${model.input.width} ${datatype} values need ${values * size}`);
    }
    const data = int64 ? new BigInt64Array(values) : new Float32Array(values);
    new Uint8Array(data.buffer).set(bytes);
    return { data, rows };
  }

  const other = given.find((f) => f !== field);
  if (other) throw new InvalidArgumentError(`input "${name}" is ${datatype}: send its values in ${CONTENT_FIELDS[field]} (or raw_input_contents), not in ${CONTENT_FIELDS[other]}`);
  const list = tensor.contents?.[field] ?? [];
  if (list.length !== values) {
    throw new InvalidArgumentError(`input "${name}" has ${list.length} values in ${CONTENT_FIELDS[field]}; shape [${(tensor.shape as unknown[]).join(', ')}] needs ${values}`);
  }
  if (int64) {
    const data = new BigInt64Array(values);
    // proto-loader gives int64 values as decimal strings (longs: String): exact.
    for (let i = 0; i < values; i++) data[i] = BigInt(list[i] as string | number);
    return { data, rows };
  }
  return { data: Float32Array.from(list as number[]), rows };
}

// ---- helpers ------------------------------------------------------------------

/** A value for an error message: short, JSON-like. */
function describe(v: unknown): string {
  if (v === undefined) return 'missing';
  if (typeof v === 'string') return `"${v.length > 40 ? v.slice(0, 40) + '…' : v}"`;
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'an object';
  return String(v);
}
