import { expect } from 'chai';
import { pruneMagnitude, pruneUnits } from '../../../serving/compress/prune.js';
import { dequantizeFp16, dequantizeInt8, dequantizeUint8, fromHalf, quantizeFp16, quantizeInt8, quantizeUint8, toHalf } from '../../../serving/compress/quantize.js';
import { forward } from '../../../serving/model/forward.js';
import { type ModelGraph, nonZeroCount, parameterCount } from '../../../serving/model/model-graph.js';
import { seededFloats } from '../../helpers/random.js';

function mlp(inputs: number, hidden: number, outputs: number, seed = 1): ModelGraph {
  return {
    name: 'm',
    input: { kind: 'features', name: 'input', features: inputs },
    layers: [
      { weightName: 'W1', biasName: 'b1', inputs, units: hidden, weight: seededFloats(inputs * hidden, seed), bias: seededFloats(hidden, seed + 1), activation: 'relu' },
      { weightName: 'W2', biasName: 'b2', inputs: hidden, units: outputs, weight: seededFloats(hidden * outputs, seed + 2), bias: seededFloats(outputs, seed + 3), activation: 'softmax' },
    ],
    output: { name: 'probabilities' },
  };
}

describe('serving/compress', () => {
  describe('float16', () => {
    it('round-trips every half exactly and rounds float32 to the nearest half', () => {
      for (let h = 0; h < 0x10000; h++) {
        const v = fromHalf(h);
        if (Number.isNaN(v)) continue;
        expect(toHalf(v), `bits ${h.toString(16)}`).to.equal(h === 0x8000 ? 0x8000 : h);
      }
      expect(fromHalf(toHalf(1 + 2 ** -11))).to.equal(1); // a tie goes to even
      expect(fromHalf(toHalf(1 + 3 * 2 ** -11))).to.equal(1 + 2 ** -9);
      expect(fromHalf(toHalf(70000))).to.equal(Infinity);
      expect(fromHalf(toHalf(2 ** -25))).to.equal(0);
    });
    it('keeps relative error within 2^-11 in the normal range', () => {
      const v = seededFloats(10_000, 5);
      const back = dequantizeFp16(quantizeFp16(v));
      for (let i = 0; i < v.length; i++) if (Math.abs(v[i]!) > 2 ** -14) expect(Math.abs(back[i]! - v[i]!) / Math.abs(v[i]!)).to.be.at.most(2 ** -11);
    });
  });

  describe('int8 per channel', () => {
    it('uses a scale per column (axis 1) or per row (axis 0); errors within half a step; zeros stay zero', () => {
      const rows = 30;
      const cols = 7;
      const v = seededFloats(rows * cols, 9);
      for (let c = 0; c < cols; c++) v[3 * cols + c] = 0;
      for (const axis of [0, 1] as const) {
        const q = quantizeInt8(v, rows, cols, axis);
        expect(q.scales.length).to.equal(axis === 1 ? cols : rows);
        const back = dequantizeInt8(q, rows, cols);
        for (let r = 0; r < rows; r++) {
          for (let c = 0; c < cols; c++) {
            const scale = q.scales[axis === 1 ? c : r]!;
            expect(Math.abs(back[r * cols + c]! - v[r * cols + c]!)).to.be.at.most(scale / 2 + 1e-7);
          }
        }
        for (let c = 0; c < cols; c++) expect(back[3 * cols + c]).to.equal(0);
        expect(Math.max(...q.q.map(Math.abs))).to.equal(127);
      }
    });
  });

  describe('uint8 affine per tensor', () => {
    it('puts 0 on the grid and stays within half a step', () => {
      const v = seededFloats(1000, 4).map((x) => x + 0.3);
      v[10] = 0;
      const q = quantizeUint8(v);
      const back = dequantizeUint8(q);
      expect(back[10]).to.equal(0);
      for (let i = 0; i < v.length; i++) expect(Math.abs(back[i]! - v[i]!)).to.be.at.most(q.scale / 2 + 1e-6);
    });
  });

  describe('pruneMagnitude', () => {
    it('zeroes the smallest fraction of all weights under one threshold, and keeps the rest and the biases', () => {
      const g = mlp(20, 16, 4);
      g.layers[1]!.weight.forEach((_, i, w) => (w[i] = w[i]! * 10)); // the output layer's weights are larger: it gives up fewer
      const p = pruneMagnitude(g, 0.5);
      const all = (x: ModelGraph) => x.layers.flatMap((l) => Array.from(l.weight));
      const before = all(g);
      const after = all(p);
      expect(after.filter((x) => x === 0).length).to.equal(Math.floor(before.length / 2));
      const kept = Math.min(...after.filter((x) => x !== 0).map(Math.abs));
      const dropped = Math.max(...before.filter((_, j) => after[j] === 0).map(Math.abs));
      expect(kept).to.be.at.least(dropped);
      expect(p.layers[1]!.weight.filter((x) => x === 0).length).to.be.below(p.layers[0]!.weight.filter((x) => x === 0).length / 4);
      g.layers.forEach((l, i) => expect(Array.from(p.layers[i]!.bias!)).to.deep.equal(Array.from(l.bias!)));
      expect(nonZeroCount(p)).to.equal(nonZeroCount(g) - Math.floor(before.length / 2));
      expect(g.layers[0]!.weight.some((x) => x === 0)).to.equal(false); // the input is not changed
    });
    it('refuses a fraction outside [0, 1)', () => {
      expect(() => pruneMagnitude(mlp(2, 2, 2), 1)).to.throw(/fraction in \[0, 1\)/);
      expect(() => pruneMagnitude(mlp(2, 2, 2), -0.1)).to.throw(/fraction/);
    });
  });

  describe('pruneUnits', () => {
    it('shrinks the hidden layer and the next one, and a dropped unit of zero saliency changes nothing', () => {
      const g = mlp(12, 10, 3);
      // Units 2 and 7 feed nothing forward: removing them cannot change any output.
      for (const j of [2, 7]) for (let u = 0; u < 3; u++) g.layers[1]!.weight[j * 3 + u] = 0;
      const p = pruneUnits(g, 0.2);
      expect(p.layers[0]!.units).to.equal(8);
      expect(p.layers[1]!.inputs).to.equal(8);
      expect(parameterCount(p)).to.equal(parameterCount(g) - 2 * (12 + 1 + 3));
      const x = seededFloats(5 * 12, 3);
      const a = forward(g, x, 5);
      const b = forward(p, x, 5);
      for (let i = 0; i < a.length; i++) expect(b[i]).to.be.closeTo(a[i]!, 1e-12);
    });
    it('never prunes the output layer', () => {
      const g = mlp(4, 4, 3);
      expect(pruneUnits(g, 0.5).layers[1]!.units).to.equal(3);
    });
  });
});

describe('serving/compress uint8 ends', () => {
  it('keeps both ends of a tensor on the grid within half a step', () => {
    for (const v of [Float32Array.of(1, -1), Float32Array.of(0.3, 0), Float32Array.of(-2, 0), Float32Array.of(5, -0.001)]) {
      const q = quantizeUint8(v);
      const back = dequantizeUint8(q);
      v.forEach((x, i) => expect(Math.abs(back[i]! - x), `${x} of [${Array.from(v)}]`).to.be.at.most(q.scale / 2 + 1e-6));
    }
  });
});
