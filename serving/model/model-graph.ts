import { type Activation } from '../../cluster/model-spec.js';

/**
 * A trained model as it leaves the cluster: its inference graph (a chain of
 * affine layers over features or looked-up embedding rows, as the model's
 * `InferenceSpec` describes it) with the weights filled in. Compression
 * (serving/compress/) turns one into another; each format (serving/formats/)
 * writes one out, and each runtime (serving/runtime/) runs what was written.
 */
export interface ModelGraph {
  /** The model's name (e.g. "mnist-mlp"). */
  name: string;
  input: FeaturesInput | IdsInput;
  /** Affine layers in order: y = activation(x·W + b). */
  layers: DenseLayer[];
  output: GraphOutput;
}

/** `features` float32 values per example; the request tensor is FP32 [n, features]. */
export interface FeaturesInput {
  kind: 'features';
  /** The request tensor's name. */
  name: string;
  features: number;
}

/**
 * `fields` 64-bit ids per example; the request tensor is INT64 [n, fields].
 * Each id's row is looked up in `table` (an id it lacks reads zeros) and the
 * rows are concatenated into fields × dim features.
 */
export interface IdsInput {
  kind: 'ids';
  name: string;
  fields: number;
  table: EmbeddingTable;
}

/** The rows of a sparse table the cluster held when the model was taken. */
export interface EmbeddingTable {
  /** The table's name in the model spec. */
  name: string;
  dim: number;
  /** The ids that have rows, ascending, each once. */
  ids: BigInt64Array;
  /** ids.length × dim values: row i belongs to ids[i]. */
  rows: Float32Array;
}

export interface DenseLayer {
  /** Names of the weight (and bias) tensors in the model spec. */
  weightName: string;
  biasName: string | null;
  inputs: number;
  units: number;
  /** inputs × units values, row-major (x·W). */
  weight: Float32Array;
  /** `units` values, or null for none. */
  bias: Float32Array | null;
  activation: Activation;
}

export interface GraphOutput {
  /** The response tensor's name (default "probabilities"). */
  name: string;
  /** Names of the output columns, when the model gives them. */
  labels?: string[];
}

/** How weights are stored in the written files. */
export type Quantization = 'none' | 'fp16' | 'int8';

export const QUANTIZATIONS: readonly Quantization[] = ['none', 'fp16', 'int8'];

/** Width of a request's example: features, or ids. */
export function inputWidth(g: ModelGraph): number {
  return g.input.kind === 'features' ? g.input.features : g.input.fields;
}

/** Values per example in the response. */
export function outputWidth(g: ModelGraph): number {
  return g.layers[g.layers.length - 1]!.units;
}

/** Parameters the graph holds: every weight and bias, and every embedding row's values. */
export function parameterCount(g: ModelGraph): number {
  let n = g.input.kind === 'ids' ? g.input.table.rows.length : 0;
  for (const l of g.layers) n += l.weight.length + (l.bias?.length ?? 0);
  return n;
}

/** Parameters that are not zero. */
export function nonZeroCount(g: ModelGraph): number {
  const count = (a: Float32Array) => a.reduce((n, v) => n + (v !== 0 ? 1 : 0), 0);
  let n = g.input.kind === 'ids' ? count(g.input.table.rows) : 0;
  for (const l of g.layers) n += count(l.weight) + (l.bias ? count(l.bias) : 0);
  return n;
}
