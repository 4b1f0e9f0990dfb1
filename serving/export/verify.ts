import { type KeyObject } from 'node:crypto';
import { ModelLoadError } from '../errors.js';
import { loadFormat } from '../runtime/load.js';
import { type LoadedModel, type ModelFormat } from '../runtime/runtime.js';
import { type Manifest, verifySignature } from './manifest.js';
import { readManifest, verifyFiles } from './versions.js';

export interface VerifiedVersion {
  dir: string;
  manifest: Manifest;
  /** Whether the signature was checked (a public key was given). */
  signatureChecked: boolean;
  /** Each format's model loaded and run on one example. */
  formats: { format: ModelFormat; input: string; output: string }[];
}

/**
 * Checks an exported version: its manifest, every file's digest (a changed,
 * missing or unlisted file is named), the signature when `publicKey` is
 * given, and that each format loads and answers one example.
 * @throws VerificationError or ModelLoadError saying what failed.
 */
export async function verifyVersion(dir: string, publicKey?: KeyObject): Promise<VerifiedVersion> {
  const manifest = await readManifest(dir);
  if (publicKey) verifySignature(manifest, publicKey, `${dir}/manifest.json`);
  const files = await verifyFiles(dir, manifest);
  const formats: VerifiedVersion['formats'] = [];
  for (const format of manifest.formats) {
    const model = await loadVerified(format, files, dir);
    try {
      await model.run(model.input.datatype === 'INT64' ? new BigInt64Array(model.input.width) : new Float32Array(model.input.width), 1);
      formats.push({ format, input: `${model.input.name} ${model.input.datatype} [-1, ${model.input.width}]`, output: `${model.output.name} ${model.output.datatype} [-1, ${model.output.width}]` });
    } finally {
      await model.close();
    }
  }
  return { dir, manifest, signatureChecked: publicKey !== undefined, formats };
}

/** Loads `format` from bytes already checked against the manifest, so what runs is what was verified. */
export function loadVerified(format: ModelFormat, files: ReadonlyMap<string, Uint8Array>, dir: string): Promise<LoadedModel> {
  return loadFormat(format, async (path) => {
    const bytes = files.get(path);
    if (!bytes) throw new ModelLoadError(`${dir}: ${path} is needed by the ${format} model but not listed in the manifest`);
    return bytes;
  });
}
