import { readFile as readFromDisk } from 'node:fs/promises';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
// Registers the cpu backend, so that there is one; whichever backend is active when a model loads is the one it runs on.
import '@tensorflow/tfjs-backend-cpu';
import { type LayersModel, loadLayersModel } from '@tensorflow/tfjs-layers';
import { InvalidArgumentError } from '../../cluster/errors.js';
import { ModelLoadError } from '../errors.js';
import { type WrittenFile } from '../formats/format.js';
import { lookup } from '../model/forward.js';
import { type LoadedModel, type TensorSignature } from './runtime.js';

/** The file every TensorFlow.js layers model starts from (see serving/formats/tfjs-writer.ts). */
const MODEL_FILE = 'model.json';

/**
 * Loads a TensorFlow.js layers model written by `writeTfjs` with
 * `tf.loadLayersModel`, through an IO handler that reads the version's files
 * with `readFile` (paths relative to the version's directory). It runs on
 * whichever tfjs backend is active.
 *
 * model.json's `userDefinedMetadata.tessera` names the request and response
 * tensors; for an ids input it names the vocabulary file (int64 ids,
 * little-endian, ascending): an id at position i of the vocabulary is
 * embedding index i + 1, an id not in it index 0 (the row of zeros).
 *
 * @throws ModelLoadError when a file is missing or damaged, model.json is not
 *   a layers model, or it lacks Tessera's metadata.
 */
export async function loadTfjs(readFile: (path: string) => Promise<Uint8Array>): Promise<LoadedModel> {
  await tf.ready();
  const json = parseModelJson(await read(readFile, MODEL_FILE, 'the model'));
  const meta = parseMetadata(json.userDefinedMetadata);
  const handler: tf.io.IOHandler = {
    load: async () => {
      const weightSpecs = json.weightsManifest.flatMap((group) => group.weights);
      const shards: Uint8Array[] = [];
      for (const group of json.weightsManifest) {
        for (const p of group.paths) shards.push(await read(readFile, p, `weights listed in ${MODEL_FILE}'s weightsManifest`));
      }
      const weightData = concat(shards);
      const expected = weightSpecs.reduce((n, s) => n + byteLength(s), 0);
      if (weightData.byteLength !== expected) {
        const files = json.weightsManifest.flatMap((g) => g.paths).join(', ');
        throw new ModelLoadError(`${MODEL_FILE}'s weightsManifest describes ${expected} bytes of weights, but ${files} hold ${weightData.byteLength}: the weights do not belong to this model.json or are damaged`);
      }
      const artifacts: tf.io.ModelArtifacts = {
        modelTopology: json.modelTopology,
        format: json.format,
        weightSpecs,
        weightData: weightData.buffer as ArrayBuffer,
        userDefinedMetadata: json.userDefinedMetadata as { [key: string]: {} },
      };
      if (json.generatedBy !== undefined) artifacts.generatedBy = json.generatedBy;
      if (json.convertedBy !== undefined) artifacts.convertedBy = json.convertedBy;
      return artifacts;
    },
  };
  let model: LayersModel;
  try {
    model = await loadLayersModel(handler);
  } catch (e) {
    if (e instanceof ModelLoadError) throw e;
    throw new ModelLoadError(`TensorFlow.js cannot build the layers model of ${MODEL_FILE} from its modelTopology and weights: ${message(e)}`);
  }
  try {
    return await prepare(model, meta, readFile);
  } catch (e) {
    model.dispose();
    throw e;
  }
}

/** Reads the files of a version held in memory (what a format wrote). */
export function memoryReader(files: WrittenFile[]): (path: string) => Promise<Uint8Array> {
  const byPath = new Map(files.map((f) => [path.posix.normalize(f.path), f.bytes]));
  return async (p) => {
    const bytes = byPath.get(path.posix.normalize(p));
    if (bytes === undefined) throw new ModelLoadError(`no file ${p} among the version's files (${[...byPath.keys()].join(', ') || 'none'})`);
    return bytes;
  };
}

/** Reads the files of a version from its directory; a path that leads out of the directory is refused. */
export function directoryReader(dir: string): (path: string) => Promise<Uint8Array> {
  const root = path.resolve(dir);
  return async (p) => {
    const full = path.resolve(root, p);
    const rel = path.relative(root, full);
    if (path.isAbsolute(p) || rel === '' || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
      throw new ModelLoadError(`${p} is not a file inside the model's directory; a version's files are named relative to it`);
    }
    const buf = await readFromDisk(full);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  };
}

interface ModelJson {
  format: string;
  generatedBy?: string;
  convertedBy?: string;
  modelTopology: object;
  weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  userDefinedMetadata?: unknown;
}

interface Metadata {
  input: { kind: 'features'; name: string } | { kind: 'ids'; name: string; fields: number; vocabulary: string };
  output: { name: string };
}

