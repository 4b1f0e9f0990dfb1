import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as tls from 'node:tls';
import * as path from 'node:path';
import { type ClusterConfig } from '../cluster/cluster-config.js';
import { optimizerWithDefaults } from '../cluster/optimizer-config.js';
import { createCa, issueCertificate, writeTlsDir } from '../cluster/tls/certificates.js';
import { type Role } from '../cluster/tls/identity.js';
import { Child } from './child-rpc.js';
import { BenchCluster } from './cluster-host.js';
import type { OpTiming } from './children/dense-worker.js';
import { type Figure, MB, median, rateFigure } from './figures.js';

/**
 * Dense push and pull with mutual TLS beside the same without, in one run:
 * two one-shard clusters (a shard process each; one plaintext, one mTLS with
 * certificates made here by `cluster/tls/certificates.ts`), and per cluster
 * one worker process per transport (bulk, gRPC). Every repetition runs each
 * of the four (plaintext and mTLS × bulk and gRPC) in turn, so the ratio
 * `tls_… / plain_…` compares runs taken side by side. Figures
 * `tls_{push,pull}_{size}_{transport}` (MB/s of float32 values, the mTLS run)
 * held against `plain_…` of the same case (ratio = mTLS / plaintext), with
 * worker and shard CPU per model moved in `detail`. Reference
 * `tls_stream_64MiB`: Node's TLS alone (the cipher the shards negotiate), 64
 * MiB written to one mTLS socket and read through 'data' events without
 * touching them, both ends in this process — what a Node TLS stream carries
 * with no Tessera code at all, sampled after each 16M repetition.
 */

export interface TlsOptions {
  reps(elements: number): number;
  sizes: { elements: number; label: string }[];
}

const TRANSPORTS = ['bulk', 'grpc'] as const;
const OPS = ['push', 'pull'] as const;
const CLUSTER = 'bench';

function config(elements: number): ClusterConfig {
  return {
    name: CLUSTER,
    slots: 1024,
    model: { name: 'flat', seed: 7, tensors: [{ name: 'w', shape: [elements], init: { kind: 'uniform', low: -1, high: 1 } }] },
    optimizer: optimizerWithDefaults({ name: 'sgd', learningRate: 1e-6 }),
    consistency: 'async',
  };
}

/** A CA and one `--tls-dir` per identity under `root`, keyed `<role>-<id>`. */
async function certificates(root: string, identities: { role: Role; id: string }[]): Promise<Record<string, string>> {
  const ca = await createCa({ cluster: CLUSTER });
  const dirs: Record<string, string> = {};
  for (const { role, id } of identities) {
    const dir = path.join(root, `${role}-${id}`);
    await writeTlsDir(dir, { caCertPem: ca.certPem, ...(await issueCertificate({ ca, cluster: CLUSTER, role, id })) });
    dirs[`${role}-${id}`] = dir;
  }
  return dirs;
}

interface Variant {
  secure: boolean;
  transport: (typeof TRANSPORTS)[number];
  cluster: BenchCluster;
  worker: Child;
  rates: Record<(typeof OPS)[number], number[]>;
  workerCpu: Record<(typeof OPS)[number], number[]>;
  shardCpu: Record<(typeof OPS)[number], number[]>;
}

