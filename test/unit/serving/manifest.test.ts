import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { type Manifest, publicKeyFrom, privateKeyFrom, sha256, signManifest, verifySignature } from '../../../serving/export/manifest.js';
import { listVersions, publishVersion, readManifest, verifyFiles } from '../../../serving/export/versions.js';
import { VerificationError } from '../../../serving/errors.js';

function manifest(version: number, files: { path: string; bytes: Uint8Array }[]): Manifest {
  return {
    manifest_version: 1,
    name: 'm',
    version,
    created_at: '2026-01-01T00:00:00.000Z',
    producer: 'test',
    source: { cluster: 'c', membership: 'x', map_epoch: 1, consistency: 'async', closed_steps: 0, instant: 'now', shards: [] },
    model: { spec_name: 'm', inference: { input: { kind: 'features', features: 1 }, layers: [{ weight: 'W', activation: 'linear' }] }, tensors: [], tables: [] },
    formats: ['onnx'],
    compression: { prune: 0, prune_units: 0, quantize: 'none', storage: {} },
    parameters: { before: 1, after: 1, nonzero_after: 1 },
    size: {},
    evaluation: { dataset: 'none', examples: 0, uncompressed: {} },
    files: Object.fromEntries(files.map((f) => [f.path, { sha256: sha256(f.bytes), bytes: f.bytes.byteLength }])),
  };
}

const pem = () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { priv: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, pub: publicKey.export({ type: 'spki', format: 'pem' }) as string };
};

describe('serving/export manifest and versions', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-versions-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('signs with Ed25519 and verifies with the same key only; any change breaks the signature', () => {
    const a = pem();
    const b = pem();
    const files = [{ path: 'model.onnx', bytes: Buffer.from('abc') }];
    const signed = signManifest(manifest(1, files), privateKeyFrom(a.priv, 'a'));
    verifySignature(signed, publicKeyFrom(a.pub, 'a.pub'), 'v1');
    verifySignature(JSON.parse(JSON.stringify(signed, null, 3)) as Manifest, publicKeyFrom(a.pub, 'a.pub'), 'reprinted');
    expect(() => verifySignature(signed, publicKeyFrom(b.pub, 'b.pub'), 'v1')).to.throw(VerificationError, /not by the public key given/);
    expect(() => verifySignature({ ...signed, files: { 'model.onnx': { sha256: sha256(Buffer.from('abd')), bytes: 3 } } }, publicKeyFrom(a.pub, 'a.pub'), 'v1')).to.throw(VerificationError, /does not match/);
    const { signature: _s, ...unsigned } = signed;
    expect(() => verifySignature(unsigned, publicKeyFrom(a.pub, 'a.pub'), 'v1')).to.throw(VerificationError, /not signed/);
  });

  it('refuses keys that are not Ed25519 with a message saying how to make one', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    expect(() => privateKeyFrom(rsa, 'k.pem')).to.throw(VerificationError, /rsa key.*Ed25519/);
    expect(() => privateKeyFrom('nonsense', 'k.pem')).to.throw(VerificationError, /openssl genpkey -algorithm ed25519/);
  });

  it('publishes numbered versions whole, and names a changed, missing or unlisted file', async () => {
    const files = [
      { path: 'model.onnx', bytes: Buffer.from('0123456789') },
      { path: 'tfjs/model.json', bytes: Buffer.from('{}') },
    ];
    const a = await publishVersion(join(dir, 'm'), files, (v) => manifest(v, files));
    const b = await publishVersion(join(dir, 'm'), files, (v) => manifest(v, files));
    expect([a.version, b.version]).to.deep.equal([1, 2]);
    expect(await listVersions(join(dir, 'm'))).to.deep.equal([1, 2]);
    expect((await readdir(join(dir, 'm'))).sort()).to.deep.equal(['1', '2']); // no staging left behind
    expect((await readManifest(b.dir)).version).to.equal(2);
    expect((await verifyFiles(b.dir, b.manifest)).get('model.onnx')!.toString()).to.equal('0123456789');

    const bytes = await readFile(join(b.dir, 'model.onnx'));
    bytes[4] = bytes[4]! ^ 1;
    await writeFile(join(b.dir, 'model.onnx'), bytes);
    await unlink(join(b.dir, 'tfjs/model.json'));
    await writeFile(join(b.dir, 'extra.bin'), 'x');
    const err = await verifyFiles(b.dir, b.manifest).then(() => null, (e: Error) => e);
    expect(err).to.be.instanceOf(VerificationError);
    expect(err!.message).to.match(/model\.onnx has changed/).and.match(/tfjs\/model\.json is missing/).and.match(/extra\.bin is not in the manifest/);
  });

  it('gives concurrent exporters distinct versions', async () => {
    const files = [{ path: 'model.onnx', bytes: Buffer.from('x') }];
    const results = await Promise.all(Array.from({ length: 6 }, () => publishVersion(join(dir, 'm'), files, (v) => manifest(v, files))));
    expect(results.map((r) => r.version).sort((x, y) => x - y)).to.deep.equal([1, 2, 3, 4, 5, 6]);
    for (const r of results) expect((await readManifest(r.dir)).version).to.equal(r.version);
  });

  it('ignores entries that are not versions', async () => {
    const files = [{ path: 'model.onnx', bytes: Buffer.from('x') }];
    await publishVersion(join(dir, 'm'), files, (v) => manifest(v, files));
    await writeFile(join(dir, 'm', '7'), 'a file, not a version');
    await rm(join(dir, 'm', '.tmp-x'), { recursive: true, force: true });
    expect(await listVersions(join(dir, 'm'))).to.deep.equal([1]);
    expect(await listVersions(join(dir, 'nothing'))).to.deep.equal([]);
  });
});
