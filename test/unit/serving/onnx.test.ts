import { expect } from 'chai';
import { InvalidArgumentError } from '../../../cluster/errors.js';
import { dequantizeFp16, dequantizeInt8, quantizeFp16, quantizeInt8 } from '../../../serving/compress/quantize.js';
import { ModelLoadError } from '../../../serving/errors.js';
import { type ModelProto, AttributeType, DataType, decodeModel, decodeTensor, encodeModel, encodeTensor } from '../../../serving/formats/onnx-proto.js';
import { writeOnnx } from '../../../serving/formats/onnx-writer.js';
import { forward } from '../../../serving/model/forward.js';
import { type DenseLayer, type ModelGraph, type Quantization, QUANTIZATIONS } from '../../../serving/model/model-graph.js';
import { loadOnnx } from '../../../serving/runtime/onnx-runtime.js';
import { type LoadedModel } from '../../../serving/runtime/runtime.js';
import { rejection } from '../../helpers/expect-errors.js';

/** A seeded generator (mulberry32), so that failures repeat. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function values(rnd: () => number, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * scale);
}

function layer(rnd: () => number, name: string, inputs: number, units: number, activation: DenseLayer['activation'], bias = true): DenseLayer {
  return {
    weightName: `W${name}`,
    biasName: bias ? `b${name}` : null,
    inputs,
    units,
    weight: values(rnd, inputs * units, 1 / Math.sqrt(inputs)),
    bias: bias ? values(rnd, units, 0.1) : null,
    activation,
  };
}

function mlp(): ModelGraph {
  const rnd = random(1);
  return {
    name: 'mnist-mlp',
    input: { kind: 'features', name: 'pixels', features: 784 },
    layers: [layer(rnd, '1', 784, 32, 'relu'), layer(rnd, '2', 32, 10, 'softmax')],
    output: { name: 'probabilities' },
  };
}

function squashes(): ModelGraph {
  const rnd = random(2);
  return {
    name: 'squashes',
    input: { kind: 'features', name: 'x', features: 20 },
    layers: [layer(rnd, '1', 20, 16, 'tanh'), layer(rnd, '2', 16, 8, 'sigmoid', false), layer(rnd, '3', 8, 4, 'linear')],
    output: { name: 'scores' },
  };
}

const BIG = 2n ** 40n;

/** ~50 ids (some near 2^40), 3 fields of dim 4. */
function idsGraph(): ModelGraph {
  const rnd = random(3);
  const ids = new BigInt64Array(50);
  for (let i = 0; i < 40; i++) ids[i] = BigInt(i * 7 + 1);
  for (let i = 40; i < 50; i++) ids[i] = BIG + BigInt((i - 45) * 3); // 2^40 − 15 … 2^40 + 12
  return {
    name: 'ctr',
    input: { kind: 'ids', name: 'ids', fields: 3, table: { name: 'emb', dim: 4, ids, rows: values(rnd, 50 * 4, 0.5) } },
    layers: [layer(rnd, '1', 12, 8, 'relu'), layer(rnd, '2', 8, 2, 'softmax')],
    output: { name: 'probabilities' },
  };
}

/** The graph as a runtime reads it back after `quantize`: what the ONNX model's results must match. */
function dequantized(g: ModelGraph, quantize: Quantization): ModelGraph {
  if (quantize === 'none') return g;
  const fp16 = (a: Float32Array) => dequantizeFp16(quantizeFp16(a));
  const layers = g.layers.map((l) => ({
    ...l,
    weight: quantize === 'fp16' ? fp16(l.weight) : dequantizeInt8(quantizeInt8(l.weight, l.inputs, l.units, 1), l.inputs, l.units),
    bias: l.bias && quantize === 'fp16' ? fp16(l.bias) : l.bias,
  }));
  if (g.input.kind === 'features') return { ...g, layers };
  const t = g.input.table;
  const n = t.ids.length;
  const rows = quantize === 'fp16' ? fp16(t.rows) : dequantizeInt8(quantizeInt8(t.rows, n, t.dim, 0), n, t.dim);
  return { ...g, input: { ...g.input, table: { ...t, rows } }, layers };
}

/** Largest |a − b| − tol·|b| over the values (≤ 0: within tol relative or absolute). */
function expectClose(actual: Float32Array, expected: Float64Array, tol: number): void {
  expect(actual.length).to.equal(expected.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const excess = Math.abs(actual[i]! - expected[i]!) - tol * Math.max(1, Math.abs(expected[i]!));
    if (excess > worst) [worst, at] = [excess, i];
  }
  expect(at, `value ${at}: ${actual[at]} vs ${expected[at]} (tolerance ${tol})`).to.equal(-1);
}

