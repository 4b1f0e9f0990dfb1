import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { expect } from 'chai';
import { InvalidArgumentError, PermissionDeniedError, UnauthenticatedError } from '../../../cluster/errors.js';
import { MemoryMembershipStore } from '../../../cluster/membership/memory-store.js';
import { optimizerWithDefaults } from '../../../cluster/optimizer-config.js';
import { checkActsAs, checkRole } from '../../../cluster/tls/authorization.js';
import { identityOfAltNames, parseSpiffeUri, spiffeUri } from '../../../cluster/tls/identity.js';
import { TlsMaterial } from '../../../cluster/tls/tls-material.js';
import { PLAINTEXT, type TransportSecurity, checkPlaintextListener, isLoopback, serverIdentityError } from '../../../cluster/tls/transport-security.js';
import { ShardServer } from '../../../server/shard-server.js';
import { makeTlsDirs } from '../../helpers/tls.js';

describe('cluster/tls: identities, TLS material and the rules', function () {
  this.timeout(20_000);
  let root: string;
  let dirs: Record<string, string>;
  const materials: TlsMaterial[] = [];
  const load = (dir: string, cluster?: string) => {
    const m = TlsMaterial.load(dir, cluster);
    materials.push(m);
    return m;
  };

  before(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'tessera-tls-unit-'));
    ({ dirs } = await makeTlsDirs(root, 'c1', [
      { role: 'shard', id: 's0' },
      { role: 'worker', id: 'w1' },
      { role: 'worker', id: 'old', expired: true },
    ], { otherCa: true }));
  });
  after(() => {
    for (const m of materials) m.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('SPIFFE URIs round-trip, and anything else is no identity', () => {
    const id = { cluster: 'c1', role: 'worker' as const, id: 'w-1.a_b' };
    expect(parseSpiffeUri(spiffeUri(id))).to.deep.equal(id);
    for (const bad of ['spiffe://tessera/c1/root/x', 'spiffe://other/c1/worker/x', 'spiffe://tessera/c1/worker/a/b', 'https://tessera/c1/worker/x', 'spiffe://tessera/c1/worker/' + 'x'.repeat(65)]) expect(parseSpiffeUri(bad), bad).to.equal(null);
    expect(() => spiffeUri({ cluster: 'c1', role: 'worker', id: 'a b' })).to.throw(/must be 1–64 letters/);
    expect(identityOfAltNames('DNS:localhost, URI:spiffe://tessera/c1/shard/s0, IP Address:127.0.0.1')).to.deep.equal({ cluster: 'c1', role: 'shard', id: 's0' });
    expect(identityOfAltNames('URI:spiffe://tessera/c1/shard/s0, URI:spiffe://tessera/c1/worker/w1'), 'two identities are none').to.equal(null);
  });

  it('loads a --tls-dir and reads its identity; refuses a missing file, an expired certificate, another CA, another cluster', () => {
    expect(load(dirs['shard-s0']!).identity).to.deep.equal({ cluster: 'c1', role: 'shard', id: 's0' });
    expect(() => load(path.join(root, 'nowhere'))).to.throw(InvalidArgumentError, /cannot read .*ca\.crt.*tessera certs issue/);
    expect(() => load(dirs['worker-old']!)).to.throw(InvalidArgumentError, /expired on/);
    expect(() => load(dirs['intruder']!)).to.throw(InvalidArgumentError, /was not issued by the CA in ca\.crt/);
    expect(() => load(dirs['worker-w1']!, 'c2')).to.throw(InvalidArgumentError, /for cluster "c1", not "c2"/);
  });

  it('reloads changed files, and keeps the old ones when the new do not fit', () => {
    const m = load(dirs['worker-w1']!);
    let rotations = 0;
    m.onChange(() => rotations++);
    expect(m.reload(), 'unchanged').to.equal(false);
    const key = path.join(dirs['worker-w1']!, 'tls.key');
    const good = m.current.key;
    writeFileSync(key, 'not a key');
    expect(m.reload(), 'a broken key is refused').to.equal(false);
    expect(m.current.key.equals(good)).to.equal(true);
    writeFileSync(key, good);
    expect(rotations).to.equal(0);
  });

  it('servers are checked by the identity in their certificate, not their host name', () => {
    const cert = new X509Certificate(load(dirs['shard-s0']!).current.cert);
    const peer = { subjectaltname: cert.subjectAltName } as never;
    expect(serverIdentityError(peer, 'c1', ['shard'])).to.equal(undefined);
    expect(serverIdentityError(peer, 'c1', ['admin'])?.message).to.match(/expected an admin/);
    expect(serverIdentityError(peer, 'c2', ['shard'])?.message).to.match(/not of cluster "c2"/);
    expect(serverIdentityError({ subjectaltname: 'DNS:x' } as never, 'c1', ['shard'])?.message).to.match(/no Tessera identity/);
  });

  it('roles: plaintext allows all; under mTLS an identity of the cluster with an allowed role, and workers only as themselves', () => {
    const security: TransportSecurity = { kind: 'mtls', material: load(dirs['shard-s0']!) };
    const w1 = { cluster: 'c1', role: 'worker' as const, id: 'w1' };
    expect(() => checkRole(null, PLAINTEXT, ['admin'], 'x')).to.not.throw();
    expect(() => checkRole(w1, security, ['worker'], 'x')).to.not.throw();
    expect(() => checkRole(null, security, ['worker'], 'x')).to.throw(UnauthenticatedError);
    expect(() => checkRole(w1, security, ['admin', 'shard'], 'ShardAdmin/MoveSlots')).to.throw(PermissionDeniedError, /ShardAdmin\/MoveSlots needs an admin or shard certificate; the caller is worker "w1" of cluster "c1"/);
    expect(() => checkRole({ ...w1, cluster: 'c2' }, security, ['worker'], 'x')).to.throw(PermissionDeniedError, /this is cluster "c1"/);
    expect(() => checkActsAs(w1, 'w1', 'a push')).to.not.throw();
    expect(() => checkActsAs(w1, 'w2', 'a push')).to.throw(PermissionDeniedError, /as worker "w2" refused/);
    expect(() => checkActsAs({ ...w1, role: 'admin' }, 'w2', 'a push'), 'roles other than worker are left to the method rules').to.not.throw();
  });

  it('a listener off loopback needs TLS or --insecure: the shard refuses to start', async () => {
    for (const h of ['127.0.0.1', '127.3.2.1', 'localhost', '::1', '[::1]']) expect(isLoopback(h), h).to.equal(true);
    for (const h of ['0.0.0.0', '', '10.0.0.1', '::']) expect(isLoopback(h), h).to.equal(false);
    expect(() => checkPlaintextListener(PLAINTEXT, '0.0.0.0', false, 'shard s')).to.throw(InvalidArgumentError, /shard s would listen on 0\.0\.0\.0 without TLS: give it --tls-dir DIR .* or --insecure/);
    expect(() => checkPlaintextListener(PLAINTEXT, '0.0.0.0', true, 'shard s')).to.not.throw();
    const store = new MemoryMembershipStore();
    await store.createCluster({ name: 'c1', slots: 4, model: { name: 'm', seed: 1, tensors: [{ name: 'w', shape: [8], init: { kind: 'constant', value: 0 } }] }, optimizer: optimizerWithDefaults({ name: 'sgd' }), consistency: 'async' });
    const err = await ShardServer.start({ id: 's0', listen: '0.0.0.0:0', store }).then(
      (s) => s.close(10).then(() => null),
      (e: Error) => e,
    );
    expect(err).to.be.instanceOf(InvalidArgumentError);
    const insecure = await ShardServer.start({ id: 's0', listen: '0.0.0.0:0', store, insecure: true });
    await insecure.close(10);
    await store.close();
  });
});
