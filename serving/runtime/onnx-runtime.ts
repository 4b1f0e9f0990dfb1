import * as ort from 'onnxruntime-node';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { ModelLoadError } from '../errors.js';
import { DataType, type ModelProto, type ValueInfoProto, decodeModel } from '../formats/onnx-proto.js';
import { type LoadedModel, type TensorSignature } from './runtime.js';

export interface OnnxLoadOptions {
  /**
   * Threads onnxruntime may use inside one operator (default 1). Serving runs
   * several requests at once and batches them, so the host's cores are
   * already shared between requests; one thread per session keeps each
   * request's latency predictable on small hosts instead of having sessions
   * fight over the same cores. Raise it for a model with large layers on a
   * host with idle cores.
   */
  intraOpThreads?: number;
}

/**
 * Loads an ONNX model (such as onnx-writer.ts writes) into an onnxruntime
 * session on the CPU. Its request and response tensors are read from the
 * model itself: one input, FLOAT or INT64 [batch, width], and one output,
 * FLOAT [batch, width].
 * @throws ModelLoadError when the bytes are not an ONNX model, its input or output is not of that form, or onnxruntime cannot load it.
 */
export async function loadOnnx(bytes: Uint8Array, options: OnnxLoadOptions = {}): Promise<LoadedModel> {
  const threads = options.intraOpThreads ?? 1;
  if (!Number.isInteger(threads) || threads < 1) throw new InvalidArgumentError(`intraOpThreads must be a positive integer, got ${threads}`);
  const { input, output } = signature(bytes);

  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, {
      executionProviders: ['cpu'],
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3, // errors only: the warnings (e.g. unused initializers removed) are not the caller's to act on
      // Without this, onnxruntime (1.30) keeps int8 weights as DequantizeLinear run on every request, or turns
      // DequantizeLinear + MatMul into its MatMulNBits kernel, whose float32 sums differ (by an ulp or so) between
      // a row run alone and the same row in a batch. With it, the weights' DequantizeLinear is folded into float32
      // constants once, at load: int8 models compute exactly as float32 ones over the dequantized weights
      // (quantize.ts's dequantizeInt8), as fast, and a row's result is the same whatever batch it is in. The cost
      // is memory: the weights are held as float32 (the file stays int8). Embedding rows are dequantized per
      // request (only the rows gathered), as they are not constants.
      extra: { session: { disable_quant_qdq: '1' } },
    });
  } catch (e) {
    throw new ModelLoadError(`onnxruntime could not load the model: ${(e as Error).message}`, { cause: e });
  }
  return new OnnxModel(session, input, output);
}

class OnnxModel implements LoadedModel {
  readonly format = 'onnx' as const;
  private readonly inFlight = new Set<Promise<unknown>>();
  private closed = false;

  constructor(
    private readonly session: ort.InferenceSession,
    readonly input: TensorSignature,
    readonly output: TensorSignature,
  ) {}

  async run(input: Float32Array | BigInt64Array, rows: number): Promise<Float32Array> {
    if (this.closed) throw new Error(`the ONNX model was closed; load it again to run it`);
    const { name, datatype, width } = this.input;
    if (!Number.isSafeInteger(rows) || rows < 0) throw new InvalidArgumentError(`rows must be a non-negative integer, got ${rows}`);
    const fp32 = datatype === 'FP32';
    if (fp32 ? !(input instanceof Float32Array) : !(input instanceof BigInt64Array)) {
      throw new InvalidArgumentError(`input ${name} takes ${datatype} values (a ${fp32 ? 'Float32Array' : 'BigInt64Array'}), got a ${input?.constructor?.name ?? typeof input}`);
    }
    if (input.length !== rows * width) throw new InvalidArgumentError(`input ${name}: ${rows} examples of ${width} values need ${rows * width} values, got ${input.length}`);
    if (rows === 0) return new Float32Array(0);

    const feeds = { [name]: new ort.Tensor(fp32 ? 'float32' : 'int64', input, [rows, width]) };
    const running = this.session.run(feeds, [this.output.name]);
    this.inFlight.add(running);
    let results: ort.InferenceSession.ReturnType;
    try {
      results = await running;
    } finally {
      this.inFlight.delete(running);
    }
    const data = results[this.output.name]?.data;
    const want = rows * this.output.width;
    if (!(data instanceof Float32Array) || data.length !== want) {
      throw new Error(`onnxruntime gave ${data instanceof Float32Array ? `${data.length} float32 values` : 'no float32 values'} for output ${this.output.name}, expected ${want}`);
    }
    return data;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A run in progress still uses the session: release it once they are done.
    await Promise.allSettled([...this.inFlight]);
    await this.session.release();
  }
}

