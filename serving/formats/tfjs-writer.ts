import { quantizeFp16, quantizeUint8 } from '../compress/quantize.js';
import { ExportError } from '../errors.js';
import { type ModelGraph, type Quantization, inputWidth } from '../model/model-graph.js';
import { type FormatOutput, type WrittenFile } from './format.js';

/**
 * Writes a graph as a TensorFlow.js layers model, laid out as
 * tensorflowjs_converter lays out a converted Keras Sequential model, so that
 * `tf.loadLayersModel` loads it:
 *
 * - `model.json`: `format: "layers-model"`, `modelTopology` (Keras's
 *   `{keras_version, backend, model_config: {class_name: "Sequential", config}}`),
 *   `weightsManifest` (one group, one shard) and `userDefinedMetadata.tessera`,
 *   which names the request and response tensors and, for an ids input, the
 *   vocabulary file;
 * - `group1-shard1of1.bin`: the weights, in manifest order, little-endian;
 * - `vocabulary.bin` (ids input only): the table's ids, int64 little-endian,
 *   ascending.
 *
 * An ids input becomes InputLayer → Embedding → Flatten. The Embedding has
 * one row more than the table: row 0 is zeros and stands for every id the
 * table lacks; the id at position i of the table is index i + 1 (the runtime
 * maps ids to indices by binary search in the vocabulary).
 *
 * Quantization uses the weight manifest's own form, which tfjs-core's
 * `decodeWeights` undoes at load: 'fp16' stores float16 (`{dtype: "float16"}`);
 * 'int8' stores uint8 with one affine min and scale per tensor
 * (`{dtype: "uint8", min, scale}`), since per-tensor affine 8-bit is the only
 * 8-bit form TensorFlow.js knows (no int8, no scale per channel). Kernels,
 * biases and the embedding are all quantized.
 *
 * The same graph and quantization give the same bytes.
 */
export function writeTfjs(graph: ModelGraph, quantize: Quantization): FormatOutput {
  check(graph, quantize);
  const layers: KerasLayer[] = [];
  const tensors: { name: string; specName: string; shape: number[]; values: Float32Array }[] = [];
  const width = inputWidth(graph);
  const { input } = graph;
  layers.push({
    class_name: 'InputLayer',
    config: { batch_input_shape: [null, width], dtype: input.kind === 'ids' ? 'int32' : 'float32', sparse: false, ragged: false, name: 'input_1' },
  });
  if (input.kind === 'ids') {
    const { table, fields } = input;
    const vocabulary = table.ids.length;
    layers.push({
      class_name: 'Embedding',
      config: {
        name: 'embedding',
        trainable: true,
        batch_input_shape: [null, fields],
        dtype: 'float32',
        input_dim: vocabulary + 1,
        output_dim: table.dim,
        embeddings_initializer: { class_name: 'RandomUniform', config: { minval: -0.05, maxval: 0.05, seed: null } },
        embeddings_regularizer: null,
        activity_regularizer: null,
        embeddings_constraint: null,
        mask_zero: false,
        input_length: fields,
      },
    });
    layers.push({ class_name: 'Flatten', config: { name: 'flatten', trainable: true, dtype: 'float32', data_format: 'channels_last' } });
    const embeddings = new Float32Array((vocabulary + 1) * table.dim);
    embeddings.set(table.rows, table.dim); // row 0 stays zeros: the row of unknown ids
    tensors.push({ name: 'embedding/embeddings', specName: table.name, shape: [vocabulary + 1, table.dim], values: embeddings });
  }
  graph.layers.forEach((l, i) => {
    const name = i === 0 ? 'dense' : `dense_${i}`; // Keras's default layer names
    layers.push({
      class_name: 'Dense',
      config: {
        name,
        trainable: true,
        dtype: 'float32',
        units: l.units,
        activation: l.activation, // Tessera's activations are named as Keras names them
        use_bias: l.bias !== null,
        kernel_initializer: { class_name: 'GlorotUniform', config: { seed: null } },
        bias_initializer: { class_name: 'Zeros', config: {} },
        kernel_regularizer: null,
        bias_regularizer: null,
        activity_regularizer: null,
        kernel_constraint: null,
        bias_constraint: null,
      },
    });
    tensors.push({ name: `${name}/kernel`, specName: l.weightName, shape: [l.inputs, l.units], values: l.weight });
    if (l.bias) tensors.push({ name: `${name}/bias`, specName: l.biasName ?? `${l.weightName}/bias`, shape: [l.units], values: l.bias });
  });

  const weights: ManifestWeight[] = [];
  const chunks: Uint8Array[] = [];
  const storage: Record<string, string> = {};
  for (const t of tensors) {
    const entry: ManifestWeight = { name: t.name, shape: t.shape, dtype: 'float32' };
    switch (quantize) {
      case 'none':
        chunks.push(littleEndianFloat32(t.values));
        storage[t.specName] = 'float32';
        break;
      case 'fp16':
        entry.quantization = { dtype: 'float16' };
        chunks.push(littleEndianUint16(quantizeFp16(t.values)));
        storage[t.specName] = 'float16 (TensorFlow.js weight quantization)';
        break;
      case 'int8': {
        // TensorFlow.js has no int8 weights and no scale per channel: its only
        // 8-bit form is uint8 with one affine min and scale for the whole tensor.
        const q = quantizeUint8(t.values);
        entry.quantization = { dtype: 'uint8', min: q.min, scale: q.scale };
        chunks.push(q.q);
        storage[t.specName] = 'uint8, one min and scale for the tensor (TensorFlow.js weight quantization)';
        break;
      }
    }
    weights.push(entry);
  }

  const tessera: TesseraMetadata =
    input.kind === 'ids'
      ? { input: { kind: 'ids', name: input.name, fields: input.fields, vocabulary: VOCABULARY_FILE }, output: outputMetadata(graph) }
      : { input: { kind: 'features', name: input.name }, output: outputMetadata(graph) };
  const modelJson = {
    format: 'layers-model',
    generatedBy: 'Tessera',
    convertedBy: 'Tessera',
    modelTopology: {
      keras_version: KERAS_VERSION,
      backend: 'tensorflow',
      model_config: { class_name: 'Sequential', config: { name: 'sequential', layers } },
    },
    weightsManifest: [{ paths: [WEIGHTS_FILE], weights }],
    userDefinedMetadata: { tessera },
  };
  const files: WrittenFile[] = [
    { path: MODEL_FILE, bytes: new TextEncoder().encode(JSON.stringify(modelJson)) },
    { path: WEIGHTS_FILE, bytes: concat(chunks) },
  ];
  if (input.kind === 'ids') files.push({ path: VOCABULARY_FILE, bytes: littleEndianInt64(input.table.ids) });
  return { format: 'tfjs', files, storage };
}