async function read(readFile: (path: string) => Promise<Uint8Array>, p: string, what: string): Promise<Uint8Array> {
  try {
    return await readFile(p);
  } catch (e) {
    throw new ModelLoadError(`cannot read ${p} (${what}): ${message(e)}`);
  }
}

function parseModelJson(bytes: Uint8Array): ModelJson {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new ModelLoadError(`${MODEL_FILE} is not JSON (${message(e)}); expected a TensorFlow.js layers model's model.json`);
  }
  if (!isObject(json)) throw new ModelLoadError(`${MODEL_FILE} is not a JSON object; expected a TensorFlow.js layers model's model.json`);
  if (json.format !== 'layers-model') {
    throw new ModelLoadError(`${MODEL_FILE} has format ${JSON.stringify(json.format) ?? 'absent'}; expected "layers-model" (a TensorFlow.js layers model, not a graph model)`);
  }
  if (!isObject(json.modelTopology)) throw new ModelLoadError(`${MODEL_FILE} has no modelTopology object; expected a Keras model config`);
  const manifest = json.weightsManifest;
  if (!Array.isArray(manifest) || manifest.length === 0) throw new ModelLoadError(`${MODEL_FILE} has no weightsManifest; expected a list of weight groups with their paths and weights`);
  for (const [i, group] of manifest.entries()) {
    if (!isObject(group) || !Array.isArray(group.paths) || !group.paths.every((p) => typeof p === 'string') || !Array.isArray(group.weights)) {
      throw new ModelLoadError(`${MODEL_FILE}'s weightsManifest[${i}] is not a weight group; expected {paths: string[], weights: [...]}`);
    }
    for (const [j, w] of group.weights.entries()) {
      const ok =
        isObject(w) &&
        typeof w.name === 'string' &&
        typeof w.dtype === 'string' &&
        Array.isArray(w.shape) &&
        w.shape.every((d) => Number.isInteger(d) && (d as number) >= 0) &&
        (w.quantization === undefined || isObject(w.quantization));
      if (!ok) throw new ModelLoadError(`${MODEL_FILE}'s weightsManifest[${i}].weights[${j}] is not a weight entry; expected {name, shape, dtype, quantization?}`);
      byteLength(w as unknown as tf.io.WeightsManifestEntry); // throws on a dtype it cannot size
    }
  }
  for (const key of ['generatedBy', 'convertedBy'] as const) {
    if (json[key] !== undefined && json[key] !== null && typeof json[key] !== 'string') throw new ModelLoadError(`${MODEL_FILE}'s ${key} is not a string`);
  }
  return json as unknown as ModelJson;
}

function parseMetadata(meta: unknown): Metadata {
  const expected = `expected userDefinedMetadata {"tessera": {"input": {"kind": "features"|"ids", "name", …}, "output": {"name"}}} as Tessera writes it`;
  if (!isObject(meta) || !isObject(meta.tessera)) throw new ModelLoadError(`${MODEL_FILE} has no Tessera metadata; ${expected}`);
  const { input, output } = meta.tessera;
  if (!isObject(input) || typeof input.name !== 'string' || input.name === '') throw new ModelLoadError(`${MODEL_FILE}'s Tessera metadata names no input tensor; ${expected}`);
  if (!isObject(output) || typeof output.name !== 'string' || output.name === '') throw new ModelLoadError(`${MODEL_FILE}'s Tessera metadata names no output tensor; ${expected}`);
  if (input.kind === 'features') return { input: { kind: 'features', name: input.name }, output: { name: output.name } };
  if (input.kind === 'ids') {
    if (typeof input.fields !== 'number' || !Number.isInteger(input.fields) || input.fields < 1) {
      throw new ModelLoadError(`${MODEL_FILE}'s Tessera metadata gives an ids input without a whole number of fields ≥ 1`);
    }
    if (typeof input.vocabulary !== 'string' || input.vocabulary === '') throw new ModelLoadError(`${MODEL_FILE}'s Tessera metadata gives an ids input without its vocabulary file`);
    return { input: { kind: 'ids', name: input.name, fields: input.fields, vocabulary: input.vocabulary }, output: { name: output.name } };
  }
  throw new ModelLoadError(`${MODEL_FILE}'s Tessera metadata has input kind ${JSON.stringify(input.kind) ?? 'absent'}; expected "features" or "ids"`);
}

