import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type Figure } from './figures.js';

/**
 * End-to-end training throughput: `tessera local --json` trains a model
 * (mnist-mlp unless said) on the wasm backend for two epochs (ctr: one) with N worker
 * processes; the figure is its `samples_per_sec` (samples over the training
 * wall time). Workers run pipelined (tessera's default: the next pull and this
 * push overlap the compute) unless `pipeline` is false (`--pipeline=false`:
 * strictly in turn), which names the figure `…_unpipelined`; a consistency
 * model other than async names it `…_bsp` or `…_ssp2`.
 */
export interface TrainVariant {
  workers: number;
  pipeline?: boolean;
  /** async (default), bsp or ssp:K. */
  consistency?: string;
  /** mnist-mlp (default) or ctr. */
  model?: string;
  /** Passes over the data. Default 2 for mnist-mlp (one pass is too short to see past the processes' start-up), 1 for ctr (100,000 examples). */
  epochs?: number;
}

const TRAIN_TIMEOUT_MS = 150_000;

export async function trainSamplesPerSec(v: TrainVariant): Promise<Figure> {
  const { workers, pipeline = true, consistency = 'async', model = 'mnist-mlp' } = v;
  const epochs = v.epochs ?? (model === 'ctr' ? 1 : 2);
  const bin = fileURLToPath(new URL('../../bin/tessera.js', import.meta.url));
  const args = [bin, 'local', '--json', '--model', model, '--backend', 'wasm', '--workers', String(workers), '--epochs', String(epochs), '--consistency', consistency, ...(pipeline ? [] : ['--pipeline=false'])];
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TESSERA_LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGTERM'), TRAIN_TIMEOUT_MS);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`tessera local exited with ${code ?? signal}: ${lastLines(stderr || stdout, 3)}`));
    });
  });
  const line = out.trim().split('\n').pop() ?? '';
  let result: { samples_per_sec?: unknown; samples?: number; test_accuracy?: number; test_auc?: number; reference_auc?: number; backend?: string; pipeline?: unknown };
  try {
    result = JSON.parse(line) as typeof result;
  } catch {
    throw new Error(`tessera local printed no JSON: ${lastLines(out, 3)}`);
  }
  if (typeof result.samples_per_sec !== 'number') throw new Error('tessera local --json has no samples_per_sec');
  if (result.pipeline !== pipeline) throw new Error(`tessera local reported pipeline ${String(result.pipeline)}, asked for ${pipeline}`);
  return {
    name: trainFigureName(v),
    value: result.samples_per_sec,
    unit: 'samples/s',
    runs: 1,
    detail: {
      samples: result.samples ?? 0,
      test_accuracy: result.test_accuracy ?? 0,
      ...(result.test_auc !== undefined ? { test_auc: result.test_auc, reference_auc: result.reference_auc ?? 0 } : {}),
      backend: result.backend ?? '',
      pipeline: pipeline ? 'yes' : 'no',
      consistency,
      epochs,
    },
  };
}

export function trainFigureName(v: TrainVariant): string {
  const model = (v.model ?? 'mnist-mlp') === 'mnist-mlp' ? 'mnist' : v.model!;
  const consistency = !v.consistency || v.consistency === 'async' ? '' : `_${v.consistency.replace(':', '')}`;
  return `train_${model}_${v.workers}w${v.pipeline === false ? '_unpipelined' : ''}${consistency}`;
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join(' | ');
}
