/**
 * Weight quantization, as the export formats store it (docs/serving.md):
 * float16; int8, symmetric, with a scale per output channel (a weight's
 * column, an embedding's row); uint8 affine with one min and scale per tensor,
 * which is the only 8-bit form TensorFlow.js's weight manifest knows.
 * Each function also gives the values a runtime will read back, so the error
 * a choice costs can be measured before any file is written.
 */

// One float16 conversion for the whole project: the wire codecs' (cluster/wire/half.ts).
export { fromHalf, toHalf } from '../../cluster/wire/half.js';
import { fromHalf, toHalf } from '../../cluster/wire/half.js';

/** `values` as float16 bits. */
export function quantizeFp16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = toHalf(values[i]!);
  return out;
}

/** What float16 bits read back as. */
export function dequantizeFp16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = fromHalf(bits[i]!);
  return out;
}

/** int8 values with one scale per channel: value ≈ q · scale[channel]. */
export interface Int8PerChannel {
  q: Int8Array;
  /** One per channel; 1 for a channel of zeros (so it dequantizes to zeros). */
  scales: Float32Array;
  /** Which axis of the [rows, cols] matrix the channels run along: 1 for columns, 0 for rows. */
  axis: 0 | 1;
}

/**
 * Symmetric int8 quantization of a row-major [rows, cols] matrix with a
 * scale per channel — a column (axis 1: a dense layer's output unit) or a row
 * (axis 0: an embedding row): scale = max |v| / 127 over the channel, q =
 * round(v / scale) in −127 … 127 (−128 unused, so the grid is symmetric and
 * zero stays exactly zero: pruned weights stay pruned).
 */
export function quantizeInt8(values: Float32Array, rows: number, cols: number, axis: 0 | 1): Int8PerChannel {
  if (values.length !== rows * cols) throw new RangeError(`a ${rows}×${cols} matrix has ${rows * cols} values, got ${values.length}`);
  const channels = axis === 1 ? cols : rows;
  const max = new Float32Array(channels);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const a = Math.abs(values[r * cols + c]!);
      const ch = axis === 1 ? c : r;
      if (a > max[ch]!) max[ch] = a;
    }
  }
  const scales = new Float32Array(channels);
  for (let ch = 0; ch < channels; ch++) scales[ch] = max[ch]! > 0 ? max[ch]! / 127 : 1;
  const q = new Int8Array(values.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const v = Math.round(values[i]! / scales[axis === 1 ? c : r]!);
      q[i] = Math.max(-127, Math.min(127, v));
    }
  }
  return { q, scales, axis };
}

/** What per-channel int8 values read back as (q · scale), as ONNX's DequantizeLinear computes it. */
export function dequantizeInt8(x: Int8PerChannel, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.q.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      out[i] = Math.fround(x.q[i]! * x.scales[x.axis === 1 ? c : r]!);
    }
  }
  return out;
}

/** uint8 affine values with one min and scale for the tensor: value ≈ q · scale + min (TensorFlow.js's weight quantization). */
export interface Uint8Affine {
  q: Uint8Array;
  min: number;
  scale: number;
}

/**
 * Affine uint8 quantization of a whole tensor, as tensorflowjs_converter's
 * `--quantize_uint8` does: min and max over the tensor (widened to hold 0 so
 * that 0 maps to a whole step: pruned weights stay exactly zero), scale =
 * (max − min) / 255.
 */
export function quantizeUint8(values: Float32Array): Uint8Affine {
  let min = 0;
  let max = 0;
  for (const v of values) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  let scale = (max - min) / 255;
  if (scale === 0) scale = 1;
  // Put 0 on the grid: q0 = round(−min / scale), min = −q0 · scale; then widen
  // the step just enough that both ends still fit (q0 steps below 0, 255 − q0 above).
  const zero = Math.round(-min / scale);
  if (zero > 0 && zero < 255) scale = Math.max(-min / zero, max / (255 - zero));
  scale = Math.fround(scale * (1 + 2 ** -20));
  min = -zero * scale; // not rounded to float32: q0 · scale + min is then exactly 0, as tfjs computes it (in float64)
  const q = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) q[i] = Math.max(0, Math.min(255, Math.round((values[i]! - min) / scale)));
  return { q, min, scale };
}

/** What uint8 affine values read back as. */
export function dequantizeUint8(x: Uint8Affine): Float32Array {
  const out = new Float32Array(x.q.length);
  for (let i = 0; i < x.q.length; i++) out[i] = Math.fround(x.q[i]! * x.scale + x.min);
  return out;
}
