import { type KeyObject } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { type ModelSpec, layout } from '../../cluster/model-spec.js';
import { prune } from '../compress/prune.js';
import { type FormatOutput, type WrittenFile } from '../formats/format.js';
import { writeOnnx } from '../formats/onnx-writer.js';
import { writeTfjs } from '../formats/tfjs-writer.js';
import { type TableRows, buildGraph } from '../model/build-graph.js';
import { type ModelGraph, type Quantization, nonZeroCount, parameterCount } from '../model/model-graph.js';
import { formatPrefix, loadFormat, runAll } from '../runtime/load.js';
import { type ModelFormat } from '../runtime/runtime.js';
import { type Manifest, type ManifestSource, type SizeFigures, sha256, signManifest } from './manifest.js';
import { publishVersion } from './versions.js';

/** The weights of a trained model and where they came from. */
export interface ExportSource {
  spec: ModelSpec;
  /** The flat dense vector (the spec's tensors in declared order). */
  dense: Float32Array;
  tables: ReadonlyMap<string, TableRows>;
  source: ManifestSource;
}

/**
 * Held-out examples to measure an export on: the inputs a request would
 * carry, and how to score the model's outputs (the task's own metrics:
 * accuracy, and AUC for click models).
 */
export interface EvaluationSet {
  /** What the examples are, for the manifest (e.g. "mnist test split"). */
  dataset: string;
  inputs: Float32Array | BigInt64Array;
  rows: number;
  metrics(outputs: Float32Array, rows: number): Record<string, number>;
}

export interface ExportOptions {
  /** DIR: the version goes to DIR/NAME/<next version>/. */
  outDir: string;
  /** NAME; default the model's name. */
  name?: string;
  /** Default both. */
  formats?: ModelFormat[];
  /** Fraction of each layer's weights set to zero by magnitude; default 0. */
  prune?: number;
  /** Fraction of each hidden layer's units removed; default 0. */
  pruneUnits?: number;
  /** Default 'none' (float32). */
  quantize?: Quantization;
  /** Signs the manifest (Ed25519). */
  signKey?: KeyObject;
  evaluation?: EvaluationSet;
  /** The producer named in the manifest. */
  producer?: string;
}

export interface ExportResult {
  version: number;
  dir: string;
  manifest: Manifest;
}

const WRITERS: Readonly<Record<ModelFormat, (g: ModelGraph, q: Quantization) => FormatOutput>> = { onnx: (g, q) => writeOnnx(g, q), tfjs: writeTfjs };

/**
 * Writes a new version of the model: its graph built from the weights,
 * compressed (units pruned, then weights pruned by magnitude, then stored
 * quantized), written in each format, each format's files loaded back by
 * their runtime and measured on the held-out set beside the uncompressed
 * model, the manifest (signed if asked), and the whole published at once.
 */
export async function exportModel(from: ExportSource, o: ExportOptions): Promise<ExportResult> {
  const formats = o.formats ?? ['onnx', 'tfjs'];
  const quantize = o.quantize ?? 'none';
  const original = buildGraph(from.spec, from.dense, from.tables);
  const graph = prune(original, o);

  const files: WrittenFile[] = [];
  const storage: Partial<Record<ModelFormat, Record<string, string>>> = {};
  const size: Partial<Record<ModelFormat, SizeFigures>> = {};
  // The uncompressed model in each format: its size is the manifest's baseline, and its ONNX files measure it.
  const plain = new Map(([...new Set<ModelFormat>([...formats, 'onnx'])]).map((f) => [f, WRITERS[f](original, 'none')]));
  for (const format of formats) {
    const out = WRITERS[format](graph, quantize);
    const prefix = formatPrefix(format);
    files.push(...out.files.map((f) => ({ path: prefix + f.path, bytes: f.bytes })));
    storage[format] = out.storage;
    size[format] = { ...figures(out.files), ...Object.fromEntries(Object.entries(figures(plain.get(format)!.files)).map(([k, v]) => [`float32_${k}`, v])) } as SizeFigures;
  }

  const evaluation: Manifest['evaluation'] = { dataset: o.evaluation?.dataset ?? 'none given', examples: o.evaluation?.rows ?? 0, uncompressed: {} };
  if (o.evaluation) {
    const e = o.evaluation;
    const measure = async (format: ModelFormat, written: WrittenFile[]) => {
      const byPath = new Map(written.map((f) => [f.path, f.bytes]));
      const model = await loadFormat(format, async (path) => byPath.get(path) ?? new Uint8Array(0));
      try {
        return e.metrics(await runAll(model, e.inputs, e.rows), e.rows);
      } finally {
        await model.close();
      }
    };
    evaluation.uncompressed = await measure('onnx', plain.get('onnx')!.files);
    for (const format of formats) evaluation[format] = await measure(format, files.filter((f) => f.path.startsWith(formatPrefix(format))));
  }

  const spec = from.spec;
  const name = o.name ?? spec.name;
  const published = await publishVersion(`${o.outDir.replace(/\/+$/, '')}/${name}`, files, (version) => {
    const manifest: Manifest = {
      manifest_version: 1,
      name,
      version,
      created_at: new Date().toISOString(),
      producer: o.producer ?? 'tessera',
      source: from.source,
      model: {
        spec_name: spec.name,
        inference: spec.inference!,
        tensors: layout(spec).tensors.map((t) => ({ name: t.name, shape: [...t.shape] })),
        tables: (spec.sparse ?? []).map((t) => ({ name: t.name, dim: t.dim, rows: (from.tables.get(t.name)?.ids.length ?? 0) })),
      },
      formats,
      compression: { prune: o.prune ?? 0, prune_units: o.pruneUnits ?? 0, quantize, storage },
      parameters: { before: parameterCount(original), after: parameterCount(graph), nonzero_after: nonZeroCount(graph) },
      size,
      evaluation,
      files: Object.fromEntries(files.map((f) => [f.path, { sha256: sha256(f.bytes), bytes: f.bytes.byteLength }])),
    };
    return o.signKey ? signManifest(manifest, o.signKey) : manifest;
  });
  return published;
}

function figures(files: WrittenFile[]): { bytes: number; gzip_bytes: number } {
  let bytes = 0;
  let gzip = 0;
  for (const f of files) {
    bytes += f.bytes.byteLength;
    gzip += gzipSync(f.bytes, { level: 9 }).byteLength;
  }
  return { bytes, gzip_bytes: gzip };
}
