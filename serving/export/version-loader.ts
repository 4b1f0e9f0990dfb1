import { type KeyObject } from 'node:crypto';
import { ModelLoadError } from '../errors.js';
import { type ModelFormat } from '../runtime/runtime.js';
import { type VersionLoader } from '../serve/served-version.js';
import { verifySignature } from './manifest.js';
import { loadVerified } from './verify.js';
import { readManifest, verifyFiles } from './versions.js';

export interface VersionLoaderOptions {
  /** Refuse a version not signed by this key (`tessera serve --public-key`). */
  publicKey?: KeyObject;
  /** Which format to run when a version has several; default ONNX first (the faster runtime here), then TensorFlow.js. */
  prefer?: ModelFormat[];
}

/**
 * How `tessera serve` loads a version directory: its manifest, the signature
 * when a key is given (an unsigned or wrongly signed version is refused), the
 * digest of every file, then the preferred format the version has, from the
 * very bytes that were checked.
 */
export function versionLoader(o: VersionLoaderOptions = {}): VersionLoader {
  const prefer = o.prefer ?? ['onnx', 'tfjs'];
  return async (dir, version) => {
    const manifest = await readManifest(dir);
    if (o.publicKey) verifySignature(manifest, o.publicKey, `${dir}/manifest.json`);
    const files = await verifyFiles(dir, manifest);
    const format = prefer.find((f) => manifest.formats.includes(f));
    if (!format) throw new ModelLoadError(`${dir} holds ${manifest.formats.join(', ')}; this server runs ${prefer.join(', ')}`);
    const model = await loadVerified(format, files, dir);
    return { name: manifest.name, version, model, manifest: manifest as unknown as Record<string, unknown> };
  };
}
