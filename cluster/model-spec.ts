import { fmix32 } from './hash.js';
import { type OptimizerConfig } from './optimizer-config.js';
import { InvalidArgumentError } from './errors.js';

/**
 * A model as the cluster sees it: named dense tensors, flattened and
 * concatenated in declared order into one vector of length D. Shards use the
 * spec to size and initialize their slots; workers to slice the vector back
 * into tensors.
 */

/** How a tensor's first values are drawn. */
export type InitSpec =
  | { kind: 'zeros' }
  | { kind: 'constant'; value: number }
  | { kind: 'uniform'; low: number; high: number }
  /** Glorot/Xavier uniform: U(-l, l) with l = sqrt(6 / (fanIn + fanOut)). */
  | { kind: 'glorot-uniform'; fanIn: number; fanOut: number };

export interface TensorSpec {
  name: string;
  shape: number[];
  init: InitSpec;
}

/**
 * A sparse embedding table: rows of `dim` floats keyed by 64-bit ids, created
 * by the first push that touches them with `init` (drawn per (table, id,
 * column), so any shard creates the same row, and a pull of a row not held
 * reads those values). Row (table, id) lives in slot hash(table, id) mod S.
 */
export interface SparseTableSpec {
  name: string;
  dim: number;
  init: InitSpec;
  /**
   * The table's own optimizer, when its rows want another rule than the dense
   * tensors (e.g. adagrad for embeddings, adam for the rest). Default: the
   * cluster's optimizer.
   */
  optimizer?: OptimizerConfig;
}

/** What one layer of a model's inference graph does after its affine map x·W + b. */
export type Activation = 'linear' | 'relu' | 'sigmoid' | 'tanh' | 'softmax';

/**
 * How a trained model answers a prediction (serving/, docs/serving.md): a
 * chain of affine layers over an input, all named by the model's tensors, so
 * that `tessera export` can write it out (TensorFlow.js, ONNX) from the
 * cluster's configuration alone, without the model's code.
 */
export interface InferenceSpec {
  /**
   * What a request holds per example: `features` float32 values, or `fields`
   * 64-bit ids, each looked up in the sparse table `table` (an id with no row
   * reads a row of zeros) and the rows concatenated.
   */
  input: { kind: 'features'; features: number } | { kind: 'ids'; table: string; fields: number };
  /**
   * Affine layers in order: y = activation(x·weight + bias). `weight` names a
   * tensor of shape [inputs, units]; `bias`, when given, one of shape [units].
   */
  layers: { weight: string; bias?: string; activation: Activation }[];
  /** Names the output tensor and its columns (e.g. the class labels); default `probabilities` and 0 … units − 1. */
  output?: { name?: string; labels?: string[] };
}

export interface ModelSpec {
  /** The model's registered name (e.g. "mnist-mlp"). */
  name: string;
  tensors: TensorSpec[];
  /** Sparse tables, if any. Default none. */
  sparse?: SparseTableSpec[];
  /** How the trained model predicts, when it can be exported and served. Default: it cannot be. */
  inference?: InferenceSpec;
  /** Seed of the initializers: the same seed gives the same first weights on any number of shards. */
  seed: number;
}

/** A tensor's place in the flat vector. */
export interface TensorLayout extends TensorSpec {
  offset: number;
  size: number;
}

export function tensorSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Offsets of every tensor, and D. */
export function layout(spec: ModelSpec): { tensors: TensorLayout[]; elements: number } {
  let offset = 0;
  const tensors = spec.tensors.map((t) => {
    const size = tensorSize(t.shape);
    const l = { ...t, offset, size };
    offset += size;
    return l;
  });
  return { tensors, elements: offset };
}

/** Throws a clear error for a spec no shard could hold. */
export function validateModelSpec(spec: ModelSpec): void {
  if (!spec.name) throw new InvalidArgumentError('model spec has no name');
  if (spec.tensors.length === 0) throw new InvalidArgumentError(`model ${spec.name} declares no tensors`);
  const names = new Set<string>();
  for (const t of spec.tensors) {
    if (names.has(t.name)) throw new InvalidArgumentError(`model ${spec.name} declares tensor ${t.name} twice`);
    names.add(t.name);
    if (t.shape.length === 0 || t.shape.some((d) => !Number.isInteger(d) || d < 1)) {
      throw new InvalidArgumentError(`tensor ${t.name} has an invalid shape [${t.shape.join(', ')}]`);
    }
  }
  if (spec.inference) validateInferenceSpec(spec, spec.inference);
}

