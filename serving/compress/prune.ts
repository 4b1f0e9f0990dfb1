import { InvalidArgumentError } from '../../cluster/errors.js';
import { type DenseLayer, type ModelGraph } from '../model/model-graph.js';

/**
 * Pruning (docs/serving.md). Both return a new graph and leave the given one
 * unchanged.
 *
 * - {@link pruneMagnitude}: unstructured. Of all the layers' weights taken
 *   together, the fraction smallest in magnitude is set to zero: one
 *   threshold for the whole model (global magnitude pruning), so a layer
 *   with many weights that matter little (the pixels at MNIST's border)
 *   gives up more of them than a small output layer where each one counts.
 *   Measured on mnist-mlp, pruning half of each layer separately cost about
 *   a point of held-out accuracy with int8 on top; one global threshold
 *   costs a fraction of that (docs/serving.md). Biases and embedding rows
 *   are kept: they are a small part of a dense model, and an embedding row
 *   is one id's whole meaning. The matrices keep their shapes; the zeros are
 *   what compresses.
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

/** The graph with the `fraction` smallest-magnitude weights of all its layers set to zero (one threshold; ties broken by position). */
export function pruneMagnitude(g: ModelGraph, fraction: number): ModelGraph {
  checkFraction(fraction, '--prune');
  const layers = g.layers.map((l) => ({ ...l, weight: l.weight.slice(), bias: l.bias?.slice() ?? null }));
  const total = layers.reduce((n, l) => n + l.weight.length, 0);
  const k = Math.floor(fraction * total);
  if (k > 0) {
    const magnitudes = new Float32Array(total);
    let at = 0;
    for (const l of layers) for (const w of l.weight) magnitudes[at++] = Math.abs(w);
    const order = new Uint32Array(total).map((_, i) => i).sort((a, b) => magnitudes[a]! - magnitudes[b]! || a - b);
    const starts = layers.map((_, i) => layers.slice(0, i).reduce((n, l) => n + l.weight.length, 0));
    for (let i = 0; i < k; i++) {
      const flat = order[i]!;
      let li = starts.length - 1;
      while (starts[li]! > flat) li--;
      layers[li]!.weight[flat - starts[li]!] = 0;
    }
  }
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

/** Both prunings as `tessera export` applies them: units first (the layers shrink), then magnitude over what is left. */
export function prune(g: ModelGraph, o: { prune?: number; pruneUnits?: number }): ModelGraph {
  let out = g;
  if (o.pruneUnits) out = pruneUnits(out, o.pruneUnits);
  if (o.prune) out = pruneMagnitude(out, o.prune);
  return out;
}