export async function runTls(opts: TlsOptions, progress: (msg: string) => void): Promise<Figure[]> {
  const root = mkdtempSync(path.join(tmpdir(), 'tessera-bench-tls-'));
  const figures: Figure[] = [];
  const streamRates: number[] = [];
  try {
    const dirs = await certificates(root, [{ role: 'shard', id: 'shard-0' }, ...TRANSPORTS.map((t) => ({ role: 'worker' as const, id: `bench-${t}` }))]);
    for (const { elements, label } of opts.sizes) {
      progress(`tls: ${label} floats, plaintext and mutual TLS side by side, over bulk and gRPC`);
      const clusters = { plain: await BenchCluster.start(config(elements), 1), tls: await BenchCluster.start(config(elements), 1, (id) => dirs[`shard-${id}`]!) };
      const variants: Variant[] = [];
      try {
        for (const secure of [false, true]) {
          for (const transport of TRANSPORTS) {
            const cluster = secure ? clusters.tls : clusters.plain;
            const worker = Child.start(`worker-${secure ? 'tls' : 'plain'}-${transport}`, 'dense-worker');
            variants.push({ secure, transport, cluster, worker, rates: { push: [], pull: [] }, workerCpu: { push: [], pull: [] }, shardCpu: { push: [], pull: [] } });
            await worker.call('connect', { membership: cluster.membershipAddress, workerId: `bench-${transport}`, transport, ...(secure ? { tlsDir: dirs[`worker-bench-${transport}`] } : {}) });
          }
        }
        const stream = elements >= 16 << 20 ? await TlsStream.open(dirs['shard-shard-0']!, dirs[`worker-bench-bulk`]!) : null;
        try {
          for (let r = 0; r <= opts.reps(elements); r++) {
            for (const op of OPS) for (const v of variants) await once(v, op, elements, r === 0);
            if (stream && r > 0) streamRates.push(await stream.transfer(64 << 20));
          }
        } finally {
          stream?.close();
        }
        for (const transport of TRANSPORTS) {
          for (const op of OPS) {
            const [plain, secure] = [false, true].map((s) => variants.find((v) => v.secure === s && v.transport === transport)!);
            const base = rateFigure(`plain_${op}_${label}_${transport}`, 'MB/s', plain!.rates[op], { detail: { worker_cpu_ms: median(plain!.workerCpu[op]), shard_cpu_ms: median(plain!.shardCpu[op]) } });
            const f = rateFigure(`tls_${op}_${label}_${transport}`, 'MB/s', secure!.rates[op], { limit: base.name, detail: { worker_cpu_ms: median(secure!.workerCpu[op]), shard_cpu_ms: median(secure!.shardCpu[op]) } });
            f.ratio = f.value / base.value;
            figures.push(base, f);
          }
        }
      } finally {
        await Promise.all(variants.map((v) => v.worker.stop()));
        await clusters.plain.close();
        await clusters.tls.close();
      }
    }
    if (streamRates.length) figures.push(rateFigure('tls_stream_64MiB', 'MB/s', streamRates, { detail: { cipher: TlsStream.cipher } }));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  return figures;
}

/** Two ends of one mTLS socket in this process: the reference of Node's TLS alone. */
class TlsStream {
  static cipher = '';

  private constructor(
    private readonly server: tls.Server,
    private readonly socket: tls.TLSSocket,
    /** Bytes the server counts before it answers: one transfer's. */
    private readonly expected: { bytes: number },
  ) {}

  static async open(serverDir: string, clientDir: string): Promise<TlsStream> {
    const files = (dir: string) => ({ ca: readFileSync(path.join(dir, 'ca.crt')), cert: readFileSync(path.join(dir, 'tls.crt')), key: readFileSync(path.join(dir, 'tls.key')) });
    const expected = { bytes: 0 };
    const server = tls.createServer({ ...files(serverDir), requestCert: true, rejectUnauthorized: true }, (s) => {
      let got = 0;
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= expected.bytes) {
          got = 0;
          s.write('k');
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const socket = tls.connect({ host: '127.0.0.1', port: (server.address() as { port: number }).port, ...files(clientDir), servername: 'tessera', checkServerIdentity: () => undefined });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    TlsStream.cipher = socket.getCipher().standardName;
    return new TlsStream(server, socket, expected);
  }

  /** MB/s of one transfer of `bytes`, until the server's one-byte answer. */
  async transfer(bytes: number): Promise<number> {
    this.expected.bytes = bytes;
    const payload = Buffer.alloc(bytes, 1);
    const t0 = process.hrtime.bigint();
    this.socket.write(payload);
    await new Promise((resolve) => this.socket.once('data', resolve));
    return bytes / MB / (Number(process.hrtime.bigint() - t0) / 1e9);
  }

  close(): void {
    this.socket.destroy();
    this.server.close();
  }
}

async function once(v: Variant, op: (typeof OPS)[number], elements: number, warmUp: boolean): Promise<void> {
  const shard = v.cluster.shards[0]!;
  const before = await shard.call<{ ms: number }>('cpu');
  const t = await v.worker.call<OpTiming>('run', { op });
  const after = await shard.call<{ ms: number }>('cpu');
  if (warmUp) return;
  v.rates[op].push((elements * 4) / MB / ((t.end - t.start) / 1e9));
  v.workerCpu[op].push(t.cpuMs);
  v.shardCpu[op].push(after.ms - before.ms);
}
