import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { expect } from 'chai';
import { initialValues } from '../../cluster/model-spec.js';
import { protoRoot } from '../../cluster/proto.js';
import { checkpointPath } from '../../server/checkpoint.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';

/*
 * A client in another language, built only from the .proto files, talks to a
 * shard: the wire contract (bytes as little-endian float32, chunk offsets, the
 * push header, idempotent (worker_id, seq), statuses with tessera-* metadata)
 * and the standard health service work for it as for our own client.
 */

/** Debian's interpreter, which has python3-grpcio and python3-grpc-tools; not whatever `python3` is first on PATH. */
const PYTHON = '/usr/bin/python3';
const PYTHON_TIMEOUT_MS = 20_000;
const ELEMENTS = 10_000;
const LEARNING_RATE = 1.0;
/** Small chunks, so the Python client reassembles many of them by offset. */
const CHUNK_BYTES = 4096;

function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string }> {
  // Asynchronous on purpose: the shard answering the script runs in this process.
  return new Promise((resolve, reject) => {
    execFile(PYTHON, args, { env, timeout: PYTHON_TIMEOUT_MS, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${PYTHON} ${args.join(' ')} failed (${err.message.split('\n')[0]}):\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

/** Generates Python stubs for `file` (relative to `includeDir`) into `out`. */
function protoc(includeDir: string, file: string, out: string): void {
  const r = spawnSync(PYTHON, ['-m', 'grpc_tools.protoc', '-I', includeDir, `--python_out=${out}`, `--grpc_python_out=${out}`, file], { encoding: 'utf8', timeout: PYTHON_TIMEOUT_MS });
  if (r.status !== 0) throw new Error(`grpc_tools.protoc failed on ${file} (status ${r.status}): ${r.stderr || r.error?.message}`);
}

interface PullSeen {
  elements: number;
  total: number;
  epoch: number;
  chunks: number;
  in_order: boolean;
  sha256: string;
  head: number[];
}
interface Ack {
  epoch: number;
  applied_slots: number;
  duplicate_slots: number;
}
interface Refusal {
  code: string;
  details?: string;
  metadata?: Record<string, string>;
  ack?: Ack;
}
interface Seen {
  health: Record<string, string>;
  pull_before: PullSeen;
  pull_after: PullSeen;
  push1: Ack;
  push2: Ack;
  nan_push: Refusal;
  stale_push: Refusal;
  after_mismatches: number;
  checkpoint: { shard_id: string; path: string; slots: number; bytes: number };
  checkpoint_missing: Refusal;
}

function sha256(a: Float32Array): string {
  return createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');
}

describe('interop: a Python client generated from the .proto files', function () {
  this.timeout(60_000);
  let cluster: TestCluster | undefined;
  let stubs: string | undefined;

  before(function () {
    const probe = spawnSync(PYTHON, ['-c', 'import grpc, grpc_tools.protoc'], { encoding: 'utf8', timeout: PYTHON_TIMEOUT_MS });
    if (probe.status !== 0) {
      throw new Error(
        `this test needs ${PYTHON} with gRPC: install the Debian packages python3-grpcio and python3-grpc-tools ` +
          `(apt-get install python3-grpcio python3-grpc-tools). ${PYTHON} said: ${probe.stderr || probe.error?.message}`,
      );
    }
  });

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
    if (stubs) rmSync(stubs, { recursive: true, force: true });
    stubs = undefined;
  });

  it('checks health, pulls, pushes once (a retry is a duplicate), is refused with statuses, and sees the right values', async () => {
    // Stubs first (protoc runs synchronously, which would stall an in-process
    // shard), then the cluster: tessera/v1/shard_pb2*.py and health/v1/health_pb2*.py.
    stubs = mkdtempSync(join(tmpdir(), 'tessera-pystubs-'));
    protoc(protoRoot(), 'tessera/v1/shard.proto', stubs);
    protoc(protoRoot(), 'tessera/v1/admin.proto', stubs);
    const healthProto = (createRequire(import.meta.url)('grpc-health-check') as { protoPath: string }).protoPath;
    const healthInclude = dirname(dirname(dirname(healthProto)));
    expect(relative(healthInclude, healthProto)).to.equal(join('health', 'v1', 'health.proto'));
    protoc(healthInclude, 'health/v1/health.proto', stubs);
    // Regular packages rather than namespace ones, so no other "health" or "tessera" on sys.path wins.
    for (const pkg of ['tessera', 'tessera/v1', 'health', 'health/v1']) {
      expect(existsSync(join(stubs, pkg)), `protoc wrote ${pkg}/`).to.equal(true);
      writeFileSync(join(stubs, pkg, '__init__.py'), '');
    }
    expect(existsSync(join(stubs, 'tessera', 'v1', 'shard_pb2_grpc.py'))).to.equal(true);
    expect(existsSync(join(stubs, 'health', 'v1', 'health_pb2_grpc.py'))).to.equal(true);

    const model = flatModel(ELEMENTS);
    cluster = await startCluster({ shards: 1, model, optimizer: { name: 'sgd', learningRate: LEARNING_RATE }, checkpointDir: stubs });
    const shard = cluster.shards[0]!;

    const script = join(dirname(protoRoot()), 'test', 'interop', 'shard_client.py');
    const { stdout } = await run(
      [script, '--address', shard.address, '--epoch', '1', '--slots', String(cluster.config.slots), '--model', model.name, '--lr', String(LEARNING_RATE), '--chunk-bytes', String(CHUNK_BYTES)],
      { ...process.env, PYTHONPATH: stubs, PYTHONDONTWRITEBYTECODE: '1' },
    );
    const lines = stdout.trim().split('\n');
    expect(lines, `one JSON line, got: ${stdout}`).to.have.length(1);
    const seen = JSON.parse(lines[0]!) as Seen;

    // What the values must be: the model's first values, then w − η·g once.
    const initial = new Float32Array(ELEMENTS);
    initialValues(model, 0, initial);
    const grad = new Float32Array(ELEMENTS);
    for (let i = 0; i < ELEMENTS; i++) grad[i] = ((i % 13) - 6) / 8;
    const expected = new Float32Array(ELEMENTS);
    for (let i = 0; i < ELEMENTS; i++) expected[i] = initial[i]! - LEARNING_RATE * grad[i]!;
    const twice = new Float32Array(ELEMENTS);
    for (let i = 0; i < ELEMENTS; i++) twice[i] = expected[i]! - LEARNING_RATE * grad[i]!;

    // The cluster, through our own client: applied exactly once.
    const client = await cluster.client();
    const now = await client.pull();
    expect(Buffer.from(now.buffer).equals(Buffer.from(twice.buffer)), 'the retry was not applied a second time').to.equal(false);
    expect(Buffer.from(now.buffer).equals(Buffer.from(expected.buffer)), 'values = initial − lr·gradient, bit for bit').to.equal(true);
    expect(shard.shard.pushesApplied).to.equal(1);

    // What Python saw.
    expect(seen.health).to.deep.equal({ '(server)': 'SERVING', 'tessera.v1.Shard': 'SERVING' });
    const chunks = Math.ceil((ELEMENTS * 4) / CHUNK_BYTES);
    expect(seen.pull_before).to.deep.include({ elements: ELEMENTS, total: ELEMENTS, epoch: 1, chunks, in_order: true, sha256: sha256(initial) });
    expect(seen.pull_before.head).to.deep.equal(Array.from(initial.subarray(0, 4)));
    expect(seen.push1).to.deep.equal({ epoch: 1, applied_slots: cluster.config.slots, duplicate_slots: 0 });
    expect(seen.push2).to.deep.equal({ epoch: 1, applied_slots: 0, duplicate_slots: cluster.config.slots });
    expect(seen.nan_push.code).to.equal('INVALID_ARGUMENT');
    expect(seen.nan_push.details).to.match(/non-finite value \(NaN\) at element 1 \(slot 0\); 0 slots before it were applied/);
    expect(seen.nan_push.metadata).to.deep.include({ 'tessera-error': 'invalid-argument' });
    expect(seen.stale_push.code).to.equal('FAILED_PRECONDITION');
    expect(seen.stale_push.metadata).to.deep.include({ 'tessera-error': 'stale-epoch', 'tessera-epoch': '1' });
    expect(seen.pull_after).to.deep.include({ elements: ELEMENTS, total: ELEMENTS, epoch: 1, chunks, in_order: true, sha256: sha256(expected) });
    expect(seen.pull_after.head).to.deep.equal(Array.from(expected.subarray(0, 4)));
    expect(seen.after_mismatches, 'Python’s own check of w − lr·g').to.equal(0);
    // The admin plane: a checkpoint of the one shard's every slot, and a clear refusal.
    expect(seen.checkpoint).to.deep.include({ shard_id: 'shard-0', path: checkpointPath(stubs, 'shard-0', 'interop'), slots: cluster.config.slots });
    expect(statSync(seen.checkpoint.path).size).to.equal(seen.checkpoint.bytes);
    expect(seen.checkpoint_missing.code).to.equal('INVALID_ARGUMENT');
    expect(seen.checkpoint_missing.metadata).to.deep.include({ 'tessera-error': 'invalid-argument' });
    expect(seen.checkpoint_missing.details).to.match(/names a file in the shard's --checkpoint-dir, never a path\), got "\.\.\/missing"/);
  });
});
