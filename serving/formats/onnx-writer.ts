import { quantizeFp16, quantizeInt8 } from '../compress/quantize.js';
import { ExportError } from '../errors.js';
import { type DenseLayer, type IdsInput, type ModelGraph, type Quantization, QUANTIZATIONS } from '../model/model-graph.js';
import { type FormatOutput } from './format.js';
import { type AttributeProto, AttributeType, DataType, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto, encodeModel } from './onnx-proto.js';

/**
 * A ModelGraph as one ONNX file, `model.onnx` (IR version 8, opset ai.onnx
 * 13, and ai.onnx.ml 2 for id lookups), which onnxruntime runs as written:
 *
 *   features [batch, F] ─┐
 *   ids [batch, fields] ─ LabelEncoder ─ Reshape[-1] ─ Gather(table) ─ Reshape[-1, fields·dim] ─┤
 *                                                                                               ├─ MatMul ─ Add ─ Relu|Sigmoid|Tanh|Softmax(−1) ─ … ─ output [batch, units]
 *
 * Weights are initializers: float32 ('none'); float16, each followed by a
 * Cast to float ('fp16'); or int8 with a float scale per output unit and a
 * zero point of zeros, followed by DequantizeLinear(axis 1) ('int8'; biases
 * stay float32). What onnxruntime computes with is exactly what
 * serving/compress/quantize.ts's dequantize functions give.
 */

export const ONNX_FILE = 'model.onnx';
export const ONNX_IR_VERSION = 8;
export const ONNX_OPSET = 13;
export const ONNX_ML_OPSET = 2;
const ML_DOMAIN = 'ai.onnx.ml';

/** protobuf messages (and so ONNX files without external data) stop at 2 GiB. */
const MAX_BYTES = 2 ** 31 - 1;

const ACTIVATION_OPS: Record<DenseLayer['activation'], string | null> = {
  linear: null,
  relu: 'Relu',
  sigmoid: 'Sigmoid',
  tanh: 'Tanh',
  softmax: 'Softmax',
};

/**
 * Writes `graph` as `model.onnx`, its weights stored as `quantize` says and
 * `metadata` in the model's metadata_props. The same arguments give the same
 * bytes.
 * @throws ExportError when the graph is inconsistent (widths, lengths, unsorted ids, a name used twice) or too large for one ONNX file.
 */
