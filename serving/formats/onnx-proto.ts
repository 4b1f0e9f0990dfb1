import protobuf from 'protobufjs';

/**
 * The subset of ONNX's protobuf schema (onnx/onnx.proto, IR version 8) that
 * Tessera writes (onnx-writer.ts) and reads (runtime/onnx-runtime.ts),
 * defined in code with protobufjs. Field numbers are onnx.proto's; fields
 * outside the subset are skipped when decoding. onnx.proto is proto2: only
 * TensorProto's float_data and int64_data are packed.
 *
 * Messages are plain objects. Every int64 field is a `bigint` (ids, dims and
 * keys are exact over the whole int64 range); int32 and enum fields are
 * numbers; bytes fields are Uint8Arrays (after decoding, views into the
 * decoded buffer).
 */

/** TensorProto.DataType: the element types Tessera uses. */
export const DataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  INT8: 3,
  INT64: 7,
  FLOAT16: 10,
} as const;

/** AttributeProto.AttributeType: the kinds Tessera uses. */
export const AttributeType = {
  UNDEFINED: 0,
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  FLOATS: 6,
  INTS: 7,
} as const;

export interface ModelProto {
  irVersion?: bigint;
  opsetImport?: OperatorSetIdProto[];
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: bigint;
  docString?: string;
  graph?: GraphProto;
  metadataProps?: StringStringEntryProto[];
}

export interface OperatorSetIdProto {
  /** "" (or absent) for the default ai.onnx domain. */
  domain?: string;
  version?: bigint;
}

export interface GraphProto {
  node?: NodeProto[];
  name?: string;
  initializer?: TensorProto[];
  docString?: string;
  input?: ValueInfoProto[];
  output?: ValueInfoProto[];
  valueInfo?: ValueInfoProto[];
}

export interface NodeProto {
  input?: string[];
  output?: string[];
  name?: string;
  opType?: string;
  attribute?: AttributeProto[];
  docString?: string;
  domain?: string;
}

export interface AttributeProto {
  name?: string;
  f?: number;
  i?: bigint;
  s?: Uint8Array;
  t?: TensorProto;
  floats?: number[];
  ints?: bigint[];
  /** An AttributeType value: which of the fields above holds the value. */
  type?: number;
}

export interface TensorProto {
  dims?: bigint[];
  /** A DataType value. */
  dataType?: number;
  floatData?: number[];
  int64Data?: bigint[];
  name?: string;
  /** Values in little-endian byte order. */
  rawData?: Uint8Array;
}

export interface ValueInfoProto {
  name?: string;
  type?: TypeProto;
}

export interface TypeProto {
  tensorType?: TypeProtoTensor;
}

export interface TypeProtoTensor {
  /** A DataType value. */
  elemType?: number;
  shape?: TensorShapeProto;
}

export interface TensorShapeProto {
  dim?: TensorShapeDimension[];
}

/** One of dimValue (a fixed size) and dimParam (a symbolic one), or neither (unknown). */
export interface TensorShapeDimension {
  dimValue?: bigint;
  dimParam?: string;
}

export interface StringStringEntryProto {
  key?: string;
  value?: string;
}

const packed = { packed: true };
const expanded = { packed: false };

const SCHEMA = {
  nested: {
    onnx: {
      nested: {
        ModelProto: {
          fields: {
            irVersion: { type: 'int64', id: 1 },
            opsetImport: { rule: 'repeated', type: 'OperatorSetIdProto', id: 8 },
            producerName: { type: 'string', id: 2 },
            producerVersion: { type: 'string', id: 3 },
            domain: { type: 'string', id: 4 },
            modelVersion: { type: 'int64', id: 5 },
            docString: { type: 'string', id: 6 },
            graph: { type: 'GraphProto', id: 7 },
            metadataProps: { rule: 'repeated', type: 'StringStringEntryProto', id: 14 },
          },
        },
        OperatorSetIdProto: {
          fields: {
            domain: { type: 'string', id: 1 },
            version: { type: 'int64', id: 2 },
          },
        },
        GraphProto: {
          fields: {
            node: { rule: 'repeated', type: 'NodeProto', id: 1 },
            name: { type: 'string', id: 2 },
            initializer: { rule: 'repeated', type: 'TensorProto', id: 5 },
            docString: { type: 'string', id: 10 },
            input: { rule: 'repeated', type: 'ValueInfoProto', id: 11 },
            output: { rule: 'repeated', type: 'ValueInfoProto', id: 12 },
            valueInfo: { rule: 'repeated', type: 'ValueInfoProto', id: 13 },
          },
        },
        NodeProto: {
          fields: {
            input: { rule: 'repeated', type: 'string', id: 1 },
            output: { rule: 'repeated', type: 'string', id: 2 },
            name: { type: 'string', id: 3 },
            opType: { type: 'string', id: 4 },
            attribute: { rule: 'repeated', type: 'AttributeProto', id: 5 },
            docString: { type: 'string', id: 6 },
            domain: { type: 'string', id: 7 },
          },
        },
        AttributeProto: {
          fields: {
            name: { type: 'string', id: 1 },
            f: { type: 'float', id: 2 },
            i: { type: 'int64', id: 3 },
            s: { type: 'bytes', id: 4 },
            t: { type: 'TensorProto', id: 5 },
            floats: { rule: 'repeated', type: 'float', id: 7, options: expanded },
            ints: { rule: 'repeated', type: 'int64', id: 8, options: expanded },
            type: { type: 'AttributeType', id: 20 },
          },
          nested: {
            AttributeType: { values: { ...AttributeType } },
          },
        },
        TensorProto: {
          fields: {
            dims: { rule: 'repeated', type: 'int64', id: 1, options: expanded },
            dataType: { type: 'int32', id: 2 },
            floatData: { rule: 'repeated', type: 'float', id: 4, options: packed },
            int64Data: { rule: 'repeated', type: 'int64', id: 7, options: packed },
            name: { type: 'string', id: 8 },
            rawData: { type: 'bytes', id: 9 },
          },
        },
        ValueInfoProto: {
          fields: {
            name: { type: 'string', id: 1 },
            type: { type: 'TypeProto', id: 2 },
          },
        },
        TypeProto: {
          oneofs: { value: { oneof: ['tensorType'] } },
          fields: {
            tensorType: { type: 'Tensor', id: 1 },
          },
          nested: {
            Tensor: {
              fields: {
                elemType: { type: 'int32', id: 1 },
                shape: { type: 'TensorShapeProto', id: 2 },
              },
            },
          },
        },
        TensorShapeProto: {
          fields: {
            dim: { rule: 'repeated', type: 'Dimension', id: 1 },
          },
          nested: {
            Dimension: {
              oneofs: { value: { oneof: ['dimValue', 'dimParam'] } },
              fields: {
                dimValue: { type: 'int64', id: 1 },
                dimParam: { type: 'string', id: 2 },
              },
            },
          },
        },
        StringStringEntryProto: {
          fields: {
            key: { type: 'string', id: 1 },
            value: { type: 'string', id: 2 },
          },
        },
      },
    },
  },
};