/** The files of a TensorFlow.js version. */
export const MODEL_FILE = 'model.json';
export const WEIGHTS_FILE = 'group1-shard1of1.bin';
export const VOCABULARY_FILE = 'vocabulary.bin';

/** The Keras version the topology's config follows (Keras 2's Sequential config, which tfjs-layers reads). */
const KERAS_VERSION = '2.15.0';

/** What `userDefinedMetadata.tessera` in model.json holds: the request and response tensors. */
export interface TesseraMetadata {
  input: { kind: 'features'; name: string } | { kind: 'ids'; name: string; fields: number; vocabulary: string };
  output: { name: string; labels?: string[] };
}

interface KerasLayer {
  class_name: string;
  config: Record<string, unknown>;
}

interface ManifestWeight {
  name: string;
  shape: number[];
  dtype: 'float32';
  quantization?: { dtype: 'float16' } | { dtype: 'uint8'; min: number; scale: number };
}

function outputMetadata(g: ModelGraph): TesseraMetadata['output'] {
  return g.output.labels ? { name: g.output.name, labels: [...g.output.labels] } : { name: g.output.name };
}

/** The graph is one tfjs can hold: a chain of layers whose shapes meet, ids ascending. */
function check(g: ModelGraph, quantize: Quantization): void {
  if (quantize !== 'none' && quantize !== 'fp16' && quantize !== 'int8') {
    throw new ExportError(`unknown quantization "${String(quantize)}" for model ${g.name}; choose none, fp16 or int8`);
  }
  if (g.layers.length === 0) throw new ExportError(`model ${g.name} has no layers; a TensorFlow.js export needs at least one dense layer`);
  let width: number;
  if (g.input.kind === 'ids') {
    const { table, fields } = g.input;
    if (!Number.isInteger(fields) || fields < 1) throw new ExportError(`model ${g.name}: an ids input needs a whole number of fields ≥ 1, got ${fields}`);
    if (table.rows.length !== table.ids.length * table.dim) {
      throw new ExportError(`model ${g.name}: table ${table.name} has ${table.ids.length} ids of dim ${table.dim}, so ${table.ids.length * table.dim} values, but holds ${table.rows.length}`);
    }
    for (let i = 1; i < table.ids.length; i++) {
      if (!(table.ids[i - 1]! < table.ids[i]!)) throw new ExportError(`model ${g.name}: table ${table.name}'s ids are not strictly ascending at position ${i}`);
    }
    if (table.ids.length + 1 > 2 ** 31 - 1) throw new ExportError(`model ${g.name}: table ${table.name} has ${table.ids.length} ids, more than a TensorFlow.js embedding can index (int32)`);
    width = fields * table.dim;
  } else {
    width = g.input.features;
  }
  for (const [i, l] of g.layers.entries()) {
    if (l.inputs !== width) throw new ExportError(`model ${g.name}: layer ${i} (${l.weightName}) takes ${l.inputs} inputs but is given ${width}`);
    if (l.weight.length !== l.inputs * l.units) throw new ExportError(`model ${g.name}: ${l.weightName} should hold ${l.inputs}×${l.units} values, holds ${l.weight.length}`);
    if (l.bias && l.bias.length !== l.units) throw new ExportError(`model ${g.name}: ${l.biasName ?? 'bias'} should hold ${l.units} values, holds ${l.bias.length}`);
    width = l.units;
  }
}

function littleEndianFloat32(values: Float32Array): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true);
  return out;
}

function littleEndianUint16(values: Uint16Array): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setUint16(i * 2, values[i]!, true);
  return out;
}

function littleEndianInt64(values: BigInt64Array): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setBigInt64(i * 8, values[i]!, true);
  return out;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