async function load(g: ModelGraph, quantize: Quantization): Promise<LoadedModel> {
  return loadOnnx(writeOnnx(g, quantize).files[0]!.bytes);
}


/** A model written by onnx's Python package (onnx.helper, IR 8) using every field of the subset but value_info. */
const PYTHON_MODEL =
  'CAgSAXAaAXYiA2RvbSj5//////////8BMgJtZDqFAgqRAQoBYRIBYhoBbiIDRm9vKgsKAWYVAADAP6ABASoVCgZmbG9hdHM9AACAPz0AAABAoAEGKhEKAWkY/f//////////AaABAiobCgRpbnRzQP///////////wFAgICAgIAgoAEHKgoKAXMiAmhpoAEDKhoKAXQqEggCEAEiCAAAAD8AAOBAQgJ0M6ABBDICZHM6AWQSAWcqGwgCCAIQAUIBd0oQAADAPwAAAMAAAEBAAACAQCoeCAMQBzoUAfv//////////wGAgICAgICAgEBCAnQyUgJnZFoYCgFhEhMKEQgHEg0KBxIFYmF0Y2gKAggDYhEKAWISDAoKCAESBgoACgIIA0IECgAQDXIGCgFrEgF2';

describe('serving/formats/onnx-proto', () => {
  it('reads a model that onnx (Python) wrote, and writes it back byte for byte', () => {
    const bytes = new Uint8Array(Buffer.from(PYTHON_MODEL, 'base64'));
    const m = decodeModel(bytes);
    expect(m.irVersion).to.equal(8n);
    expect(m.opsetImport).to.deep.equal([{ domain: '', version: 13n }]);
    expect([m.producerName, m.producerVersion, m.domain, m.modelVersion, m.docString]).to.deep.equal(['p', 'v', 'dom', -7n, 'md']);
    expect(m.metadataProps).to.deep.equal([{ key: 'k', value: 'v' }]);
    const g = m.graph!;
    expect([g.name, g.docString]).to.deep.equal(['g', 'gd']);
    const n = g.node![0]!;
    expect([n.name, n.opType, n.domain, n.docString, n.input, n.output]).to.deep.equal(['n', 'Foo', 'd', 'ds', ['a'], ['b']]);
    const attrs = Object.fromEntries(n.attribute!.map((a) => [a.name, a]));
    expect([attrs.f!.f, attrs.f!.type]).to.deep.equal([1.5, AttributeType.FLOAT]);
    expect([attrs.i!.i, attrs.i!.type]).to.deep.equal([-3n, AttributeType.INT]);
    expect(Buffer.from(attrs.s!.s!).toString()).to.equal('hi');
    expect(attrs.floats!.floats).to.deep.equal([1, 2]);
    expect([attrs.ints!.ints, attrs.ints!.type]).to.deep.equal([[-1n, BIG], AttributeType.INTS]);
    expect(attrs.t!.t).to.deep.include({ name: 't3', dims: [2n], dataType: DataType.FLOAT, floatData: [0.5, 7] });
    const [w, t2] = g.initializer!;
    expect(w).to.deep.include({ name: 'w', dims: [2n, 2n], dataType: DataType.FLOAT });
    expect(Array.from(new Float32Array(new Uint8Array(w!.rawData!).buffer))).to.deep.equal([1.5, -2, 3, 4]);
    expect(t2).to.deep.include({ name: 't2', dataType: DataType.INT64, int64Data: [1n, -5n, 2n ** 62n] });
    expect(g.input![0]!.type!.tensorType).to.deep.equal({ elemType: DataType.INT64, shape: { dim: [{ dimParam: 'batch' }, { dimValue: 3n }] } });
    expect(g.output![0]!.type!.tensorType!.shape!.dim![0]).to.deep.equal({});
    expect(Buffer.from(encodeModel(m)).equals(Buffer.from(bytes))).to.equal(true);
  });

  it('round-trips every field, int64s exact over the whole range', () => {
    const model: ModelProto = {
      irVersion: 8n,
      opsetImport: [{ domain: '', version: 13n }, { domain: 'ai.onnx.ml', version: 2n }],
      producerName: 'tessera',
      producerVersion: '0.1.0',
      domain: 'ai.tessera',
      modelVersion: 2n ** 63n - 1n,
      docString: 'doc',
      graph: {
        name: 'g',
        docString: 'gd',
        node: [
          {
            input: ['x', 'y'],
            output: ['z'],
            name: 'n',
            opType: 'Op',
            domain: 'd',
            docString: 'nd',
            attribute: [
              { name: 'ints', type: AttributeType.INTS, ints: [-(2n ** 63n), -1n, 0n, 2n ** 63n - 1n] },
              { name: 'floats', type: AttributeType.FLOATS, floats: [0.25, -8] },
              { name: 'tensor', type: AttributeType.TENSOR, t: { dims: [1n], dataType: DataType.INT64, int64Data: [-(2n ** 63n)] } },
            ],
          },
        ],
        initializer: [{ name: 'h', dims: [2n], dataType: DataType.FLOAT16, rawData: new Uint8Array([0, 60, 0, 188]) }],
        input: [{ name: 'x', type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimParam: 'batch' }, { dimValue: 3n }] } } } }],
        output: [{ name: 'z', type: { tensorType: { elemType: DataType.FLOAT } } }],
        valueInfo: [{ name: 'y', type: { tensorType: { elemType: DataType.INT8, shape: { dim: [{ dimValue: 0n }] } } } }],
      },
      metadataProps: [{ key: 'a', value: 'b' }],
    };
    const bytes = encodeModel(model);
    const back = decodeModel(bytes);
    expect(back.modelVersion).to.equal(2n ** 63n - 1n);
    expect(back.graph!.node![0]!.attribute![0]!.ints).to.deep.equal([-(2n ** 63n), -1n, 0n, 2n ** 63n - 1n]);
    expect(back.graph!.node![0]!.attribute![2]!.t!.int64Data).to.deep.equal([-(2n ** 63n)]);
    expect(back.graph!.valueInfo![0]!.type!.tensorType!.shape!.dim).to.deep.equal([{ dimValue: 0n }]);
    expect(Array.from(back.graph!.initializer![0]!.rawData!)).to.deep.equal([0, 60, 0, 188]);
    expect(Buffer.from(encodeModel(back)).equals(Buffer.from(bytes))).to.equal(true);
    const t = decodeTensor(encodeTensor({ name: 'v', dims: [2n], dataType: DataType.FLOAT, floatData: [1.5, -3] }));
    expect(t).to.deep.include({ name: 'v', dims: [2n], dataType: DataType.FLOAT, floatData: [1.5, -3] });
  });
});

