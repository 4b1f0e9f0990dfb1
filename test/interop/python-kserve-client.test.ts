import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { expect } from 'chai';
import { protoRoot } from '../../cluster/proto.js';
import type { LoadedModel } from '../../serving/runtime/runtime.js';
import { INFERENCE_PROTO_FILE } from '../../serving/serve/grpc-server.js';
import { initialValues } from '../../cluster/model-spec.js';
import { writeOnnx } from '../../serving/formats/onnx-writer.js';
import { buildGraph } from '../../serving/model/build-graph.js';
import { loadOnnx } from '../../serving/runtime/onnx-runtime.js';
import { mnistMlp } from '../../worker/models/mnist-mlp.js';
import { ModelRepository } from '../../serving/serve/model-repository.js';
import { startModelServer, type ModelServer } from '../../serving/serve/model-server.js';

/*
 * A KServe-style client in another language, built only from
 * proto/inference/grpc_service.proto, talks to `tessera serve`'s gRPC edge:
 * field numbers, int64 shapes, raw little-endian tensors and statuses work
 * for it as for our own client.
 */

/** Debian's interpreter, which has python3-grpcio and python3-grpc-tools; not whatever `python3` is first on PATH. */
const PYTHON = '/usr/bin/python3';
const PYTHON_TIMEOUT_MS = 20_000;
const IN = 5;
const OUT = 2;
const ROWS = 3;

/** The fake model's function of each row, as the Python side must see it. */
function expected(input: ArrayLike<number>, rows: number): number[] {
  const out = new Float32Array(rows * OUT);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < IN; i++) s += input[r * IN + i]! * (i + 1);
    for (let j = 0; j < OUT; j++) out[r * OUT + j] = s * (j + 1) - j;
  }
  return Array.from(out);
}

