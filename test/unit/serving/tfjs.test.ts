import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { expect } from 'chai';
import { InvalidArgumentError } from '../../../cluster/errors.js';
import { type Activation } from '../../../cluster/model-spec.js';
import { dequantizeFp16, dequantizeUint8, quantizeFp16, quantizeUint8 } from '../../../serving/compress/quantize.js';
import { ModelLoadError } from '../../../serving/errors.js';
import { type WrittenFile } from '../../../serving/formats/format.js';
import { writeTfjs } from '../../../serving/formats/tfjs-writer.js';
import { forward } from '../../../serving/model/forward.js';
import { type DenseLayer, type ModelGraph, type Quantization, QUANTIZATIONS } from '../../../serving/model/model-graph.js';
import { directoryReader, loadTfjs, memoryReader } from '../../../serving/runtime/tfjs-runtime.js';
import { rng as uniform } from '../../helpers/random.js';
import { rejection } from '../../helpers/expect-errors.js';

/** Deterministic uniform numbers in [−1, 1). */
function rng(seed: number): () => number {
  const next = uniform(seed);
  return () => next() * 2 - 1;
}

function dense(r: () => number, i: number, inputs: number, units: number, activation: Activation, bias = true): DenseLayer {
  const scale = 1 / Math.sqrt(inputs);
  return {
    weightName: `W${i + 1}`,
    biasName: bias ? `b${i + 1}` : null,
    inputs,
    units,
    weight: Float32Array.from({ length: inputs * units }, () => r() * scale),
    bias: bias ? Float32Array.from({ length: units }, () => r() * 0.1) : null,
    activation,
  };
}

function featuresGraph(seed: number, widths: number[], activations: Activation[], biases?: boolean[]): ModelGraph {
  const r = rng(seed);
  return {
    name: 'mlp',
    input: { kind: 'features', name: 'features', features: widths[0]! },
    layers: activations.map((a, i) => dense(r, i, widths[i]!, widths[i + 1]!, a, biases?.[i] ?? true)),
    output: { name: 'probabilities' },
  };
}

const BIG = 2n ** 40n;

function idsGraph(seed: number): ModelGraph {
  const r = rng(seed);
  const set = new Set<bigint>();
  for (let i = 0; i < 44; i++) set.add(BigInt(Math.floor((r() + 1) * 5000)));
  for (const d of [-3n, -1n, 0n, 1n, 7n, 1000n]) set.add(BIG + d);
  const ids = BigInt64Array.from([...set].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
  const dim = 4;
  const fields = 3;
  return {
    name: 'ctr',
    input: { kind: 'ids', name: 'ids', fields, table: { name: 'emb', dim, ids, rows: Float32Array.from({ length: ids.length * dim }, () => r()) } },
    layers: [dense(r, 0, fields * dim, 8, 'relu'), dense(r, 1, 8, 1, 'sigmoid')],
    output: { name: 'score' },
  };
}

/** The graph with the weights a runtime reads back after quantization. */
function dequantized(g: ModelGraph, q: Quantization): ModelGraph {
  const f = (v: Float32Array) => (q === 'none' ? v : q === 'fp16' ? dequantizeFp16(quantizeFp16(v)) : dequantizeUint8(quantizeUint8(v)));
  return {
    ...g,
    // The embedding gains a zero row; 0 is already inside the tensor's range, so the quantization of the rest is the same.
    input: g.input.kind === 'ids' ? { ...g.input, table: { ...g.input.table, rows: f(g.input.table.rows) } } : g.input,
    layers: g.layers.map((l) => ({ ...l, weight: f(l.weight), bias: l.bias && f(l.bias) })),
  };
}

function randomFeatures(seed: number, n: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() + 1) / 2);
}