describe('serving/formats/onnx-writer and runtime/onnx-runtime', () => {
  const tolerances: Record<Quantization, number> = { none: 1e-5, fp16: 1e-4, int8: 1e-4 };

  describe('features graphs', () => {
    for (const make of [mlp, squashes]) {
      for (const quantize of QUANTIZATIONS) {
        it(`${make().name} with ${quantize} gives forward()'s results over the weights as stored`, async () => {
          const g = make();
          const m = await load(g, quantize);
          try {
            expect(m.format).to.equal('onnx');
            expect(m.input).to.deep.equal({ name: g.input.name, datatype: 'FP32', width: (g.input as { features: number }).features });
            expect(m.output).to.deep.equal({ name: g.output.name, datatype: 'FP32', width: g.layers.at(-1)!.units });
            const rows = 16;
            const x = values(random(10), rows * m.input.width);
            expectClose(await m.run(x, rows), forward(dequantized(g, quantize), x, rows), tolerances[quantize]);
          } finally {
            await m.close();
          }
        });
      }
    }

    it('stores each tensor as the quantization says', () => {
      const g = squashes();
      expect(writeOnnx(g, 'none').storage).to.deep.equal({ W1: 'float32', b1: 'float32', W2: 'float32', W3: 'float32', b3: 'float32' });
      expect(writeOnnx(g, 'fp16').storage).to.deep.equal({ W1: 'float16', b1: 'float16', W2: 'float16', W3: 'float16', b3: 'float16' });
      const int8 = 'int8, a scale per output unit';
      expect(writeOnnx(g, 'int8').storage).to.deep.equal({ W1: int8, b1: 'float32', W2: int8, W3: int8, b3: 'float32' });
      const types = (q: Quantization) => Object.fromEntries(decodeModel(writeOnnx(g, q).files[0]!.bytes).graph!.initializer!.map((t) => [t.name, t.dataType]));
      expect(types('fp16')).to.deep.equal({ W1: DataType.FLOAT16, b1: DataType.FLOAT16, W2: DataType.FLOAT16, W3: DataType.FLOAT16, b3: DataType.FLOAT16 });
      expect(types('int8')).to.include({ W1: DataType.INT8, 'W1/scale': DataType.FLOAT, 'W1/zero_point': DataType.INT8, b1: DataType.FLOAT });
    });

    it('writes the model header, signature and metadata', () => {
      const g = mlp();
      const m = decodeModel(writeOnnx(g, 'none', { version: '3', cluster: 'c1' }).files[0]!.bytes);
      expect(m.irVersion).to.equal(8n);
      expect(m.producerName).to.equal('tessera');
      expect(m.opsetImport).to.deep.equal([{ domain: '', version: 13n }]);
      expect(m.metadataProps).to.deep.equal([
        { key: 'cluster', value: 'c1' },
        { key: 'version', value: '3' },
      ]);
      expect(m.graph!.input).to.deep.equal([{ name: 'pixels', type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimParam: 'batch' }, { dimValue: 784n }] } } } }]);
      expect(m.graph!.output).to.deep.equal([{ name: 'probabilities', type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimParam: 'batch' }, { dimValue: 10n }] } } } }]);
      expect(m.graph!.node!.map((n) => n.opType)).to.deep.equal(['MatMul', 'Add', 'Relu', 'MatMul', 'Add', 'Softmax']);
    });

    it('gives a row the same bits alone as in a batch of 32', async () => {
      // Found with onnxruntime-node 1.30 on x86-64: bit-identical for all three quantizations, with 1 or more
      // threads. For int8 this holds because loadOnnx folds DequantizeLinear into float32 weights at load
      // (session.disable_quant_qdq); otherwise onnxruntime runs W2 as MatMulNBits, whose sums differ by ~1e-7
      // between a row alone and a batch.
      const g = mlp();
      const x = values(random(11), 32 * 784);
      for (const quantize of QUANTIZATIONS) {
        const m = await load(g, quantize);
        try {
          const batch = await m.run(x, 32);
          for (let r = 0; r < 32; r++) {
            const one = await m.run(x.subarray(r * 784, (r + 1) * 784), 1);
            expect(Array.from(one), `${quantize}, row ${r}`).to.deep.equal(Array.from(batch.subarray(r * 10, (r + 1) * 10)));
          }
        } finally {
          await m.close();
        }
      }
    });

    it('gives the same bytes for the same graph', () => {
      for (const quantize of QUANTIZATIONS) {
        const a = writeOnnx(mlp(), quantize, { a: '1', b: '2' }).files[0]!;
        const b = writeOnnx(mlp(), quantize, { b: '2', a: '1' }).files[0]!;
        expect(a.path).to.equal('model.onnx');
        expect(Buffer.from(a.bytes).equals(Buffer.from(b.bytes)), quantize).to.equal(true);
        const i1 = writeOnnx(idsGraph(), quantize).files[0]!.bytes;
        const i2 = writeOnnx(idsGraph(), quantize).files[0]!.bytes;
        expect(Buffer.from(i1).equals(Buffer.from(i2)), `ids ${quantize}`).to.equal(true);
      }
    });
  });

  describe('ids graphs', () => {
    const g = idsGraph();
    const table = (g.input as { table: { ids: BigInt64Array } }).table;
    // Known ids (including the ones around 2^40) and unknown ones (0, negatives, neighbours of known ids, 2^40 ± 1, ±2^63…).
    const request = BigInt64Array.from([
      ...[1n, 8n, 274n, BIG - 15n, BIG, BIG + 12n],
      ...[0n, 2n, -1n, BIG - 14n, BIG + 1n, -(2n ** 63n)],
      ...[BIG + 3n, 7n, 2n ** 63n - 1n, 15n, BIG - 12n, 9n],
      ...[3n, 4n, 5n, BIG + 2n, BIG - 1n, 10n],
    ]);
    const rows = request.length / 3;

    it('has unknown ids in the request and ids near 2^40 in the table', () => {
      const known = new Set(table.ids);
      expect(request.filter((id) => !known.has(id)).length).to.be.greaterThan(8);
      expect(request.filter((id) => known.has(id) && id > 2n ** 39n).length).to.be.greaterThan(3);
    });

    for (const quantize of QUANTIZATIONS) {
      it(`with ${quantize} gives forward()'s results over the rows and weights as stored`, async () => {
        const m = await load(g, quantize);
        try {
          expect(m.input).to.deep.equal({ name: 'ids', datatype: 'INT64', width: 3 });
          expect(m.output).to.deep.equal({ name: 'probabilities', datatype: 'FP32', width: 2 });
          expectClose(await m.run(request, rows), forward(dequantized(g, quantize), request, rows), tolerances[quantize]);
          // A row alone and in the batch.
          const batch = await m.run(request, rows);
          for (let r = 0; r < rows; r++) {
            const one = await m.run(request.subarray(r * 3, r * 3 + 3), 1);
            expect(Array.from(one)).to.deep.equal(Array.from(batch.subarray(r * 2, r * 2 + 2)));
          }
        } finally {
          await m.close();
        }
      });

      it(`with ${quantize} reads each id's row exactly, and zeros for an unknown id`, async () => {
        // One linear layer of identity weights (exact in float16 too), no bias: the output is the looked-up rows.
        const eye = new Float32Array(12 * 12);
        for (let i = 0; i < 12; i++) eye[i * 12 + i] = 1;
        const lookup: ModelGraph = { ...g, layers: [{ weightName: 'I', biasName: null, inputs: 12, units: 12, weight: eye, bias: null, activation: 'linear' }] };
        const m = await load(lookup, quantize);
        try {
          const out = await m.run(request, rows);
          const expected = forward(dequantized(lookup, quantize), request, rows);
          const known = new Set(table.ids);
          for (let i = 0; i < request.length; i++) {
            for (let d = 0; d < 4; d++) {
              const v = out[i * 4 + d]!;
              if (!known.has(request[i]!)) expect(v, `id ${request[i]}`).to.equal(0);
              // int8's identity reads back as 127 · (1/127 in float32), an ulp or so off 1.
              else if (quantize === 'int8') expect(v).to.be.closeTo(expected[i * 4 + d]!, 1e-7);
              else expect(v, `id ${request[i]}`).to.equal(expected[i * 4 + d]!);
            }
          }
        } finally {
          await m.close();
        }
      });
    }

    it('stores the table as the quantization says, with a row of zeros first', () => {
      expect(writeOnnx(g, 'none').storage).to.include({ emb: 'float32', W1: 'float32' });
      expect(writeOnnx(g, 'fp16').storage).to.include({ emb: 'float16' });
      expect(writeOnnx(g, 'int8').storage).to.deep.equal({ emb: 'int8, a scale per row', W1: 'int8, a scale per output unit', b1: 'float32', W2: 'int8, a scale per output unit', b2: 'float32' });
      const m = decodeModel(writeOnnx(g, 'int8').files[0]!.bytes);
      expect(m.opsetImport).to.deep.equal([{ domain: '', version: 13n }, { domain: 'ai.onnx.ml', version: 2n }]);
      const emb = m.graph!.initializer!.find((t) => t.name === 'emb')!;
      expect(emb.dims).to.deep.equal([51n, 4n]);
      expect(Array.from(emb.rawData!.subarray(0, 4))).to.deep.equal([0, 0, 0, 0]);
      const encoder = m.graph!.node!.find((n) => n.opType === 'LabelEncoder')!;
      expect(encoder.domain).to.equal('ai.onnx.ml');
      expect(encoder.attribute!.find((a) => a.name === 'keys_int64s')!.ints).to.deep.equal(Array.from(table.ids));
    });

    it('handles a table with no rows: every id reads zeros', async () => {
      const empty: ModelGraph = { ...g, input: { kind: 'ids', name: 'ids', fields: 3, table: { name: 'emb', dim: 4, ids: new BigInt64Array(0), rows: new Float32Array(0) } } };
      for (const quantize of QUANTIZATIONS) {
        const m = await load(empty, quantize);
        try {
          expectClose(await m.run(request, rows), forward(dequantized(empty, quantize), request, rows), tolerances[quantize]);
        } finally {
          await m.close();
        }
      }
    });
  });

  describe('errors', () => {
    let model: LoadedModel;
    let ids: LoadedModel;
    before(async () => {
      model = await load(squashes(), 'none');
      ids = await load(idsGraph(), 'none');
    });
    after(async () => {
      await model.close();
      await ids.close();
    });

    it('rejects garbage and a truncated file with ModelLoadError', async () => {
      const rnd = random(5);
      const garbage = Uint8Array.from({ length: 1000 }, () => Math.floor(rnd() * 256));
      const e1 = await rejection(loadOnnx(garbage));
      expect(e1).to.be.instanceOf(ModelLoadError);
      expect(e1.message).to.match(/ONNX/);
      const bytes = writeOnnx(mlp(), 'none').files[0]!.bytes;
      const e2 = await rejection(loadOnnx(bytes.subarray(0, bytes.length >> 1)));
      expect(e2).to.be.instanceOf(ModelLoadError);
      expect(e2.message).to.match(/ONNX/);
      expect(await rejection(loadOnnx(new Uint8Array(0)))).to.be.instanceOf(ModelLoadError);
      expect(await rejection(loadOnnx(new TextEncoder().encode('{"format": "layers-model"}')))).to.be.instanceOf(ModelLoadError);
    });

    it('rejects an input or output that is not FLOAT/INT64 [batch, width], saying what was expected', async () => {
      const bytes = writeOnnx(squashes(), 'none').files[0]!.bytes;
      const edit = (change: (m: ModelProto) => void) => {
        const m = decodeModel(bytes);
        change(m);
        return loadOnnx(encodeModel(m));
      };
      const half = await rejection(edit((m) => (m.graph!.input![0]!.type!.tensorType!.elemType = DataType.FLOAT16)));
      expect(half).to.be.instanceOf(ModelLoadError);
      expect(half.message).to.match(/expected the model's input to be FLOAT or INT64 \[batch, width\].*FLOAT16/);
      const rank3 = await rejection(edit((m) => m.graph!.input![0]!.type!.tensorType!.shape!.dim!.push({ dimValue: 2n })));
      expect(rank3.message).to.match(/\[batch, width\].*\[batch, 20, 2\]/);
      const fixed = await rejection(edit((m) => (m.graph!.input![0]!.type!.tensorType!.shape!.dim![0] = { dimValue: 1n })));
      expect(fixed.message).to.match(/symbolic batch/);
      const intOut = await rejection(edit((m) => (m.graph!.output![0]!.type!.tensorType!.elemType = DataType.INT64)));
      expect(intOut.message).to.match(/expected the model's output to be FLOAT \[batch, width\].*INT64/);
      const two = await rejection(edit((m) => m.graph!.output!.push(m.graph!.output![0]!)));
      expect(two.message).to.match(/one output tensor, found 2/);
    });

    it("carries onnxruntime's message when it cannot load the model", async () => {
      const m = decodeModel(writeOnnx(squashes(), 'none').files[0]!.bytes);
      m.graph!.node![0]!.opType = 'NoSuchOp';
      const e = await rejection(loadOnnx(encodeModel(m)));
      expect(e).to.be.instanceOf(ModelLoadError);
      expect(e.message).to.match(/^onnxruntime could not load the model: .*NoSuchOp/);
    });

    it('rejects input of the wrong length or type with InvalidArgumentError', async () => {
      const wrongLength = await rejection(model.run(new Float32Array(39), 2));
      expect(wrongLength).to.be.instanceOf(InvalidArgumentError);
      expect(wrongLength.message).to.equal('input x: 2 examples of 20 values need 40 values, got 39');
      const wrongType = await rejection(model.run(new BigInt64Array(40), 2));
      expect(wrongType).to.be.instanceOf(InvalidArgumentError);
      expect(wrongType.message).to.match(/takes FP32 values \(a Float32Array\), got a BigInt64Array/);
      expect(await rejection(ids.run(new Float32Array(3), 1))).to.be.instanceOf(InvalidArgumentError);
      expect(await rejection(ids.run(new BigInt64Array(4), 1))).to.be.instanceOf(InvalidArgumentError);
      expect(await rejection(model.run(new Float32Array(20), 1.5))).to.be.instanceOf(InvalidArgumentError);
      expect(await model.run(new Float32Array(0), 0)).to.deep.equal(new Float32Array(0));
    });

    it('refuses graphs that do not fit together', () => {
      const g = mlp();
      expect(() => writeOnnx({ ...g, layers: [g.layers[1]!] }, 'none')).to.throw(/takes 32 inputs but the layer before gives 784/);
      expect(() => writeOnnx({ ...g, output: { name: 'pixels' } }, 'none')).to.throw(/"pixels" is used by both/);
      const ig = idsGraph();
      const t = (ig.input as { table: { ids: BigInt64Array } }).table;
      t.ids.reverse();
      expect(() => writeOnnx(ig, 'none')).to.throw(/ascending/);
    });
  });
});
