import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { ExportError, ModelLoadError, VerificationError } from '../errors.js';
import { type WrittenFile } from '../formats/format.js';
import { type Manifest, sha256 } from './manifest.js';

/**
 * The model directory `DIR/NAME/<version>/`, as TensorFlow Serving and Triton
 * lay it out: one directory per version, named by a positive integer, the
 * highest being the newest. A version appears whole or not at all: it is
 * written in a hidden directory beside the others and renamed into place, so
 * a server polling `DIR/NAME/` never sees half of one.
 */

export const MANIFEST_FILE = 'manifest.json';

/** The versions under `modelDir`, ascending; none when it does not exist. */
export async function listVersions(modelDir: string): Promise<number[]> {
  const entries = await readdir(modelDir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  return entries
    .filter((e) => e.isDirectory() && /^[1-9][0-9]{0,15}$/.test(e.name))
    .map((e) => Number(e.name))
    .sort((a, b) => a - b);
}

/** Attempts at a version number before giving up, when other exporters take the same numbers. */
const PUBLISH_ATTEMPTS = 100;

/**
 * Writes `files` and the manifest `makeManifest(version)` as the next version
 * under `modelDir` (created if missing): each file synced, the directory
 * renamed into place. Returns the version and its directory.
 */
export async function publishVersion(modelDir: string, files: WrittenFile[], makeManifest: (version: number) => Manifest): Promise<{ version: number; dir: string; manifest: Manifest }> {
  await mkdir(modelDir, { recursive: true }).catch((err: Error) => {
    throw new ExportError(`cannot create ${modelDir}: ${err.message}`);
  });
  const staging = join(modelDir, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    for (const f of files) await writeSynced(join(staging, f.path), f.bytes);
    let version = ((await listVersions(modelDir)).at(-1) ?? 0) + 1;
    for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++, version++) {
      const manifest = makeManifest(version);
      await writeSynced(join(staging, MANIFEST_FILE), Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`));
      const dir = join(modelDir, String(version));
      // rename() replaces an empty directory but fails on one with files: another exporter got there first.
      const taken = await stat(dir).then(() => true, () => false);
      if (taken) continue;
      try {
        await rename(staging, dir);
        return { version, dir, manifest };
      } catch (err) {
        if (!['ENOTEMPTY', 'EEXIST'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
      }
    }
    throw new ExportError(`could not take a version number under ${modelDir} in ${PUBLISH_ATTEMPTS} attempts: other exporters keep taking them`);
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    if (err instanceof ExportError) throw err;
    throw new ExportError(`cannot write a version under ${modelDir}: ${(err as Error).message}`);
  }
}

async function writeSynced(path: string, bytes: Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const file = await open(path, 'w');
  try {
    await file.write(bytes);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** The manifest of the version in `dir`. @throws ModelLoadError when there is none or it is not JSON. */
export async function readManifest(dir: string): Promise<Manifest> {
  const path = join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ModelLoadError(`${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): is ${dir} an exported version (DIR/NAME/<version>)?`);
  }
  try {
    const m = JSON.parse(text) as Manifest;
    if (m?.manifest_version !== 1 || typeof m.files !== 'object' || m.files === null) throw new Error('not a Tessera manifest (manifest_version 1 with files)');
    return m;
  } catch (err) {
    throw new ModelLoadError(`${path} is not a valid manifest: ${(err as Error).message}`);
  }
}

/** A reader of files inside `dir` that refuses paths leading out of it. */
export function versionFileReader(dir: string): (path: string) => Promise<Uint8Array> {
  const root = resolve(dir);
  return async (path: string) => {
    const full = resolve(root, path);
    if (full !== root && !full.startsWith(root + sep)) throw new ModelLoadError(`${path} lies outside the version directory ${dir}`);
    try {
      return await readFile(full);
    } catch (err) {
      throw new ModelLoadError(`${relative(process.cwd(), full) || full} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
}

/**
 * Checks every file the manifest lists against its SHA-256 and size, and
 * that the directory holds no model file it does not list; returns the
 * files' bytes by path.
 * @throws VerificationError naming each file that is missing, changed or unlisted.
 */
export async function verifyFiles(dir: string, manifest: Manifest): Promise<Map<string, Uint8Array>> {
  const read = versionFileReader(dir);
  const problems: string[] = [];
  const files = new Map<string, Uint8Array>();
  for (const [path, want] of Object.entries(manifest.files)) {
    let bytes: Uint8Array;
    try {
      bytes = await read(path);
    } catch {
      problems.push(`${path} is missing`);
      continue;
    }
    if (bytes.byteLength !== want.bytes || sha256(bytes) !== want.sha256) problems.push(`${path} has changed (sha256 ${sha256(bytes).slice(0, 16)}…, ${bytes.byteLength} bytes; the manifest says ${want.sha256.slice(0, 16)}…, ${want.bytes} bytes)`);
    files.set(path, bytes);
  }
  for (const path of await listFiles(dir)) if (path !== MANIFEST_FILE && !(path in manifest.files)) problems.push(`${path} is not in the manifest`);
  if (problems.length > 0) throw new VerificationError(`${dir} does not match its manifest: ${problems.join('; ')}`);
  return files;
}

async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const path = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(dir, path)));
    else out.push(path);
  }
  return out;
}
