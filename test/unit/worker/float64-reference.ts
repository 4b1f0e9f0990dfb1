/**
 * Float64 references for the worker's models, written out loop by loop with
 * no TensorFlow.js: softmax cross-entropy of a dense network whose layers are
 * given as [W (in×out, row-major), b] pairs, ReLU between layers.
 */

export interface Layer {
  W: Float64Array;
  b: Float64Array;
  inputs: number;
  outputs: number;
}

/** Slices a flat parameter vector into layers laid out W1, b1, W2, b2, … */
export function layersOf(params: ArrayLike<number>, sizes: readonly number[]): Layer[] {
  const layers: Layer[] = [];
  let offset = 0;
  for (let l = 0; l + 1 < sizes.length; l++) {
    const inputs = sizes[l]!;
    const outputs = sizes[l + 1]!;
    const W = Float64Array.from({ length: inputs * outputs }, (_, i) => params[offset + i]!);
    offset += inputs * outputs;
    const b = Float64Array.from({ length: outputs }, (_, i) => params[offset + i]!);
    offset += outputs;
    layers.push({ W, b, inputs, outputs });
  }
  return layers;
}

function forward(layers: readonly Layer[], x: ArrayLike<number>, n: number): Float64Array[] {
  const activations: Float64Array[] = [Float64Array.from({ length: n * layers[0]!.inputs }, (_, i) => x[i]!)];
  layers.forEach((layer, l) => {
    const a = activations[l]!;
    const z = new Float64Array(n * layer.outputs);
    for (let e = 0; e < n; e++) {
      for (let o = 0; o < layer.outputs; o++) {
        let s = layer.b[o]!;
        for (let i = 0; i < layer.inputs; i++) s += a[e * layer.inputs + i]! * layer.W[i * layer.outputs + o]!;
        z[e * layer.outputs + o] = l + 1 < layers.length ? Math.max(0, s) : s;
      }
    }
    activations.push(z);
  });
  return activations;
}

/** The most likely class of each of the n examples. */
export function referencePredict(layers: readonly Layer[], x: ArrayLike<number>, n: number): number[] {
  const logits = forward(layers, x, n).at(-1)!;
  const k = layers.at(-1)!.outputs;
  return Array.from({ length: n }, (_, e) => {
    const row = logits.subarray(e * k, (e + 1) * k);
    return row.indexOf(Math.max(...row));
  });
}

/** Mean softmax cross-entropy over the n examples. */
export function referenceLoss(layers: readonly Layer[], x: ArrayLike<number>, y: ArrayLike<number>, n: number): number {
  const logits = forward(layers, x, n).at(-1)!;
  const k = layers.at(-1)!.outputs;
  let loss = 0;
  for (let e = 0; e < n; e++) {
    const row = logits.subarray(e * k, (e + 1) * k);
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    loss += lse - row[y[e]!]!;
  }
  return loss / n;
}

/** The loss's gradient by backpropagation, flat in the layers' layout. */
export function referenceGradient(layers: readonly Layer[], x: ArrayLike<number>, y: ArrayLike<number>, n: number): Float64Array {
  const acts = forward(layers, x, n);
  const k = layers.at(-1)!.outputs;
  const logits = acts.at(-1)!;
  let delta = new Float64Array(n * k);
  for (let e = 0; e < n; e++) {
    const row = logits.subarray(e * k, (e + 1) * k);
    const max = Math.max(...row);
    const sum = row.reduce((s, v) => s + Math.exp(v - max), 0);
    for (let o = 0; o < k; o++) delta[e * k + o] = (Math.exp(row[o]! - max) / sum - (o === y[e] ? 1 : 0)) / n;
  }
  const grads: Float64Array[] = [];
  for (let l = layers.length - 1; l >= 0; l--) {
    const layer = layers[l]!;
    const a = acts[l]!;
    const dW = new Float64Array(layer.inputs * layer.outputs);
    const db = new Float64Array(layer.outputs);
    for (let e = 0; e < n; e++) {
      for (let o = 0; o < layer.outputs; o++) {
        const d = delta[e * layer.outputs + o]!;
        db[o] += d;
        for (let i = 0; i < layer.inputs; i++) dW[i * layer.outputs + o] += a[e * layer.inputs + i]! * d;
      }
    }
    grads.unshift(dW, db);
    if (l > 0) {
      const prev = new Float64Array(n * layer.inputs);
      for (let e = 0; e < n; e++) {
        for (let i = 0; i < layer.inputs; i++) {
          if (a[e * layer.inputs + i]! <= 0) continue; // ReLU'(z) = 0 where the activation is 0
          let s = 0;
          for (let o = 0; o < layer.outputs; o++) s += layer.W[i * layer.outputs + o]! * delta[e * layer.outputs + o]!;
          prev[e * layer.inputs + i] = s;
        }
      }
      delta = prev;
    }
  }
  const out = new Float64Array(grads.reduce((s, g) => s + g.length, 0));
  let offset = 0;
  for (const g of grads) {
    out.set(g, offset);
    offset += g.length;
  }
  return out;
}
