import { snapshotModel } from '../../client/model-snapshot.js';
import { createLogger } from '../../cluster/log.js';
import { type ExportResult, exportModel } from '../../serving/export/exporter.js';
import { type Manifest, privateKeyFrom, publicKeyFrom } from '../../serving/export/manifest.js';
import { manifestSource, redactUrl } from '../../serving/export/source.js';
import { verifyVersion } from '../../serving/export/verify.js';
import { type Quantization, QUANTIZATIONS } from '../../serving/model/model-graph.js';
import { type ModelFormat } from '../../serving/runtime/runtime.js';
import { BACKENDS, type BackendName, selectBackend } from '../../worker/backend.js';
import { loadTask, TASK_NAMES } from '../../worker/tasks/index.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { readKeyFile } from '../key-file.js';
import { EXIT } from '../handle-error.js';
import { MEMBERSHIP_OPTIONS, openStore, redisUrl } from '../membership-options.js';

const log = createLogger('export');

export const exportCommand: Command = {
  name: 'export',
  summary:
    'Take the trained model out of a running cluster (training goes on), compress it, and write it as a new version DIR/NAME/<version>/ in TensorFlow.js and ONNX with a manifest; or check an exported version with --verify.',
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'out', type: 'string', metavar: 'DIR', description: 'model repository: the version goes to DIR/NAME/<next version>/' },
    { name: 'name', type: 'string', metavar: 'NAME', description: "the model's name in the repository (default: the cluster's model name)" },
    { name: 'format', type: 'string', default: 'both', choices: ['tfjs', 'onnx', 'both'], description: 'formats to write' },
    { name: 'prune', type: 'number', default: 0, metavar: 'FRACTION', description: "set this fraction of the model's weights, the smallest in magnitude (one threshold for all layers), to zero" },
    { name: 'prune-units', type: 'number', default: 0, metavar: 'FRACTION', description: 'remove this fraction of the units of each hidden layer, the least salient, shrinking the layers' },
    { name: 'quantize', type: 'string', default: 'none', choices: QUANTIZATIONS, description: 'store weights as float16, or int8 (ONNX: a scale per output unit / embedding row; TensorFlow.js: uint8 with a min and scale per tensor)' },
    { name: 'sign', type: 'string', metavar: 'KEY', description: 'sign the manifest with this Ed25519 private key (PEM; openssl genpkey -algorithm ed25519 -out KEY)' },
    { name: 'model', type: 'string', metavar: 'NAME|PATH', description: "the model's module, for a model of your own: its held-out data measures the export (default: the cluster's model)" },
    { name: 'evaluate', type: 'boolean', default: true, description: 'measure the export on the held-out data (--evaluate=false to skip)' },
    { name: 'backend', type: 'string', default: 'auto', choices: ['auto', ...BACKENDS], description: 'TensorFlow.js backend the tfjs files are measured on' },
    { name: 'verify', type: 'string', metavar: 'VERSION_DIR', description: 'instead of exporting: check DIR/NAME/<version> (every digest, the signature with --public-key, that each format loads)' },
    { name: 'public-key', type: 'string', metavar: 'PUB', description: 'with --verify: the Ed25519 public key (PEM) the manifest must be signed with' },
    { name: 'json', type: 'boolean', description: 'print the manifest (or the verification) as one JSON object' },
  ],
  async run(o) {
    if (o['verify'] !== undefined) return verify(o['verify'] as string, o['public-key'] as string | undefined, Boolean(o['json']));
    if (o['public-key'] !== undefined) throw new UsageError('--public-key goes with --verify (to export signed, use --sign KEY)');
    const out = o['out'] as string | undefined;
    if (!out) throw new UsageError('`tessera export` needs --out DIR (the model repository), or --verify DIR/NAME/<version>');
    for (const flag of ['prune', 'prune-units']) {
      const v = o[flag] as number;
      if (!(v >= 0 && v < 1)) throw new UsageError(`--${flag} takes a fraction in [0, 1), got ${v}`);
    }
    const formats: ModelFormat[] = o['format'] === 'both' ? ['onnx', 'tfjs'] : [o['format'] as ModelFormat];
    const signKey = o['sign'] ? privateKeyFrom(await readKeyFile(o['sign'] as string), o['sign'] as string) : undefined;

    const store = openStore(o);
    try {
      const config = await store.getConfig();
      if (!config) throw new UsageError('no cluster is configured in this membership store; check --redis / --membership and --cluster');
      let evaluation;
      if (o['evaluate']) {
        const module = o['model'] as string | undefined;
        if (!module && !TASK_NAMES.includes(config.model.name)) {
          throw new UsageError(`this cluster trains ${config.model.name}, a model of your own: give its module with --model PATH (its held-out data measures the export), or skip the measurement with --evaluate=false`);
        }
        const task = await loadTask(module ?? config.model.name);
        if (task.name !== config.model.name) throw new UsageError(`this cluster trains ${config.model.name}, but --model ${module} is ${task.name}`);
        if (formats.includes('tfjs')) await selectBackend(o['backend'] === 'auto' ? undefined : (o['backend'] as BackendName));
        evaluation = task.heldOut();
      }
      const snapshot = await snapshotModel(store);
      const membership = (o['membership'] as string | undefined) ?? redactUrl(redisUrl(o) ?? '');
      const source = manifestSource({
        cluster: config.name,
        membership,
        consistency: config.consistency,
        epoch: snapshot.epoch,
        closedSteps: snapshot.closedSteps,
        shards: snapshot.shards,
      });
      log.info(`took ${config.model.name} from ${snapshot.shards.length} shards at map epoch ${snapshot.epoch}; writing ${formats.join(' and ')}`);
      const result = await exportModel(
        { spec: config.model, dense: snapshot.dense, tables: snapshot.tables, source },
        { outDir: out, name: o['name'] as string | undefined, formats, prune: o['prune'] as number, pruneUnits: o['prune-units'] as number, quantize: o['quantize'] as Quantization, signKey, evaluation },
      );
      process.stdout.write(o['json'] ? `${JSON.stringify({ dir: result.dir, ...result.manifest })}\n` : describe(result));
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};

async function verify(dir: string, publicKeyPath: string | undefined, json: boolean): Promise<number> {
  const publicKey = publicKeyPath ? publicKeyFrom(await readKeyFile(publicKeyPath), publicKeyPath) : undefined;
  const v = await verifyVersion(dir, publicKey);
  if (json) {
    process.stdout.write(`${JSON.stringify({ dir: v.dir, ok: true, name: v.manifest.name, version: v.manifest.version, files: Object.keys(v.manifest.files).length, signature: v.signatureChecked ? 'checked' : v.manifest.signature ? 'present, not checked (no --public-key)' : 'none', formats: v.formats })}\n`);
  } else {
    const m = v.manifest;
    const signature = v.signatureChecked ? `signed by key ${m.signature!.key_id.slice(0, 16)}… (checked)` : m.signature ? 'signed (not checked: give --public-key PUB)' : 'not signed';
    process.stdout.write(`${dir}: ok — ${m.name} version ${m.version}, ${Object.keys(m.files).length} files match their SHA-256, ${signature}\n`);
    for (const f of v.formats) process.stdout.write(`  ${f.format}: loads and runs, ${f.input} → ${f.output}\n`);
  }
  return EXIT.ok;
}

function describe(r: ExportResult): string {
  const m: Manifest = r.manifest;
  const n = (x: number) => x.toLocaleString('en-US');
  const lines = [`exported ${m.name} version ${m.version} to ${r.dir}`];
  lines.push(`  from cluster ${m.source.cluster}, map epoch ${m.source.map_epoch}, ${m.source.consistency}${m.source.closed_steps ? `, step ${m.source.closed_steps}` : ''}, ${m.source.shards.length} shards`);
  const c = m.compression;
  lines.push(`  compression: prune ${c.prune}, prune-units ${c.prune_units}, quantize ${c.quantize}; parameters ${n(m.parameters.before)} → ${n(m.parameters.after)} (${n(m.parameters.nonzero_after)} non-zero)`);
  for (const f of m.formats) {
    const s = m.size[f]!;
    lines.push(`  ${f}: ${n(s.bytes)} bytes (float32 ${n(s.float32_bytes)}, ${(s.float32_bytes / s.bytes).toFixed(2)}×); gzip ${n(s.gzip_bytes)} (float32 ${n(s.float32_gzip_bytes)}, ${(s.float32_gzip_bytes / s.gzip_bytes).toFixed(2)}×)`);
  }
  const e = m.evaluation;
  if (e.examples > 0) {
    const fmt = (r: Record<string, number> | undefined) => Object.entries(r ?? {}).filter(([k]) => k !== 'reference_auc').map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ');
    lines.push(`  held-out (${e.dataset}): uncompressed ${fmt(e.uncompressed)}${m.formats.map((f) => `; ${f} ${fmt(e[f])}`).join('')}`);
  }
  if (m.signature) lines.push(`  signed by key ${m.signature.key_id.slice(0, 16)}…`);
  return `${lines.join('\n')}\n`;
}