function fakeModel(): LoadedModel {
  return {
    format: 'tfjs',
    input: { name: 'features', datatype: 'FP32', width: IN },
    output: { name: 'scores', datatype: 'FP32', width: OUT },
    run: async (input, rows) => Float32Array.from(expected(input as Float32Array, rows)),
    close: async () => {},
  };
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  // Asynchronous on purpose: the server answering the script runs in this process.
  return new Promise((resolve, reject) => {
    execFile(PYTHON, args, { env, timeout: PYTHON_TIMEOUT_MS, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${PYTHON} ${args.join(' ')} failed (${err.message.split('\n')[0]}):\n${stderr}`));
      else resolve(stdout);
    });
  });
}

interface Inferred {
  model_name: string;
  model_version: string;
  id: string;
  outputs: { name: string; datatype: string; shape: number[] }[];
  raw_outputs: number;
  values: number[];
}

describe('interop: a Python KServe v2 client generated from proto/inference', function () {
  this.timeout(60_000);
  let server: ModelServer | undefined;
  let stubs: string | undefined;

  before(function () {
    const probe = spawnSync(PYTHON, ['-c', 'import grpc, grpc_tools.protoc'], { encoding: 'utf8', timeout: PYTHON_TIMEOUT_MS });
    if (probe.status !== 0) {
      process.stderr.write(
        `skipping: this test needs ${PYTHON} with gRPC (apt-get install python3-grpcio python3-grpc-tools); ` + `${PYTHON} said: ${(probe.stderr || probe.error?.message || '').trim()}\n`,
      );
      this.skip();
    }
  });

  afterEach(async () => {
    await server?.close();
    await server?.repository.close();
    server = undefined;
    if (stubs) rmSync(stubs, { recursive: true, force: true });
    stubs = undefined;
  });

  it('asks liveness and metadata, infers with raw_input_contents and with contents, and is refused with a status', async () => {
    // Stubs first (protoc runs synchronously, which would stall an in-process server).
    stubs = mkdtempSync(join(tmpdir(), 'tessera-kserve-stubs-'));
    const r = spawnSync(PYTHON, ['-m', 'grpc_tools.protoc', '-I', protoRoot(), `--python_out=${stubs}`, `--grpc_python_out=${stubs}`, INFERENCE_PROTO_FILE], { encoding: 'utf8', timeout: PYTHON_TIMEOUT_MS });
    expect(r.status, `grpc_tools.protoc: ${r.stderr || r.error?.message}`).to.equal(0);
    expect(existsSync(join(stubs, 'inference', 'grpc_service_pb2_grpc.py'))).to.equal(true);
    // A regular package rather than a namespace one, so no other "inference" on sys.path wins.
    writeFileSync(join(stubs, 'inference', '__init__.py'), '');

    const repository = new ModelRepository('ranker');
    await repository.swap({ name: 'ranker', version: 12, model: fakeModel() });
    server = await startModelServer({ grpc: '127.0.0.1:0', source: { repository } });

    const script = join(dirname(protoRoot()), 'test', 'interop', 'kserve_client.py');
    const stdout = await run([script, '--address', server.grpcAddress!, '--model', 'ranker', '--rows', String(ROWS)], { ...process.env, PYTHONPATH: stubs, PYTHONDONTWRITEBYTECODE: '1' });
    const lines = stdout.trim().split('\n');
    expect(lines, `one JSON line, got: ${stdout}`).to.have.length(1);
    const seen = JSON.parse(lines[0]!) as { live: boolean; ready: boolean; metadata: object; raw: Inferred; contents: Inferred; refused: { code: string; details: string } | null };

    expect(seen.live).to.equal(true);
    expect(seen.ready).to.equal(true);
    expect(seen.metadata).to.deep.equal({
      name: 'ranker',
      versions: ['12'],
      platform: 'tensorflowjs',
      inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, IN] }],
      outputs: [{ name: 'scores', datatype: 'FP32', shape: [-1, OUT] }],
    });
    // The script's input: multiples of 1/4, exact in float32.
    const x = Array.from({ length: ROWS * IN }, (_, i) => ((i * 7) % 11) / 4 - 1);
    const want = expected(x, ROWS);
    for (const [key, id] of [['raw', 'py-raw'], ['contents', 'py-contents']] as const) {
      expect(seen[key], key).to.deep.equal({
        model_name: 'ranker',
        model_version: '12',
        id,
        outputs: [{ name: 'scores', datatype: 'FP32', shape: [ROWS, OUT] }],
        raw_outputs: 1,
        values: want,
      });
    }
    expect(seen.refused?.code).to.equal('INVALID_ARGUMENT');
    expect(seen.refused?.details).to.match(/datatype "FP64"; this model takes FP32/);
    expect(server.stats().grpc).to.deep.equal({ requests: 6, errors: 1 });
  });

  it('gets the exported ONNX model’s own outputs for mnist-mlp', async () => {
    stubs = mkdtempSync(join(tmpdir(), 'tessera-kserve-stubs-'));
    const r = spawnSync(PYTHON, ['-m', 'grpc_tools.protoc', '-I', protoRoot(), `--python_out=${stubs}`, `--grpc_python_out=${stubs}`, INFERENCE_PROTO_FILE], { encoding: 'utf8', timeout: PYTHON_TIMEOUT_MS });
    expect(r.status, `grpc_tools.protoc: ${r.stderr || r.error?.message}`).to.equal(0);
    writeFileSync(join(stubs, 'inference', '__init__.py'), '');

    // The model as `tessera export` writes it: mnist-mlp's graph with weights, as ONNX, run by onnxruntime-node.
    const spec = mnistMlp.spec(4);
    const dense = new Float32Array(mnistMlp.elements);
    initialValues(spec, 0, dense);
    const model = await loadOnnx(writeOnnx(buildGraph(spec, dense), 'none').files[0]!.bytes);
    const repository = new ModelRepository('mnist-mlp');
    await repository.swap({ name: 'mnist-mlp', version: 3, model });
    server = await startModelServer({ grpc: '127.0.0.1:0', source: { repository } });

    const script = join(dirname(protoRoot()), 'test', 'interop', 'kserve_client.py');
    const stdout = await run([script, '--address', server.grpcAddress!, '--model', 'mnist-mlp', '--rows', String(ROWS)], { ...process.env, PYTHONPATH: stubs, PYTHONDONTWRITEBYTECODE: '1' });
    const seen = JSON.parse(stdout.trim()) as { metadata: { platform: string }; raw: Inferred; contents: Inferred };
    expect(seen.metadata.platform).to.equal('onnx');
    const x = Float32Array.from({ length: ROWS * 784 }, (_, i) => ((i * 7) % 11) / 4 - 1);
    const want = Array.from(await model.run(x, ROWS));
    expect(seen.raw.values).to.deep.equal(want);
    expect(seen.contents.values).to.deep.equal(want);
    expect(seen.raw.outputs).to.deep.equal([{ name: 'probabilities', datatype: 'FP32', shape: [ROWS, 10] }]);
    await server.close();
    server = undefined;
    await repository.close();
  });
});
