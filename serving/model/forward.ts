import { InvalidArgumentError } from '../../cluster/errors.js';
import { type ModelGraph, inputWidth, outputWidth } from './model-graph.js';

/**
 * The graph's forward pass in plain JavaScript, in float64 with float32
 * weights: the reference the formats and runtimes are checked against, and
 * what an export measures its uncompressed model with when no runtime is
 * needed. Not fast; exact enough to show a runtime's float32 rounding.
 */
export function forward(g: ModelGraph, input: Float32Array | BigInt64Array, rows: number): Float64Array {
  const width = inputWidth(g);
  if (input.length !== rows * width) throw new InvalidArgumentError(`${rows} examples of ${width} values need ${rows * width} values, got ${input.length}`);
  let x: Float64Array;
  let cols: number;
  if (g.input.kind === 'features') {
    if (!(input instanceof Float32Array)) throw new InvalidArgumentError(`model ${g.name} takes float32 features`);
    x = Float64Array.from(input);
    cols = width;
  } else {
    if (!(input instanceof BigInt64Array)) throw new InvalidArgumentError(`model ${g.name} takes int64 ids`);
    const { table, fields } = g.input;
    cols = fields * table.dim;
    x = new Float64Array(rows * cols);
    for (let i = 0; i < rows * fields; i++) {
      const at = lookup(table.ids, input[i]!);
      if (at < 0) continue; // an id with no row reads zeros
      for (let d = 0; d < table.dim; d++) x[i * table.dim + d] = table.rows[at * table.dim + d]!;
    }
  }
  for (const l of g.layers) {
    const y = new Float64Array(rows * l.units);
    for (let r = 0; r < rows; r++) {
      for (let u = 0; u < l.units; u++) {
        let s = l.bias ? l.bias[u]! : 0;
        for (let k = 0; k < l.inputs; k++) s += x[r * cols + k]! * l.weight[k * l.units + u]!;
        y[r * l.units + u] = s;
      }
      activate(y.subarray(r * l.units, (r + 1) * l.units), l.activation);
    }
    x = y;
    cols = l.units;
  }
  if (cols !== outputWidth(g)) throw new Error('unreachable: output width');
  return x;
}

function activate(v: Float64Array, activation: ModelGraph['layers'][number]['activation']): void {
  switch (activation) {
    case 'linear':
      return;
    case 'relu':
      for (let i = 0; i < v.length; i++) v[i] = Math.max(0, v[i]!);
      return;
    case 'sigmoid':
      for (let i = 0; i < v.length; i++) v[i] = 1 / (1 + Math.exp(-v[i]!));
      return;
    case 'tanh':
      for (let i = 0; i < v.length; i++) v[i] = Math.tanh(v[i]!);
      return;
    case 'softmax': {
      const max = Math.max(...v);
      let sum = 0;
      for (let i = 0; i < v.length; i++) sum += v[i] = Math.exp(v[i]! - max);
      for (let i = 0; i < v.length; i++) v[i] = v[i]! / sum;
    }
  }
}

/** Index of `id` in the ascending `ids`, or −1. */
export function lookup(ids: BigInt64Array, id: bigint): number {
  let lo = 0;
  let hi = ids.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = ids[mid]!;
    if (v === id) return mid;
    if (v < id) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