function idRequests(g: ModelGraph, rows: number): BigInt64Array {
  if (g.input.kind !== 'ids') throw new Error('not ids');
  const { ids } = g.input.table;
  const r = rng(99);
  const out = new BigInt64Array(rows * g.input.fields);
  for (let i = 0; i < out.length; i++) {
    const k = i % 5;
    if (k === 0) out[i] = BIG + 2n; // unknown, between known ids near 2^40
    else if (k === 1) out[i] = -5n; // unknown, below all
    else out[i] = ids[Math.floor(((r() + 1) / 2) * ids.length)]!;
  }
  // Every id near 2^40 once.
  for (let j = 0; j < 6 && j < rows; j++) out[j * g.input.fields + 2] = ids[ids.length - 1 - j]!;
  return out;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).to.equal(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function file(files: WrittenFile[], p: string): Uint8Array {
  const f = files.find((x) => x.path === p);
  if (!f) throw new Error(`no ${p}`);
  return f.bytes;
}

function modelJson(files: WrittenFile[]): Record<string, any> {
  return JSON.parse(new TextDecoder().decode(file(files, 'model.json')));
}


const TOLERANCE: Record<Quantization, number> = { none: 1e-5, fp16: 1e-4, int8: 1e-4 };

describe('TensorFlow.js export and runtime', () => {
  const mnist = featuresGraph(1, [784, 32, 10], ['relu', 'softmax']);
  const mixed = featuresGraph(2, [20, 16, 12, 5], ['tanh', 'sigmoid', 'linear'], [true, false, true]);
  const ctr = idsGraph(3);

  for (const q of QUANTIZATIONS) {
    it(`runs a 784-32-10 relu/softmax graph stored as ${q} as forward() does`, async () => {
      const m = await loadTfjs(memoryReader(writeTfjs(mnist, q).files));
      try {
        expect(m.format).to.equal('tfjs');
        expect(m.input).to.deep.equal({ name: 'features', datatype: 'FP32', width: 784 });
        expect(m.output).to.deep.equal({ name: 'probabilities', datatype: 'FP32', width: 10 });
        const x = randomFeatures(10, 16 * 784);
        const y = await m.run(x, 16);
        expect(y).to.be.instanceOf(Float32Array);
        expect(maxDiff(y, forward(dequantized(mnist, q), x, 16))).to.be.below(TOLERANCE[q]);
      } finally {
        await m.close();
      }
    });

    it(`runs a tanh/sigmoid/linear graph (one layer without bias) stored as ${q}`, async () => {
      const m = await loadTfjs(memoryReader(writeTfjs(mixed, q).files));
      try {
        const x = randomFeatures(11, 7 * 20);
        expect(maxDiff(await m.run(x, 7), forward(dequantized(mixed, q), x, 7))).to.be.below(TOLERANCE[q]);
      } finally {
        await m.close();
      }
    });

    it(`runs an ids graph (ids near 2^40, unknown ids read zeros) stored as ${q}`, async () => {
      const out = writeTfjs(ctr, q);
      const m = await loadTfjs(memoryReader(out.files));
      try {
        expect(m.input).to.deep.equal({ name: 'ids', datatype: 'INT64', width: 3 });
        expect(m.output).to.deep.equal({ name: 'score', datatype: 'FP32', width: 1 });
        const x = idRequests(ctr, 12);
        expect(maxDiff(await m.run(x, 12), forward(dequantized(ctr, q), x, 12))).to.be.below(TOLERANCE[q]);
        // An example of unknown ids only is the graph run on zeros.
        const unknown = BigInt64Array.from([BIG + 2n, -5n, BIG - 2n]);
        expect(maxDiff(await m.run(unknown, 1), forward(dequantized(ctr, q), unknown, 1))).to.be.below(TOLERANCE[q]);
      } finally {
        await m.close();
      }
    });
  }

  it('quantized weights differ from the originals (the tolerance above is earned, not trivial)', () => {
    for (const q of ['fp16', 'int8'] as const) {
      const w = dequantized(mnist, q).layers[0]!.weight;
      expect(maxDiff(w, mnist.layers[0]!.weight)).to.be.above(0);
    }
  });

  it('writes model.json as tensorflowjs_converter lays out a Keras Sequential model', () => {
    const json = modelJson(writeTfjs(ctr, 'int8').files);
    expect(json.format).to.equal('layers-model');
    expect(json.convertedBy).to.equal('Tessera');
    expect(json.generatedBy).to.be.a('string');
    const config = json.modelTopology.model_config;
    expect(config.class_name).to.equal('Sequential');
    expect(config.config.layers.map((l: any) => l.class_name)).to.deep.equal(['InputLayer', 'Embedding', 'Flatten', 'Dense', 'Dense']);
    expect(config.config.layers[0].config.batch_input_shape).to.deep.equal([null, 3]);
    const emb = config.config.layers[1].config;
    const table = ctr.input.kind === 'ids' ? ctr.input.table : null;
    expect(emb).to.include({ input_dim: table!.ids.length + 1, output_dim: 4, input_length: 3 });
    expect(config.config.layers[3].config).to.include({ units: 8, activation: 'relu', use_bias: true });
    expect(config.config.layers[4].config).to.include({ units: 1, activation: 'sigmoid', use_bias: true });
    expect(json.weightsManifest).to.have.length(1);
    expect(json.weightsManifest[0].paths).to.deep.equal(['group1-shard1of1.bin']);
    const weights = json.weightsManifest[0].weights;
    expect(weights.map((w: any) => w.name)).to.deep.equal(['embedding/embeddings', 'dense/kernel', 'dense/bias', 'dense_1/kernel', 'dense_1/bias']);
    expect(weights[0].shape).to.deep.equal([table!.ids.length + 1, 4]);
    expect(weights[1]).to.deep.include({ shape: [12, 8], dtype: 'float32' });
    expect(weights[1].quantization.dtype).to.equal('uint8');
    expect(weights[1].quantization.min).to.be.a('number');
    expect(weights[1].quantization.scale).to.be.above(0);
    expect(json.userDefinedMetadata).to.deep.equal({
      tessera: { input: { kind: 'ids', name: 'ids', fields: 3, vocabulary: 'vocabulary.bin' }, output: { name: 'score' } },
    });
    // The weights file holds exactly what the manifest describes: uint8, one byte per value.
    const values = weights.reduce((n: number, w: any) => n + w.shape.reduce((a: number, b: number) => a * b, 1), 0);
    expect(file(writeTfjs(ctr, 'int8').files, 'group1-shard1of1.bin').length).to.equal(values);
    expect(file(writeTfjs(ctr, 'fp16').files, 'group1-shard1of1.bin').length).to.equal(values * 2);
    expect(modelJson(writeTfjs(ctr, 'fp16').files).weightsManifest[0].weights[1].quantization).to.deep.equal({ dtype: 'float16' });
    expect(modelJson(writeTfjs(ctr, 'none').files).weightsManifest[0].weights[1]).to.not.have.property('quantization');
    // The vocabulary: the table's ids, int64 little-endian, ascending.
    const vocab = file(writeTfjs(ctr, 'none').files, 'vocabulary.bin');
    const view = new DataView(vocab.buffer, vocab.byteOffset, vocab.byteLength);
    expect(Array.from({ length: vocab.length / 8 }, (_, i) => view.getBigInt64(i * 8, true))).to.deep.equal([...table!.ids]);

    const features = modelJson(writeTfjs(mixed, 'none').files);
    expect(features.modelTopology.model_config.config.layers.map((l: any) => [l.class_name, l.config.activation ?? null])).to.deep.equal([
      ['InputLayer', null],
      ['Dense', 'tanh'],
      ['Dense', 'sigmoid'],
      ['Dense', 'linear'],
    ]);
    expect(features.modelTopology.model_config.config.layers[2].config.use_bias).to.equal(false);
    expect(features.weightsManifest[0].weights.map((w: any) => w.name)).to.deep.equal(['dense/kernel', 'dense/bias', 'dense_1/kernel', 'dense_2/kernel', 'dense_2/bias']);
    expect(features.userDefinedMetadata).to.deep.equal({ tessera: { input: { kind: 'features', name: 'features' }, output: { name: 'probabilities' } } });
  });

  it('describes how each tensor is stored, by its spec name', () => {
    expect(writeTfjs(ctr, 'int8').storage).to.deep.equal({
      emb: 'uint8, one min and scale for the tensor (TensorFlow.js weight quantization)',
      W1: 'uint8, one min and scale for the tensor (TensorFlow.js weight quantization)',
      b1: 'uint8, one min and scale for the tensor (TensorFlow.js weight quantization)',
      W2: 'uint8, one min and scale for the tensor (TensorFlow.js weight quantization)',
      b2: 'uint8, one min and scale for the tensor (TensorFlow.js weight quantization)',
    });
    expect(Object.keys(writeTfjs(mixed, 'fp16').storage)).to.deep.equal(['W1', 'b1', 'W2', 'W3', 'b3']);
    expect(writeTfjs(mixed, 'none').storage.W1).to.equal('float32');
  });

  it('writes identical bytes for the same graph', () => {
    for (const q of QUANTIZATIONS) {
      for (const g of [mnist, ctr]) {
        const a = writeTfjs(g, q);
        const b = writeTfjs(structuredClone(g), q);
        expect(a.files.map((f) => f.path)).to.deep.equal(b.files.map((f) => f.path));
        a.files.forEach((f, i) => expect(Buffer.from(f.bytes).equals(Buffer.from(b.files[i]!.bytes)), `${q} ${f.path}`).to.equal(true));
      }
    }
  });

  it('loads from a directory and refuses paths that leave it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-tfjs-'));
    try {
      for (const f of writeTfjs(ctr, 'fp16').files) await writeFile(join(dir, f.path), f.bytes);
      const m = await loadTfjs(directoryReader(dir));
      const x = idRequests(ctr, 3);
      expect(maxDiff(await m.run(x, 3), forward(dequantized(ctr, 'fp16'), x, 3))).to.be.below(1e-4);
      await m.close();
      const read = directoryReader(dir);
      for (const p of ['../x', '../../etc/passwd', '/etc/passwd', 'a/../../b']) {
        expect(await rejection(read(p)), p).to.be.instanceOf(ModelLoadError);
      }
      expect((await read('./model.json')).length).to.be.above(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe('damaged files', () => {
    const files = writeTfjs(mnist, 'none').files;
    const without = (p: string) => files.filter((f) => f.path !== p);
    const replace = (p: string, bytes: Uint8Array | string) => [
      ...without(p),
      { path: p, bytes: typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes },
    ];
    const editJson = (edit: (j: Record<string, any>) => void) => {
      const j = modelJson(files);
      edit(j);
      return replace('model.json', JSON.stringify(j));
    };
    const cases: [string, WrittenFile[], RegExp][] = [
      ['a missing model.json', without('model.json'), /model\.json/],
      ['a missing weights file', without('group1-shard1of1.bin'), /group1-shard1of1\.bin/],
      ['a truncated weights file', replace('group1-shard1of1.bin', file(files, 'group1-shard1of1.bin').subarray(0, 100)), /bytes/],
      ['a corrupt model.json', replace('model.json', '{"format": "layers-model", "modelTop'), /model\.json is not JSON/],
      ['a graph model', editJson((j) => (j.format = 'graph-model')), /layers-model/],
      ['no Tessera metadata', editJson((j) => delete j.userDefinedMetadata), /Tessera metadata/],
      ['no weights manifest', editJson((j) => delete j.weightsManifest), /weightsManifest/],
      ['a weight the topology lacks', editJson((j) => (j.weightsManifest[0].weights[0].name = 'other/kernel')), /layers model/],
      ['a topology that is no model', editJson((j) => (j.modelTopology = { model_config: { class_name: 'Nonsense', config: {} } })), /model\.json/],
    ];
    for (const [what, broken, message] of cases) {
      it(`refuses ${what} with ModelLoadError`, async () => {
        const e = await rejection(loadTfjs(memoryReader(broken)));
        expect(e, e.stack).to.be.instanceOf(ModelLoadError);
        expect(e.message).to.match(message);
      });
    }

    it('refuses a missing or damaged vocabulary', async () => {
      const ids = writeTfjs(ctr, 'none').files;
      const missing = await rejection(loadTfjs(memoryReader(ids.filter((f) => f.path !== 'vocabulary.bin'))));
      expect(missing).to.be.instanceOf(ModelLoadError);
      expect(missing.message).to.match(/vocabulary\.bin/);
      const short = ids.map((f) => (f.path === 'vocabulary.bin' ? { path: f.path, bytes: f.bytes.subarray(0, 16) } : f));
      expect(await rejection(loadTfjs(memoryReader(short)))).to.be.instanceOf(ModelLoadError);
    });
  });

  it('refuses input of the wrong type or length with InvalidArgumentError', async () => {
    const f = await loadTfjs(memoryReader(writeTfjs(mixed, 'none').files));
    const i = await loadTfjs(memoryReader(writeTfjs(ctr, 'none').files));
    try {
      const wrongLength = await rejection(f.run(new Float32Array(39), 2));
      expect(wrongLength).to.be.instanceOf(InvalidArgumentError);
      expect(wrongLength.message).to.match(/40/).and.match(/39/);
      const wrongType = await rejection(f.run(new BigInt64Array(40), 2));
      expect(wrongType).to.be.instanceOf(InvalidArgumentError);
      expect(wrongType.message).to.match(/FP32/).and.match(/BigInt64Array/);
      expect(await rejection(i.run(new Float32Array(6), 2))).to.be.instanceOf(InvalidArgumentError);
      expect(await rejection(i.run(new BigInt64Array(5), 2))).to.be.instanceOf(InvalidArgumentError);
      expect(await f.run(new Float32Array(0), 0)).to.have.length(0);
    } finally {
      await f.close();
      await i.close();
    }
  });

  it('leaks no tensors across 100 runs, and none after close', async () => {
    const before = tf.memory().numTensors;
    const f = await loadTfjs(memoryReader(writeTfjs(mixed, 'int8').files));
    const i = await loadTfjs(memoryReader(writeTfjs(ctr, 'fp16').files));
    const loaded = tf.memory().numTensors;
    const x = randomFeatures(12, 4 * 20);
    const ids = idRequests(ctr, 4);
    for (let n = 0; n < 100; n++) {
      await f.run(x, 4);
      await i.run(ids, 4);
    }
    await rejection(f.run(x, 3)); // a failed run leaks nothing either
    expect(tf.memory().numTensors).to.equal(loaded);
    await f.close();
    await i.close();
    expect(tf.memory().numTensors).to.equal(before);
  });
});