export function writeOnnx(graph: ModelGraph, quantize: Quantization, metadata: Record<string, string> = {}): FormatOutput {
  if (!QUANTIZATIONS.includes(quantize)) throw new ExportError(`unknown quantization "${String(quantize)}": expected one of ${QUANTIZATIONS.join(', ')}`);
  check(graph);
  const b = new GraphBuilder();
  const storage: Record<string, string> = {};

  let x: string;
  if (graph.input.kind === 'features') {
    b.inputs.push(valueInfo(graph.input.name, DataType.FLOAT, graph.input.features));
    x = graph.input.name;
  } else {
    b.inputs.push(valueInfo(graph.input.name, DataType.INT64, graph.input.fields));
    x = lookUp(b, graph.input, quantize, storage);
  }

  graph.layers.forEach((l, i) => {
    const at = `layer${i + 1}`;
    const w = weight(b, l, quantize, storage);
    x = b.node('MatMul', [x, w], `${at}/matmul`);
    if (l.bias) {
      let bias = l.biasName!;
      if (quantize === 'fp16') {
        b.initializer(half(bias, [l.units], quantizeFp16(l.bias)));
        bias = b.node('Cast', [bias], `${bias}/float`, [intAttr('to', DataType.FLOAT)]);
        storage[l.biasName!] = 'float16';
      } else {
        b.initializer(float32(bias, [l.units], l.bias));
        storage[l.biasName!] = 'float32';
      }
      x = b.node('Add', [x, bias], `${at}/add`);
    }
    const op = ACTIVATION_OPS[l.activation];
    if (op === 'Softmax') x = b.node(op, [x], `${at}/softmax`, [intAttr('axis', -1)]);
    else if (op) x = b.node(op, [x], `${at}/${l.activation}`);
  });
  // The last node's result is the response tensor: nothing reads it under its working name.
  b.nodes[b.nodes.length - 1]!.output = [graph.output.name];
  b.outputs.push(valueInfo(graph.output.name, DataType.FLOAT, graph.layers[graph.layers.length - 1]!.units));
  b.checkNames();

  const opsets = [{ domain: '', version: BigInt(ONNX_OPSET) }];
  if (b.nodes.some((n) => n.domain === ML_DOMAIN)) opsets.push({ domain: ML_DOMAIN, version: BigInt(ONNX_ML_OPSET) });
  const model: ModelProto = {
    irVersion: BigInt(ONNX_IR_VERSION),
    opsetImport: opsets,
    producerName: 'tessera',
    graph: { name: graph.name, node: b.nodes, initializer: b.initializers, input: b.inputs, output: b.outputs },
    // Sorted, so that the same entries give the same bytes whatever order they were added in.
    metadataProps: Object.keys(metadata)
      .sort()
      .map((key) => ({ key, value: String(metadata[key]) })),
  };
  if (b.bytes > MAX_BYTES) {
    throw new ExportError(`model ${graph.name} holds ${b.bytes} bytes of weights with quantization ${quantize}; an ONNX file holds at most 2 GiB: quantize further (fp16, int8) or export tfjs`);
  }
  return { format: 'onnx', files: [{ path: ONNX_FILE, bytes: encodeModel(model) }], storage };
}

/** The layer's weight as stored, and the name of the float32 tensor MatMul reads. */
function weight(b: GraphBuilder, l: DenseLayer, quantize: Quantization, storage: Record<string, string>): string {
  const name = l.weightName;
  const dims = [l.inputs, l.units];
  switch (quantize) {
    case 'none':
      b.initializer(float32(name, dims, l.weight));
      storage[name] = 'float32';
      return name;
    case 'fp16':
      b.initializer(half(name, dims, quantizeFp16(l.weight)));
      storage[name] = 'float16';
      return b.node('Cast', [name], `${name}/float`, [intAttr('to', DataType.FLOAT)]);
    case 'int8': {
      const q = quantizeInt8(l.weight, l.inputs, l.units, 1);
      b.initializer(int8(name, dims, q.q));
      b.initializer(float32(`${name}/scale`, [l.units], q.scales));
      b.initializer(int8(`${name}/zero_point`, [l.units], new Int8Array(l.units)));
      storage[name] = 'int8, a scale per output unit';
      return b.node('DequantizeLinear', [name, `${name}/scale`, `${name}/zero_point`], `${name}/dequantized`, [intAttr('axis', 1)]);
    }
  }
}

/**
 * The ids' rows, concatenated per example: [batch, fields·dim] float32.
 *
 * LabelEncoder (ai.onnx.ml 2, int64 → int64, exact over all of int64) maps
 * each id to 1 + its row in the table, and an id the table lacks to 0; the
 * stored table has V + 1 rows, row 0 zeros. The indices are flattened to
 * [batch·fields] and only the rows asked for are gathered, and converted
 * (Cast from float16, or DequantizeLinear over axis 0 with the gathered
 * rows' scales), so a request costs the same however large the table is.
 * Row 0 is q = 0 with scale 1 in int8: it reads exactly zero.
 */
