import { expect } from 'chai';
import { NotReadyError, ResourceExhaustedError } from '../../../cluster/errors.js';
import { ModelNotFoundError } from '../../../serving/errors.js';
import type { LoadedModel, TensorSignature } from '../../../serving/runtime/runtime.js';
import {
  decodeGrpcInfer,
  decodeJsonInfer,
  decodePredict,
  encodeJsonInfer,
  encodePredict,
  modelMetadata,
  resolveVersion,
  serverMetadata,
  type GrpcInferRequest,
} from '../../../serving/serve/inference-request.js';
import type { ServedVersion } from '../../../serving/serve/served-version.js';
import { expectInvalid } from '../../helpers/expect-errors.js';

function model(datatype: 'FP32' | 'INT64', width = 3, format: 'onnx' | 'tfjs' = 'onnx'): LoadedModel {
  const input: TensorSignature = { name: 'x', datatype, width };
  return { format, input, output: { name: 'y', datatype: 'FP32', width: 2 }, run: async () => new Float32Array(0), close: async () => {} };
}
const FP32 = model('FP32');
const INT64 = model('INT64', 2);
const MAX_ROWS = 4;

function expectThrows(f: () => unknown, type: new (...a: never[]) => Error, message: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err, `expected a ${type.name}`).to.be.instanceOf(type);
  expect((err as Error).message).to.match(message);
}

const json = (tensor: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ inputs: [tensor], ...extra });
const grpcReq = (tensor: Record<string, unknown>, raw: Uint8Array[] = []): GrpcInferRequest =>
  ({ modelName: 'm', modelVersion: '', id: '', inputs: [tensor], outputs: [], rawInputContents: raw }) as unknown as GrpcInferRequest;