const DATATYPES: Record<number, TensorSignature['datatype']> = { [DataType.FLOAT]: 'FP32', [DataType.INT64]: 'INT64' };
const TYPE_NAMES: Record<number, string> = { 1: 'FLOAT', 2: 'UINT8', 3: 'INT8', 6: 'INT32', 7: 'INT64', 8: 'STRING', 9: 'BOOL', 10: 'FLOAT16', 11: 'DOUBLE', 16: 'BFLOAT16' };

/** The model's request and response tensors, from the file itself. */
function signature(bytes: Uint8Array): { input: TensorSignature; output: TensorSignature } {
  let model: ModelProto;
  try {
    model = decodeModel(bytes);
  } catch (e) {
    throw new ModelLoadError(`not an ONNX model (expected a protobuf ModelProto): ${(e as Error).message}`, { cause: e });
  }
  const graph = model.graph;
  if (model.irVersion === undefined || !graph) throw new ModelLoadError('not an ONNX model: expected a ModelProto with an IR version and a graph');
  const stored = new Set((graph.initializer ?? []).map((t) => t.name));
  // Before IR version 4, initializers were listed among the inputs too.
  const inputs = (graph.input ?? []).filter((i) => !stored.has(i.name));
  const outputs = graph.output ?? [];
  if (inputs.length !== 1) throw new ModelLoadError(`expected an ONNX model with one input tensor, found ${inputs.length}${inputs.length ? ` (${inputs.map((i) => i.name).join(', ')})` : ''}`);
  if (outputs.length !== 1) throw new ModelLoadError(`expected an ONNX model with one output tensor, found ${outputs.length}${outputs.length ? ` (${outputs.map((o) => o.name).join(', ')})` : ''}`);
  const input = tensorSignature(inputs[0]!, 'input', ['FP32', 'INT64']);
  const output = tensorSignature(outputs[0]!, 'output', ['FP32']);
  return { input, output };
}

function tensorSignature(v: ValueInfoProto, what: 'input' | 'output', allowed: TensorSignature['datatype'][]): TensorSignature {
  const expected = `expected the model's ${what} to be ${allowed.map((d) => (d === 'FP32' ? 'FLOAT' : 'INT64')).join(' or ')} [batch, width]`;
  const t = v.type?.tensorType;
  if (!v.name || !t) throw new ModelLoadError(`${expected}, but ${v.name ? `"${v.name}"` : 'it'} is not a named tensor`);
  const datatype = DATATYPES[t.elemType ?? 0];
  if (!datatype || !allowed.includes(datatype)) throw new ModelLoadError(`${expected}, but "${v.name}" holds ${TYPE_NAMES[t.elemType ?? 0] ?? `element type ${t.elemType ?? 'unknown'}`}`);
  const dims = t.shape?.dim;
  const shape = () => `[${(dims ?? []).map((d) => d.dimParam || (d.dimValue !== undefined ? String(d.dimValue) : '?')).join(', ')}]`;
  if (!dims || dims.length !== 2) throw new ModelLoadError(`${expected}, but "${v.name}" has shape ${dims ? shape() : 'unknown'}`);
  const [batch, width] = dims as [NonNullable<typeof dims>[number], NonNullable<typeof dims>[number]];
  if (batch.dimValue !== undefined) throw new ModelLoadError(`${expected} with a symbolic batch size, but "${v.name}" has shape ${shape()}`);
  if (width.dimValue === undefined || width.dimValue < 1n || width.dimValue > BigInt(Number.MAX_SAFE_INTEGER)) throw new ModelLoadError(`${expected} with a fixed width, but "${v.name}" has shape ${shape()}`);
  return { name: v.name, datatype, width: Number(width.dimValue) };
}
