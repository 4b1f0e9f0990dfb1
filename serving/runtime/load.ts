import { ModelLoadError } from '../errors.js';
import { loadOnnx } from './onnx-runtime.js';
import { type LoadedModel, type ModelFormat } from './runtime.js';
import { loadTfjs } from './tfjs-runtime.js';

/** Where each format's files lie in a version directory: ONNX at its top (as Triton looks for it), TensorFlow.js under `tfjs/`. */
export const FORMAT_ENTRY: Readonly<Record<ModelFormat, string>> = { onnx: 'model.onnx', tfjs: 'tfjs/model.json' };

/** The folder of a format's files in a version directory ("" for its top). */
export function formatPrefix(format: ModelFormat): string {
  return format === 'tfjs' ? 'tfjs/' : '';
}

/**
 * Loads the `format` model of a version whose files `read` gives by path
 * relative to the version directory.
 * @throws ModelLoadError when the files are missing or cannot be loaded.
 */
export async function loadFormat(format: ModelFormat, read: (path: string) => Promise<Uint8Array>): Promise<LoadedModel> {
  switch (format) {
    case 'onnx':
      return loadOnnx(await read(FORMAT_ENTRY.onnx));
    case 'tfjs':
      return loadTfjs((path) => read(formatPrefix('tfjs') + path));
    default:
      throw new ModelLoadError(`unknown model format "${String(format)}"; known: onnx, tfjs`);
  }
}

/** Examples per run when a whole dataset goes through a model. */
export const EVAL_ROWS = 1_000;

/** Runs all `rows` examples of `input` through `model`, {@link EVAL_ROWS} at a time. */
export async function runAll(model: LoadedModel, input: Float32Array | BigInt64Array, rows: number): Promise<Float32Array> {
  const w = model.input.width;
  const out = new Float32Array(rows * model.output.width);
  for (let begin = 0; begin < rows; begin += EVAL_ROWS) {
    const n = Math.min(EVAL_ROWS, rows - begin);
    out.set(await model.run(input.subarray(begin * w, (begin + n) * w), n), begin * model.output.width);
  }
  return out;
}
