/**
 * A model loaded for inference from the files of one exported version:
 * what the serving layer (serving/serve/) and the exporter's evaluation call.
 * One implementation per format (onnx-runtime.ts, tfjs-runtime.ts).
 */
export interface LoadedModel {
  /** "onnx" or "tfjs": the files it was loaded from. */
  readonly format: ModelFormat;
  /** The request tensor: FP32 [n, width] features, or INT64 [n, width] ids. */
  readonly input: TensorSignature;
  /** The response tensor: FP32 [n, width]. */
  readonly output: TensorSignature;
  /**
   * Runs `rows` examples, row-major in `input` (rows × input.width values:
   * Float32Array for FP32, BigInt64Array for INT64), and resolves to rows ×
   * output.width values. Each example's result depends on that example only.
   * @throws InvalidArgumentError when `input` is not rows × input.width values of the input's type.
   */
  run(input: Float32Array | BigInt64Array, rows: number): Promise<Float32Array>;
  /** Frees what the runtime holds; no `run` may follow. */
  close(): Promise<void>;
}

export type ModelFormat = 'onnx' | 'tfjs';

export const MODEL_FORMATS: readonly ModelFormat[] = ['onnx', 'tfjs'];

export interface TensorSignature {
  name: string;
  datatype: 'FP32' | 'INT64';
  /** Values per example. */
  width: number;
}