describe('serving/serve inference-request', () => {
  describe('versions', () => {
    const served: ServedVersion = { name: 'm', version: 3, model: FP32 };
    it('resolves the current version, named or not', () => {
      expect(resolveVersion('m', served, 'm')).to.equal(served);
      expect(resolveVersion('m', served, 'm', '')).to.equal(served);
      expect(resolveVersion('m', served, 'm', '3')).to.equal(served);
    });
    it('refuses another model, another version, and nothing loaded', () => {
      expectThrows(() => resolveVersion('m', served, 'other'), ModelNotFoundError, /model "other" is not served here; this server serves "m"/);
      expectThrows(() => resolveVersion('m', served, 'm', '2'), ModelNotFoundError, /version "2" .* not served; the served version is 3/);
      expectThrows(() => resolveVersion('m', undefined, 'm'), NotReadyError, /no version loaded/);
    });
  });

  describe('metadata', () => {
    it('names the server and describes the model with [-1, width] shapes and its platform', () => {
      expect(serverMetadata()).to.include({ name: 'tessera' }).and.to.have.property('extensions').that.deep.equals([]);
      expect(serverMetadata().version).to.match(/^\d+\.\d+\.\d+/);
      expect(modelMetadata('m', { name: 'm', version: 3, model: FP32 })).to.deep.equal({
        name: 'm',
        versions: ['3'],
        platform: 'onnx',
        inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3] }],
        outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 2] }],
      });
      expect(modelMetadata('m', { name: 'm', version: 1, model: model('FP32', 3, 'tfjs') }).platform).to.equal('tensorflowjs');
    });
  });

  describe('JSON (Open Inference Protocol)', () => {
    it('takes flat and nested data, [n, width] and [width] shapes, and echoes the id', () => {
      const flat = decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [2, 3], data: [1, 2, 3, 4, 5, 6] }, { id: 'r1' }), FP32, MAX_ROWS);
      expect(flat.id).to.equal('r1');
      expect(flat.input.rows).to.equal(2);
      expect(Array.from(flat.input.data as Float32Array)).to.deep.equal([1, 2, 3, 4, 5, 6]);
      const nested = decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [2, 3], data: [[1, 2, 3], [4, 5, 6]] }), FP32, MAX_ROWS);
      expect(Array.from(nested.input.data as Float32Array)).to.deep.equal([1, 2, 3, 4, 5, 6]);
      expect(nested.id).to.equal(undefined);
      const one = decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [3], data: [1, 2, 3] }), FP32, MAX_ROWS);
      expect(one.input.rows).to.equal(1);
    });

    it('takes INT64 as integers and as decimal strings, exactly', () => {
      const r = decodeJsonInfer(json({ name: 'x', datatype: 'INT64', shape: [2, 2], data: [1, '9223372036854775807', -3, '-9223372036854775808'] }), INT64, MAX_ROWS);
      expect(r.input.data).to.be.instanceOf(BigInt64Array);
      expect(Array.from(r.input.data as BigInt64Array)).to.deep.equal([1n, 9223372036854775807n, -3n, -9223372036854775808n]);
    });

    it('refuses a body that is not an object, a wrong number of inputs, and a wrong input name, naming the expected one', () => {
      expectInvalid(() => decodeJsonInfer([1], FP32, MAX_ROWS), /must be a JSON object/);
      expectInvalid(() => decodeJsonInfer({}, FP32, MAX_ROWS), /exactly one input tensor, "x"; the request has no inputs array/);
      expectInvalid(() => decodeJsonInfer({ inputs: [] }, FP32, MAX_ROWS), /exactly one input tensor, "x"; the request has 0 inputs/);
      expectInvalid(() => decodeJsonInfer({ inputs: [{}, {}] }, FP32, MAX_ROWS), /has 2 inputs/);
      expectInvalid(() => decodeJsonInfer({ inputs: [7] }, FP32, MAX_ROWS), /input 0 is 7/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'features', datatype: 'FP32', shape: [3], data: [1, 2, 3] }), FP32, MAX_ROWS), /input "features" is unknown; this model's one input is named "x"/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [3], data: [1, 2, 3] }, { id: 5 }), FP32, MAX_ROWS), /"id" must be a string/);
      expectInvalid(() => decodeJsonInfer(json({ datatype: 'FP32', shape: [3], data: [1, 2, 3] }), FP32, MAX_ROWS), /the input has no name; this model's one input is named "x"/);
    });

    it('refuses the wrong datatype, saying which is expected', () => {
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP64', shape: [3], data: [1, 2, 3] }), FP32, MAX_ROWS), /datatype "FP64"; this model takes FP32/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [2], data: [1, 2] }), INT64, MAX_ROWS), /datatype "FP32"; this model takes INT64/);
    });

    it('refuses wrong shapes, no rows, and data that does not match the shape', () => {
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [2, 4], data: [] }), FP32, MAX_ROWS), /shape \[2, 4\]; this model takes \[n, 3\] \(or \[3\] for one example\)/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [1, 1, 3], data: [1, 2, 3] }), FP32, MAX_ROWS), /shape \[1, 1, 3\]/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', data: [1, 2, 3] }), FP32, MAX_ROWS), /has no shape/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [1.5, 3], data: [] }), FP32, MAX_ROWS), /dimension 1.5; dimensions are non-negative integers/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [0, 3], data: [] }), FP32, MAX_ROWS), /no examples/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [2, 3], data: [1, 2, 3, 4, 5] }), FP32, MAX_ROWS), /has 5 values; shape \[2, 3\] needs 6/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3, 4] }), FP32, MAX_ROWS), /has 4 values; shape \[1, 3\] needs 3/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [1, 3] }), FP32, MAX_ROWS), /no "data" array/);
      expectInvalid(() => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [1, 3], data: [[[1, 2, 3]]] }), FP32, MAX_ROWS), /more than two levels deep/);
    });

    it('refuses more rows than maxRows with ResourceExhaustedError naming the limit', () => {
      expectThrows(
        () => decodeJsonInfer(json({ name: 'x', datatype: 'FP32', shape: [5, 3], data: new Array(15).fill(0) }), FP32, MAX_ROWS),
        ResourceExhaustedError,
        /5 rows; this server takes at most 4 per request \(its maxRows option\)/,
      );
    });

    it('refuses values of the wrong kind', () => {
      const fp = (v: unknown) => json({ name: 'x', datatype: 'FP32', shape: [3], data: [1, v, 3] });
      expectInvalid(() => decodeJsonInfer(fp('2'), FP32, MAX_ROWS), /value 1 of input "x" is "2"; FP32 values are numbers/);
      expectInvalid(() => decodeJsonInfer(fp(null), FP32, MAX_ROWS), /value 1 .* is null/);
      expectInvalid(() => decodeJsonInfer(fp(1e39), FP32, MAX_ROWS), /beyond FP32's range/);
      const int = (v: unknown) => json({ name: 'x', datatype: 'INT64', shape: [2], data: [1, v] });
      expectInvalid(() => decodeJsonInfer(int(1.5), INT64, MAX_ROWS), /\(1.5\) is not an integer of at most 2\^53 .* decimal strings/);
      expectInvalid(() => decodeJsonInfer(int(2 ** 60), INT64, MAX_ROWS), /not an integer of at most 2\^53/);
      expectInvalid(() => decodeJsonInfer(int('9223372036854775808'), INT64, MAX_ROWS), /outside INT64's range/);
      expectInvalid(() => decodeJsonInfer(int('1e3'), INT64, MAX_ROWS), /INT64 values are integers or decimal strings/);
      expectInvalid(() => decodeJsonInfer(int(true), INT64, MAX_ROWS), /is true; INT64 values/);
    });

    it('checks requested outputs against the model’s one output', () => {
      const body = (outputs: unknown) => json({ name: 'x', datatype: 'FP32', shape: [3], data: [1, 2, 3] }, { outputs });
      expect(decodeJsonInfer(body([{ name: 'y' }]), FP32, MAX_ROWS).input.rows).to.equal(1);
      expectInvalid(() => decodeJsonInfer(body([{ name: 'z' }]), FP32, MAX_ROWS), /output "z" is not this model's; its one output is named "y"/);
      expectInvalid(() => decodeJsonInfer(body('y'), FP32, MAX_ROWS), /"outputs" must be a list/);
    });

    it('answers with model name, version, id and an FP32 [n, width] output', () => {
      const result = { served: { name: 'm', version: 7, model: FP32 }, rows: 2, output: Float32Array.of(1, 2, 3, 0.5) };
      expect(encodeJsonInfer('m', result, 'r1')).to.deep.equal({ model_name: 'm', model_version: '7', id: 'r1', outputs: [{ name: 'y', datatype: 'FP32', shape: [2, 2], data: [1, 2, 3, 0.5] }] });
      expect(encodeJsonInfer('m', result)).to.not.have.property('id');
    });
  });

  describe('JSON (TensorFlow Serving predict)', () => {
    it('takes instances (plain or named) and columnar inputs (plain or named)', () => {
      for (const body of [{ instances: [[1, 2, 3], [4, 5, 6]] }, { instances: [{ x: [1, 2, 3] }, { x: [4, 5, 6] }] }, { inputs: [[1, 2, 3], [4, 5, 6]] }, { inputs: { x: [[1, 2, 3], [4, 5, 6]] } }]) {
        const r = decodePredict(body, FP32, MAX_ROWS);
        expect(r.input.rows).to.equal(2);
        expect(Array.from(r.input.data as Float32Array)).to.deep.equal([1, 2, 3, 4, 5, 6]);
        expect(r.columnar).to.equal('inputs' in body);
      }
      expect(Array.from(decodePredict({ instances: [['5', 6]] }, INT64, MAX_ROWS).input.data as BigInt64Array)).to.deep.equal([5n, 6n]);
    });

    it('refuses what TensorFlow Serving would', () => {
      expectInvalid(() => decodePredict('x', FP32, MAX_ROWS), /must be a JSON object/);
      expectInvalid(() => decodePredict({}, FP32, MAX_ROWS), /exactly one of "instances" \(rows\) or "inputs" \(columns\)/);
      expectInvalid(() => decodePredict({ instances: [], inputs: [] }, FP32, MAX_ROWS), /exactly one of/);
      expectInvalid(() => decodePredict({ instances: [] }, FP32, MAX_ROWS), /"instances" must be a non-empty list of rows of 3 values/);
      expectInvalid(() => decodePredict({ instances: [[1, 2]] }, FP32, MAX_ROWS), /instances\[0\] must be a list of 3 values .*; got 2 values/);
      expectInvalid(() => decodePredict({ instances: [{ z: [1, 2, 3] }] }, FP32, MAX_ROWS), /instances\[0\] names "z"; this model's one input is "x"/);
      expectInvalid(() => decodePredict({ inputs: { z: [[1, 2, 3]] } }, FP32, MAX_ROWS), /"inputs" names "z"; this model's one input is "x"/);
      expectInvalid(() => decodePredict({ instances: [[1, 'a', 3]] }, FP32, MAX_ROWS), /FP32 values are numbers/);
      expectInvalid(() => decodePredict({ signature_name: 'other', instances: [[1, 2, 3]] }, FP32, MAX_ROWS), /signature_name "other" is unknown/);
      expectThrows(() => decodePredict({ instances: new Array(5).fill([1, 2, 3]) }, FP32, MAX_ROWS), ResourceExhaustedError, /at most 4 per request \(its maxRows option\)/);
    });

    it('answers predictions for rows and outputs for columns', () => {
      const result = { served: { name: 'm', version: 7, model: FP32 }, rows: 2, output: Float32Array.of(1, 2, 3, 4) };
      expect(encodePredict(result, false)).to.deep.equal({ predictions: [[1, 2], [3, 4]] });
      expect(encodePredict(result, true)).to.deep.equal({ outputs: [[1, 2], [3, 4]] });
    });
  });

  describe('gRPC', () => {
    it('takes fp32_contents and int64_contents (exact, as decimal strings)', () => {
      const fp = decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'FP32', shape: ['2', '3'], contents: { fp32Contents: [1, 2, 3, 4, 5, 6] } }), FP32, MAX_ROWS);
      expect(fp.rows).to.equal(2);
      expect(Array.from(fp.data as Float32Array)).to.deep.equal([1, 2, 3, 4, 5, 6]);
      const int = decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'INT64', shape: ['1', '2'], contents: { int64Contents: ['9223372036854775807', '-2'] } }), INT64, MAX_ROWS);
      expect(Array.from(int.data as BigInt64Array)).to.deep.equal([9223372036854775807n, -2n]);
    });

    it('takes little-endian raw_input_contents at any alignment and copies them to aligned memory', () => {
      const values = Float32Array.of(1.5, -2, 3, 4, 5, 6);
      const backing = Buffer.alloc(values.byteLength + 1);
      Buffer.from(values.buffer).copy(backing, 1);
      const raw = backing.subarray(1); // odd offset, as received buffers may be
      const r = decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'FP32', shape: ['2', '3'], contents: null }, [raw]), FP32, MAX_ROWS);
      expect(r.data.byteOffset % 4).to.equal(0);
      expect(Array.from(r.data as Float32Array)).to.deep.equal(Array.from(values));
      const ids = BigInt64Array.of(7n, -(2n ** 63n));
      const int = decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'INT64', shape: ['2'], contents: null }, [Buffer.from(ids.buffer)]), INT64, MAX_ROWS);
      expect(Array.from(int.data as BigInt64Array)).to.deep.equal([7n, -(2n ** 63n)]);
    });

    it('refuses wrong names, datatypes, shapes, sizes and mixed contents', () => {
      expectInvalid(() => decodeGrpcInfer(grpcReq({ name: 'z', datatype: 'FP32', shape: ['3'], contents: null }), FP32, MAX_ROWS), /input "z" is unknown; this model's one input is named "x"/);
      expectInvalid(() => decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'INT64', shape: ['3'], contents: null }), FP32, MAX_ROWS), /datatype "INT64"; this model takes FP32/);
      expectInvalid(() => decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'FP32', shape: ['2', '2'], contents: null }), FP32, MAX_ROWS), /shape \[2, 2\]; this model takes \[n, 3\]/);
      expectInvalid(() => decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'FP32', shape: ['-1', '3'], contents: null }), FP32, MAX_ROWS), /dimension "-1"/);
      expectInvalid(() => decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'FP32', shape: ['2', '3'], contents: { fp32Contents: [1, 2, 3] } }), FP32, MAX_ROWS), /has 3 values in fp32_contents; shape \[2, 3\] needs 6/);
      expectInvalid(() => decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'FP32', shape: ['1', '3'], contents: { fp64Contents: [1, 2, 3] } }), FP32, MAX_ROWS), /send its values in fp32_contents \(or raw_input_contents\), not in fp64_contents/);
      expectInvalid(() => decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'INT64', shape: ['1', '2'], contents: { intContents: [1, 2] } }), INT64, MAX_ROWS), /send its values in int64_contents .* not in int_contents/);
      expectInvalid(() => decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'FP32', shape: ['1', '3'], contents: null }, [Buffer.alloc(8)]), FP32, MAX_ROWS), /raw_input_contents\[0\] has 8 bytes; 1 × 3 FP32 values need 12/);
      expectInvalid(() => decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'FP32', shape: ['1', '3'], contents: null }, [Buffer.alloc(12), Buffer.alloc(12)]), FP32, MAX_ROWS), /raw_input_contents has 2 entries/);
      expectInvalid(() => decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'FP32', shape: ['1', '3'], contents: { fp32Contents: [1, 2, 3] } }, [Buffer.alloc(12)]), FP32, MAX_ROWS), /both contents and raw_input_contents/);
      expectThrows(() => decodeGrpcInfer(grpcReq({ name: 'x', datatype: 'FP32', shape: ['5', '3'], contents: null }), FP32, MAX_ROWS), ResourceExhaustedError, /at most 4/);
      const twoInputs = { ...grpcReq({ name: 'x', datatype: 'FP32', shape: ['3'] }), inputs: [{}, {}] } as unknown as GrpcInferRequest;
      expectInvalid(() => decodeGrpcInfer(twoInputs, FP32, MAX_ROWS), /exactly one input tensor, "x"; the request has 2 inputs/);
      const wrongOutput = { ...grpcReq({ name: 'x', datatype: 'FP32', shape: ['3'] }), outputs: [{ name: 'q' }] } as unknown as GrpcInferRequest;
      expectInvalid(() => decodeGrpcInfer(wrongOutput, FP32, MAX_ROWS), /output "q" is not this model's; its one output is named "y"/);
    });
  });
});