const root = protobuf.Root.fromJSON(SCHEMA);
root.resolveAll();
const ModelType = root.lookupType('onnx.ModelProto');
const TensorType = root.lookupType('onnx.TensorProto');

/** The protobufjs message types, by name (e.g. "onnx.GraphProto"), for tests and tools. */
export function onnxType(name: string): protobuf.Type {
  return root.lookupType(name);
}

const INT64_TYPES = new Set(['int64', 'sint64', 'sfixed64']);

/** protobufjs's form of an int64: its writer reads a Long-like object's low and high words. */
function toLong(v: bigint): protobuf.Long {
  const u = BigInt.asUintN(64, v);
  return { low: Number(u & 0xffffffffn) | 0, high: Number(u >> 32n) | 0, unsigned: false };
}

/** A decoded int64 (a Long, or a number where protobufjs has none) as a bigint. */
function fromLong(v: unknown): bigint {
  if (typeof v === 'number') return BigInt(v);
  if (typeof v === 'string') return BigInt(v);
  const l = v as { low: number; high: number };
  return BigInt.asIntN(64, (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0));
}

/**
 * A message of ours as protobufjs takes it (int64s as Longs), or a decoded
 * one as ours (int64s as bigints, only the fields present, repeated fields
 * always arrays).
 */
function convert(type: protobuf.Type, msg: Record<string, unknown>, int64: (v: unknown) => unknown, decoding: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    const v = msg[field.name];
    if (v === undefined || v === null) {
      if (decoding && field.repeated) out[field.name] = [];
      continue;
    }
    if (decoding && !field.repeated && !Object.prototype.hasOwnProperty.call(msg, field.name)) continue; // a default, not present
    const one = (x: unknown): unknown => {
      if (field.resolvedType instanceof protobuf.Type) return convert(field.resolvedType, x as Record<string, unknown>, int64, decoding);
      if (INT64_TYPES.has(field.type)) return int64(x);
      return x;
    };
    out[field.name] = field.repeated ? (v as unknown[]).map(one) : one(v);
  }
  return out;
}

/** The bytes of a model; the same message gives the same bytes. */
export function encodeModel(model: ModelProto): Uint8Array {
  const msg = convert(ModelType, model as Record<string, unknown>, (v) => toLong(v as bigint), false);
  return ModelType.encode(msg).finish();
}

/**
 * A model from its bytes: the fields of the subset that are present.
 * @throws Error (protobufjs's) when the bytes are not a valid protobuf message.
 */
export function decodeModel(bytes: Uint8Array): ModelProto {
  const msg = ModelType.decode(bytes) as unknown as Record<string, unknown>;
  return convert(ModelType, msg, fromLong, true) as ModelProto;
}

/** One tensor's bytes (a TensorProto message on its own, as in a .pb file of ONNX's test data). */
export function encodeTensor(tensor: TensorProto): Uint8Array {
  const msg = convert(TensorType, tensor as Record<string, unknown>, (v) => toLong(v as bigint), false);
  return TensorType.encode(msg).finish();
}

export function decodeTensor(bytes: Uint8Array): TensorProto {
  const msg = TensorType.decode(bytes) as unknown as Record<string, unknown>;
  return convert(TensorType, msg, fromLong, true) as TensorProto;
}