/** Checks the loaded model against the metadata, reads the vocabulary, and wraps it. */
async function prepare(model: LayersModel, meta: Metadata, readFile: (path: string) => Promise<Uint8Array>): Promise<LoadedModel> {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new ModelLoadError(`${MODEL_FILE} describes a model of ${model.inputs.length} inputs and ${model.outputs.length} outputs; expected one of each`);
  }
  const inShape = model.inputs[0]!.shape;
  const outShape = model.outputs[0]!.shape;
  if (inShape.length !== 2 || typeof inShape[1] !== 'number' || outShape.length !== 2 || typeof outShape[1] !== 'number') {
    throw new ModelLoadError(`${MODEL_FILE} describes a model from [${inShape.join(', ')}] to [${outShape.join(', ')}]; expected [null, width] to [null, width]`);
  }
  const width = inShape[1];
  const output: TensorSignature = { name: meta.output.name, datatype: 'FP32', width: outShape[1] };
  let vocabulary: BigInt64Array | null = null;
  if (meta.input.kind === 'ids') {
    if (meta.input.fields !== width) throw new ModelLoadError(`${MODEL_FILE}'s Tessera metadata gives ${meta.input.fields} id fields but the model's input takes ${width}`);
    const embedding = model.layers.find((l) => l.getClassName() === 'Embedding');
    if (!embedding) throw new ModelLoadError(`${MODEL_FILE} says the input is ids but its model has no Embedding layer`);
    const rows = (embedding.getConfig() as { inputDim?: number }).inputDim ?? 0;
    vocabulary = parseVocabulary(await read(readFile, meta.input.vocabulary, `the vocabulary named in ${MODEL_FILE}`), meta.input.vocabulary, rows);
  }
  const input: TensorSignature = { name: meta.input.name, datatype: vocabulary ? 'INT64' : 'FP32', width };
  let closed = false;
  return {
    format: 'tfjs',
    input,
    output,
    async run(values: Float32Array | BigInt64Array, rows: number): Promise<Float32Array> {
      if (closed) throw new Error('the model was closed; load it again to run it');
      if (!Number.isInteger(rows) || rows < 0) throw new InvalidArgumentError(`the number of examples must be a whole number ≥ 0, got ${rows}`);
      const want = vocabulary ? BigInt64Array : Float32Array;
      if (!(values instanceof want)) {
        throw new InvalidArgumentError(`input ${input.name} takes ${input.datatype} values (${want.name}), given ${typeName(values)}`);
      }
      if (values.length !== rows * width) {
        throw new InvalidArgumentError(`input ${input.name}: ${rows} examples of ${width} values need ${rows * width} values, given ${values.length}`);
      }
      if (rows === 0) return new Float32Array(0);
      const x = vocabulary ? tf.tensor2d(indices(vocabulary, values as BigInt64Array), [rows, width], 'int32') : tf.tensor2d(values as Float32Array, [rows, width], 'float32');
      let y: tf.Tensor | null = null;
      try {
        y = tf.tidy(() => {
          const out = model.predict(x, { batchSize: rows });
          if (Array.isArray(out)) throw new Error('unreachable: a model of one output gave several');
          return out;
        });
        return new Float32Array(await y.data());
      } finally {
        x.dispose();
        y?.dispose();
      }
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      model.dispose();
    },
  };
}

/** The vocabulary file: `rows − 1` int64 ids, little-endian, strictly ascending. */
function parseVocabulary(bytes: Uint8Array, file: string, rows: number): BigInt64Array {
  if (bytes.byteLength % 8 !== 0) throw new ModelLoadError(`${file} holds ${bytes.byteLength} bytes, not a whole number of int64 ids`);
  const n = bytes.byteLength / 8;
  if (n + 1 !== rows) throw new ModelLoadError(`${file} holds ${n} ids but the model's embedding has ${rows} rows; expected ${rows - 1} ids (row 0 is for unknown ids)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const ids = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    ids[i] = view.getBigInt64(i * 8, true);
    if (i > 0 && !(ids[i - 1]! < ids[i]!)) throw new ModelLoadError(`${file}'s ids are not strictly ascending at position ${i}`);
  }
  return ids;
}

/** Embedding indices of ids: position in the vocabulary + 1, or 0 for an id it lacks. */
function indices(vocabulary: BigInt64Array, ids: BigInt64Array): Int32Array {
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) out[i] = lookup(vocabulary, ids[i]!) + 1;
  return out;
}

const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };

/** Bytes a manifest entry takes in the weights (as tfjs-core's decodeWeights reads them). */
function byteLength(spec: tf.io.WeightsManifestEntry): number {
  const stored = spec.quantization ? spec.quantization.dtype : spec.dtype;
  const bytes = BYTES[stored];
  if (bytes === undefined) throw new ModelLoadError(`${MODEL_FILE}'s weight ${spec.name} is stored as ${String(stored)}; expected float32, int32, bool, or a quantization of uint8, uint16 or float16`);
  return spec.shape.reduce((n, d) => n * d, 1) * bytes;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  return isObject(v) || ArrayBuffer.isView(v) ? (v as object).constructor.name : typeof v;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