const ACTIVATIONS: readonly Activation[] = ['linear', 'relu', 'sigmoid', 'tanh', 'softmax'];

/** Throws a clear error for an inference graph whose names or shapes do not chain. */
function validateInferenceSpec(spec: ModelSpec, inf: InferenceSpec): void {
  const bad = (what: string) => new InvalidArgumentError(`the inference graph of model ${spec.name} ${what}; see docs/user-models.md`);
  const tensor = (name: string) => spec.tensors.find((t) => t.name === name);
  let width: number;
  if (inf.input?.kind === 'features') {
    if (!(Number.isInteger(inf.input.features) && inf.input.features >= 1)) throw bad(`takes ${inf.input.features} features per example; give a positive integer`);
    width = inf.input.features;
  } else if (inf.input?.kind === 'ids') {
    const { table, fields } = inf.input;
    const t = (spec.sparse ?? []).find((x) => x.name === table);
    if (!t) throw bad(`looks ids up in table "${table}", which the model does not declare`);
    if (!(Number.isInteger(fields) && fields >= 1)) throw bad(`takes ${fields} ids per example; give a positive integer`);
    width = fields * t.dim;
  } else {
    throw bad('has no input of kind "features" or "ids"');
  }
  if (!Array.isArray(inf.layers) || inf.layers.length === 0) throw bad('has no layers');
  inf.layers.forEach((layer, i) => {
    const w = tensor(layer.weight);
    if (!w) throw bad(`names weight "${layer.weight}" in layer ${i}, which is not one of its tensors`);
    if (w.shape.length !== 2) throw bad(`uses ${layer.weight} of shape [${w.shape.join(', ')}] as the weight of layer ${i}; a weight is [inputs, units]`);
    if (w.shape[0] !== width) throw bad(`feeds ${width} values into layer ${i}, whose weight ${layer.weight} takes ${w.shape[0]}`);
    width = w.shape[1]!;
    if (layer.bias !== undefined) {
      const b = tensor(layer.bias);
      if (!b || b.shape.length !== 1 || b.shape[0] !== width) throw bad(`names bias "${layer.bias}" in layer ${i}, which is not a tensor of shape [${width}]`);
    }
    if (!ACTIVATIONS.includes(layer.activation)) throw bad(`gives layer ${i} activation "${layer.activation}"; known: ${ACTIVATIONS.join(', ')}`);
  });
  const labels = inf.output?.labels;
  if (labels !== undefined && labels.length !== width) throw bad(`names ${labels.length} output labels for ${width} outputs`);
}


/** Uniform in [0, 1) for element `i` of tensor `t` under `seed`. */
export function uniformAt(seed: number, t: number, i: number): number {
  const hi = Math.floor(i / 0x100000000);
  const h = fmix32(fmix32(fmix32(seed ^ Math.imul(t + 1, 0x9e3779b9)) ^ (i >>> 0)) ^ hi);
  return h / 0x100000000;
}

/**
 * Writes the initial values of global elements [start, start + out.length) into
 * `out`. Deterministic per element, whatever the slicing.
 */
export function initialValues(spec: ModelSpec, start: number, out: Float32Array): void {
  const { tensors } = layout(spec);
  const end = start + out.length;
  for (let ti = 0; ti < tensors.length; ti++) {
    const t = tensors[ti]!;
    const a = Math.max(start, t.offset);
    const b = Math.min(end, t.offset + t.size);
    if (a >= b) continue;
    const init = t.init;
    for (let g = a; g < b; g++) {
      const i = g - t.offset;
      let v: number;
      switch (init.kind) {
        case 'zeros':
          v = 0;
          break;
        case 'constant':
          v = init.value;
          break;
        case 'uniform':
          v = init.low + (init.high - init.low) * uniformAt(spec.seed, ti, i);
          break;
        case 'glorot-uniform': {
          const limit = Math.sqrt(6 / (init.fanIn + init.fanOut));
          v = limit * (2 * uniformAt(spec.seed, ti, i) - 1);
          break;
        }
      }
      out[g - start] = v;
    }
  }
}
