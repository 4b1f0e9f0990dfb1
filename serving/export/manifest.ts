import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { type InferenceSpec } from '../../cluster/model-spec.js';
import { type Quantization } from '../model/model-graph.js';
import { type ModelFormat } from '../runtime/runtime.js';
import { VerificationError } from '../errors.js';

/**
 * `manifest.json` of an exported version (docs/serving.md): where the model
 * came from, what was done to it, what it measured, and the SHA-256 of every
 * file — optionally signed with Ed25519, so that whoever serves it can check
 * who produced it.
 */
export interface Manifest {
  manifest_version: 1;
  name: string;
  version: number;
  created_at: string;
  producer: string;
  source: ManifestSource;
  model: { spec_name: string; inference: InferenceSpec; tensors: { name: string; shape: number[] }[]; tables: { name: string; dim: number; rows: number }[] };
  formats: ModelFormat[];
  compression: { prune: number; prune_units: number; quantize: Quantization; storage: Partial<Record<ModelFormat, Record<string, string>>> };
  parameters: { before: number; after: number; nonzero_after: number };
  /** Per format: its files' bytes, and what the same model uncompressed (float32, unpruned) takes in that format; each also gzip-compressed (-9). */
  size: Partial<Record<ModelFormat, SizeFigures>>;
  /** Held-out metrics of the uncompressed model and of each format's files, as loaded by its runtime. */
  evaluation: { dataset: string; examples: number; uncompressed: Record<string, number> } & Partial<Record<ModelFormat, Record<string, number>>>;
  /** Every file of the version but this manifest, by path relative to the version directory. */
  files: Record<string, { sha256: string; bytes: number }>;
  signature?: ManifestSignature;
}

export interface ManifestSource {
  cluster: string;
  /** Where the membership was read (a Redis URL without its password, or an embedded store's address). */
  membership: string;
  map_epoch: number;
  consistency: string;
  /** Under bsp, the step every shard's snapshot stands at; otherwise the most steps any shard had closed (0 under async). */
  closed_steps: number;
  /** Which instant the weights stand for (docs/serving.md). */
  instant: string;
  shards: { id: string; address: string; slots: number; rows: number; snapshot_ms: number }[];
}

export interface SizeFigures {
  bytes: number;
  gzip_bytes: number;
  float32_bytes: number;
  float32_gzip_bytes: number;
}

export interface ManifestSignature {
  algorithm: 'ed25519';
  /** SHA-256 of the signer's public key (SPKI DER), to tell keys apart. */
  key_id: string;
  /** Base64 of the signature over {@link signedBytes}. */
  value: string;
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * The bytes a signature covers: the manifest without its `signature`, as JSON
 * with keys sorted at every level — so a signature does not depend on how
 * the manifest was pretty-printed or in which order its keys were written.
 */
export function signedBytes(m: Manifest): Buffer {
  const { signature: _s, ...rest } = m;
  return Buffer.from(canonicalJson(rest), 'utf8');
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** Reads an Ed25519 private key (PEM, PKCS#8: `openssl genpkey -algorithm ed25519`). @throws VerificationError for another kind of key. */
export function privateKeyFrom(pem: string | Buffer, source: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new VerificationError(`${source} is not a private key in PEM: ${(err as Error).message}; make one with: openssl genpkey -algorithm ed25519 -out key.pem`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new VerificationError(`${source} is a ${key.asymmetricKeyType} key; manifests are signed with Ed25519 (openssl genpkey -algorithm ed25519)`);
  return key;
}

/** Reads an Ed25519 public key (PEM, SPKI: `openssl pkey -in key.pem -pubout`); a private key gives its public half. */
export function publicKeyFrom(pem: string | Buffer, source: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (err) {
    throw new VerificationError(`${source} is not a public key in PEM: ${(err as Error).message}; get one with: openssl pkey -in key.pem -pubout -out key.pub`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new VerificationError(`${source} is a ${key.asymmetricKeyType} key; manifests are signed with Ed25519`);
  return key;
}

function keyId(publicKey: KeyObject): string {
  return sha256(publicKey.export({ type: 'spki', format: 'der' }));
}

/** The manifest signed with `privateKey`. */
export function signManifest(m: Manifest, privateKey: KeyObject): Manifest {
  const { signature: _s, ...unsigned } = m;
  const value = sign(null, signedBytes(unsigned), privateKey).toString('base64');
  return { ...unsigned, signature: { algorithm: 'ed25519', key_id: keyId(createPublicKey(privateKey)), value } };
}

/**
 * Checks that `m` is signed by `publicKey`.
 * @throws VerificationError for an unsigned manifest, another key, or a signature that does not match (the manifest changed).
 */
export function verifySignature(m: Manifest, publicKey: KeyObject, source: string): void {
  const s = m.signature;
  if (!s) throw new VerificationError(`${source} is not signed; export it with --sign KEY, or serve it without --public-key`);
  if (s.algorithm !== 'ed25519') throw new VerificationError(`${source} is signed with ${s.algorithm}; only ed25519 is known`);
  const id = keyId(publicKey);
  if (s.key_id !== id) throw new VerificationError(`${source} is signed by key ${s.key_id.slice(0, 16)}…, not by the public key given (${id.slice(0, 16)}…)`);
  let ok = false;
  try {
    ok = verify(null, signedBytes(m), publicKey, Buffer.from(s.value, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) throw new VerificationError(`${source}: the signature does not match the manifest (it was changed after signing)`);
}
