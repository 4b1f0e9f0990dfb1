import { InvalidArgumentError } from '../../cluster/errors.js';
import { type DenseLayer, type ModelGraph } from '../model/model-graph.js';

/**
 * Pruning (docs/serving.md). Both return a new graph and leave the given one
 * unchanged.
 *
 * - {@link pruneMagnitude}: unstructured. In each layer's weight matrix, the
 *   fraction of weights smallest in magnitude is set to zero (per layer, as
 *   TensorFlow Model Optimization's `prune_low_magnitude` does with a
 *   constant sparsity). Biases and embedding rows are kept: they are a small
 *   part of a dense model, and an embedding row is one id's whole meaning.
 *   The matrices keep their shapes; the zeros are what compresses.
 * - {@link pruneUnits}: structured. In each hidden layer (every layer but the
 *   last, whose units are the outputs), the fraction of units with the
 *   smallest saliency is removed: its column of the layer's weight, its bias,
 *   and its row of the next layer's weight, so the layers themselves shrink.
 *   A unit's saliency is ‖(W[:, j], b[j])‖₂ · ‖W_next[j, :]‖₂: how strongly
 *   it can respond times how much its response moves the next layer (a unit
 *   with large incoming weights whose output is ignored matters as little as
 *   one that never fires).
 */

function checkFraction(fraction: number, flag: string): void {
  if (!(Number.isFinite(fraction) && fraction >= 0 && fraction < 1)) throw new InvalidArgumentError(`${flag} takes a fraction in [0, 1), got ${fraction}`);
}

/** The graph with the `fraction` smallest-magnitude weights of each layer set to zero (ties broken by position). */
export function pruneMagnitude(g: ModelGraph, fraction: number): ModelGraph {
  checkFraction(fraction, '--prune');
  const layers = g.layers.map((l) => {
    const k = Math.floor(fraction * l.weight.length);
    const weight = l.weight.slice();
    if (k > 0) {
      const order = Array.from({ length: weight.length }, (_, i) => i).sort((a, b) => Math.abs(weight[a]!) - Math.abs(weight[b]!) || a - b);
      for (let i = 0; i < k; i++) weight[order[i]!] = 0;
    }
    return { ...l, weight, bias: l.bias?.slice() ?? null };
  });
  return { ...g, layers };
}

/** The graph with the `fraction` least salient units of each hidden layer removed. */
export function pruneUnits(g: ModelGraph, fraction: number): ModelGraph {
  checkFraction(fraction, '--prune-units');
  const layers: DenseLayer[] = g.layers.map((l) => ({ ...l, weight: l.weight.slice(), bias: l.bias?.slice() ?? null }));
  for (let i = 0; i + 1 < layers.length; i++) {
    const layer = layers[i]!;
    const next = layers[i + 1]!;
    const drop = Math.floor(fraction * layer.units);
    if (drop === 0) continue;
    if (drop >= layer.units) throw new InvalidArgumentError(`--prune-units ${fraction} would remove every unit of layer ${i} (${layer.units} units)`);
    const saliency = Array.from({ length: layer.units }, (_, j) => {
      let incoming = layer.bias ? layer.bias[j]! ** 2 : 0;
      for (let k = 0; k < layer.inputs; k++) incoming += layer.weight[k * layer.units + j]! ** 2;
      let outgoing = 0;
      for (let u = 0; u < next.units; u++) outgoing += next.weight[j * next.units + u]! ** 2;
      return Math.sqrt(incoming) * Math.sqrt(outgoing);
    });
    const keep = Array.from({ length: layer.units }, (_, j) => j)
      .sort((a, b) => saliency[b]! - saliency[a]! || a - b)
      .slice(0, layer.units - drop)
      .sort((a, b) => a - b);
    layers[i] = keepColumns(layer, keep);
    layers[i + 1] = keepRows(next, keep);
  }
  return { ...g, layers };
}

/** `layer` with only the units (columns) in `keep`. */
function keepColumns(layer: DenseLayer, keep: number[]): DenseLayer {
  const units = keep.length;
  const weight = new Float32Array(layer.inputs * units);
  for (let k = 0; k < layer.inputs; k++) keep.forEach((j, c) => (weight[k * units + c] = layer.weight[k * layer.units + j]!));
  const bias = layer.bias ? Float32Array.from(keep, (j) => layer.bias![j]!) : null;
  return { ...layer, units, weight, bias };
}

/** `layer` with only the inputs (rows) in `keep`. */
function keepRows(layer: DenseLayer, keep: number[]): DenseLayer {
  const weight = new Float32Array(keep.length * layer.units);
  keep.forEach((j, r) => weight.set(layer.weight.subarray(j * layer.units, (j + 1) * layer.units), r * layer.units));
  return { ...layer, inputs: keep.length, weight };
}