function lookUp(b: GraphBuilder, input: IdsInput, quantize: Quantization, storage: Record<string, string>): string {
  const { table, fields } = input;
  const v = table.ids.length;
  const t = table.name;
  const keys = v > 0 ? Array.from(table.ids) : [0n]; // LabelEncoder needs a key: 0 → row 0 is what the default gives anyway
  const values = v > 0 ? keys.map((_, i) => BigInt(i + 1)) : [0n];
  const index = b.node('LabelEncoder', [input.name], `${t}/row_index`, [intsAttr('keys_int64s', keys), intsAttr('values_int64s', values), intAttr('default_int64', 0)], ML_DOMAIN);
  b.initializer(int64(`${t}/flat_shape`, [1], [-1n]));
  const flat = b.node('Reshape', [index, `${t}/flat_shape`], `${t}/row_index_flat`);
  const gather = (from: string, out: string) => b.node('Gather', [from, flat], out, [intAttr('axis', 0)]);

  const dims = [v + 1, table.dim];
  let rows: string;
  switch (quantize) {
    case 'none': {
      const values32 = new Float32Array((v + 1) * table.dim);
      values32.set(table.rows, table.dim);
      b.initializer(float32(t, dims, values32));
      storage[t] = 'float32';
      rows = gather(t, `${t}/rows`);
      break;
    }
    case 'fp16': {
      const bits = new Uint16Array((v + 1) * table.dim);
      bits.set(quantizeFp16(table.rows), table.dim);
      b.initializer(half(t, dims, bits));
      storage[t] = 'float16';
      rows = b.node('Cast', [gather(t, `${t}/rows_fp16`)], `${t}/rows`, [intAttr('to', DataType.FLOAT)]);
      break;
    }
    case 'int8': {
      const q = quantizeInt8(table.rows, v, table.dim, 0);
      const q8 = new Int8Array((v + 1) * table.dim);
      q8.set(q.q, table.dim);
      const scales = new Float32Array(v + 1);
      scales[0] = 1;
      scales.set(q.scales, 1);
      b.initializer(int8(t, dims, q8));
      b.initializer(float32(`${t}/scale`, [v + 1], scales));
      b.initializer(int8(`${t}/zero_point`, [v + 1], new Int8Array(v + 1)));
      storage[t] = 'int8, a scale per row';
      rows = b.node(
        'DequantizeLinear',
        [gather(t, `${t}/rows_int8`), gather(`${t}/scale`, `${t}/row_scale`), gather(`${t}/zero_point`, `${t}/row_zero_point`)],
        `${t}/rows`,
        [intAttr('axis', 0)],
      );
      break;
    }
  }
  b.initializer(int64(`${t}/concat_shape`, [2], [-1n, BigInt(fields * table.dim)]));
  return b.node('Reshape', [rows, `${t}/concat_shape`], `${t}/features`);
}

class GraphBuilder {
  nodes: NodeProto[] = [];
  initializers: TensorProto[] = [];
  inputs: ValueInfoProto[] = [];
  outputs: ValueInfoProto[] = [];
  /** Bytes of tensor data and attributes so far, roughly. */
  bytes = 0;

  /** Adds a node; returns its output's name. */
  node(opType: string, input: string[], output: string, attribute: AttributeProto[] = [], domain?: string): string {
    const n: NodeProto = { input, output: [output], name: output, opType, attribute };
    if (domain) n.domain = domain;
    for (const a of attribute) this.bytes += (a.ints?.length ?? 0) * 10;
    this.nodes.push(n);
    return output;
  }

  initializer(t: TensorProto): void {
    this.bytes += t.rawData?.length ?? 0;
    this.initializers.push(t);
  }

  /** Every tensor has one name and every name one tensor: the model's names must not meet the ones chosen here. */
  checkNames(): void {
    const seen = new Map<string, string>();
    const add = (name: string, what: string) => {
      if (!name) throw new ExportError(`${what} has an empty name`);
      const before = seen.get(name);
      if (before !== undefined) throw new ExportError(`tensor name "${name}" is used by both ${before} and ${what}; ONNX needs each tensor name once: rename one in the model spec`);
      seen.set(name, what);
    };
    for (const i of this.inputs) add(i.name!, 'the input');
    for (const t of this.initializers) add(t.name!, `stored tensor ${t.name}`);
    for (const n of this.nodes) add(n.output![0]!, `the result of ${n.opType} node ${n.name}`);
  }
}

function valueInfo(name: string, elemType: number, width: number): ValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: [{ dimParam: 'batch' }, { dimValue: BigInt(width) }] } } },
  };
}

function intAttr(name: string, i: number): AttributeProto {
  return { name, type: AttributeType.INT, i: BigInt(i) };
}

function intsAttr(name: string, ints: bigint[]): AttributeProto {
  return { name, type: AttributeType.INTS, ints };
}

function tensor(name: string, dims: number[], dataType: number, rawData: Uint8Array): TensorProto {
  return { name, dims: dims.map(BigInt), dataType, rawData };
}

function float32(name: string, dims: number[], values: Float32Array): TensorProto {
  const raw = new Uint8Array(values.length * 4);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true);
  return tensor(name, dims, DataType.FLOAT, raw);
}

function half(name: string, dims: number[], bits: Uint16Array): TensorProto {
  const raw = new Uint8Array(bits.length * 2);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < bits.length; i++) view.setUint16(i * 2, bits[i]!, true);
  return tensor(name, dims, DataType.FLOAT16, raw);
}

function int8(name: string, dims: number[], q: Int8Array): TensorProto {
  return tensor(name, dims, DataType.INT8, new Uint8Array(q.buffer.slice(q.byteOffset, q.byteOffset + q.length)));
}

function int64(name: string, dims: number[], values: bigint[]): TensorProto {
  const raw = new Uint8Array(values.length * 8);
  const view = new DataView(raw.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, v, true));
  return tensor(name, dims, DataType.INT64, raw);
}

/** The graph's shapes fit together, as an ONNX file needs them to. */
function check(g: ModelGraph): void {
  const pos = (n: number) => Number.isInteger(n) && n > 0;
  if (g.layers.length === 0) throw new ExportError(`model ${g.name} has no layers: an ONNX export needs at least one`);
  let width: number;
  if (g.input.kind === 'features') {
    if (!pos(g.input.features)) throw new ExportError(`model ${g.name}: input ${g.input.name} needs a positive number of features, got ${g.input.features}`);
    width = g.input.features;
  } else {
    const { table, fields } = g.input;
    if (!pos(fields) || !pos(table.dim)) throw new ExportError(`model ${g.name}: input ${g.input.name} needs positive fields and table dim, got ${fields} and ${table.dim}`);
    if (table.rows.length !== table.ids.length * table.dim) throw new ExportError(`table ${table.name}: ${table.ids.length} ids of dim ${table.dim} need ${table.ids.length * table.dim} values, got ${table.rows.length}`);
    for (let i = 1; i < table.ids.length; i++) {
      if (!(table.ids[i - 1]! < table.ids[i]!)) throw new ExportError(`table ${table.name}: ids must be ascending and distinct, but ${table.ids[i - 1]} comes before ${table.ids[i]}`);
    }
    width = fields * table.dim;
  }
  g.layers.forEach((l, i) => {
    const what = `model ${g.name}, layer ${i + 1} (${l.weightName})`;
    if (l.inputs !== width) throw new ExportError(`${what} takes ${l.inputs} inputs but the layer before gives ${width}`);
    if (!pos(l.units)) throw new ExportError(`${what} needs a positive number of units, got ${l.units}`);
    if (l.weight.length !== l.inputs * l.units) throw new ExportError(`${what}: a ${l.inputs}×${l.units} weight needs ${l.inputs * l.units} values, got ${l.weight.length}`);
    if (l.bias && l.bias.length !== l.units) throw new ExportError(`${what}: the bias needs ${l.units} values, got ${l.bias.length}`);
    if (l.bias && !l.biasName) throw new ExportError(`${what}: the bias has no name`);
    if (!Object.hasOwn(ACTIVATION_OPS, l.activation)) throw new ExportError(`${what}: unknown activation "${String(l.activation)}"`);
    width = l.units;
  });
}
