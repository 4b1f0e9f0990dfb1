import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { expect } from 'chai';
import { RedisMembershipStore } from '../../cluster/membership/redis-store.js';
import { optimizerWithDefaults } from '../../cluster/optimizer-config.js';
import { createCa, issueCertificate } from '../../cluster/tls/certificates.js';
import { run, waitFor } from '../helpers/cli.js';
import { flatModel } from '../helpers/cluster.js';
import { freePort } from '../helpers/redis-server.js';

/*
 * The membership store on a Redis that speaks only TLS and knows only an ACL
 * user with a password (docs/security.md): the store connects with the CA and
 * the password; without either it gets nothing; and the CLI takes both from
 * files, never from its command line.
 */

const PASSWORD = 'correct horse battery staple';

describe('functional: Redis over TLS with an ACL user', function () {
  this.timeout(60_000);
  let dir: string;
  let port: number;
  let redis: ChildProcess;
  let ca: Buffer;
  const stores: RedisMembershipStore[] = [];
  const url = () => `rediss://tessera@127.0.0.1:${port}`;
  const store = (over: { password?: string; tls?: { ca: Buffer } } = {}) => {
    const s = new RedisMembershipStore({ url: url(), cluster: 'rtls', commandTimeoutMs: 2_000, connectTimeoutMs: 2_000, ...over });
    stores.push(s);
    return s;
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'tessera-redis-tls-'));
    const authority = await createCa({ cluster: 'rtls' });
    const server = await issueCertificate({ ca: authority, cluster: 'rtls', role: 'admin', id: 'redis', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    writeFileSync(path.join(dir, 'ca.crt'), authority.certPem);
    writeFileSync(path.join(dir, 'redis.crt'), server.certPem);
    writeFileSync(path.join(dir, 'redis.key'), server.keyPem, { mode: 0o600 });
    writeFileSync(path.join(dir, 'password'), `${PASSWORD}\n`, { mode: 0o600 });
    ca = Buffer.from(authority.certPem);
    port = await freePort();
    redis = spawn(
      'redis-server',
      ['--port', '0', '--tls-port', String(port), '--tls-cert-file', path.join(dir, 'redis.crt'), '--tls-key-file', path.join(dir, 'redis.key'), '--tls-ca-cert-file', path.join(dir, 'ca.crt'), '--tls-auth-clients', 'no', '--save', '', '--dir', dir, '--user', 'tessera', 'on', `>${PASSWORD}`, '~*', '&*', '+@all', '--user', 'default', 'off'],
      { stdio: 'ignore' },
    );
    const probe = store({ password: PASSWORD, tls: { ca } });
    await waitFor('Redis to answer over TLS', async () => (await probe.getConfig().then(() => true, () => false)) || undefined, 15_000, 100);
  });
  after(async () => {
    for (const s of stores) await s.close();
    redis?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('with the CA and the password, the store works', async () => {
    const s = store({ password: PASSWORD, tls: { ca } });
    await s.createCluster({ name: 'rtls', slots: 4, model: flatModel(16), optimizer: optimizerWithDefaults({ name: 'sgd' }), consistency: 'async' }, true);
    expect((await s.getConfig())?.name).to.equal('rtls');
  });

  it('without the CA, or with a wrong password, it gets nothing', async () => {
    const noCa = await store({ password: PASSWORD }).getConfig().then(
      () => null,
      (e: Error) => e,
    );
    expect(noCa?.name, 'no CA').to.equal('MembershipUnavailableError');
    const wrong = await store({ password: 'wrong', tls: { ca } }).getConfig().then(
      () => null,
      (e: Error) => e,
    );
    expect(wrong, 'a wrong password').to.not.equal(null);
  });

  it('the CLI reads the password and the CA from files (none of it on its command line)', async () => {
    const args = ['--redis', url(), '--cluster', 'rtls', '--redis-ca', path.join(dir, 'ca.crt'), '--redis-password-file', path.join(dir, 'password')];
    const init = await run(['init', ...args, '--model', 'logreg', '--shards', '1', '--force']);
    expect(init.code, init.stderr).to.equal(0);
    const status = await run(['status', ...args, '--json']);
    expect(status.code, status.stderr).to.equal(0);
    expect(JSON.parse(status.stdout).cluster).to.equal('rtls');
    const noPassword = await run(['status', '--redis', url(), '--cluster', 'rtls', '--redis-ca', path.join(dir, 'ca.crt')], 30_000);
    expect(noPassword.code, 'refused without the password').to.not.equal(0);
  });

  it('a plaintext redis:// URL to another host is refused unless the operator says the network is trusted', async () => {
    // 192.0.2.0/24 is reserved for documentation: nothing answers there, and the check comes before any connection.
    for (const env of [{}, { TESSERA_REDIS_URL: 'redis://192.0.2.1:6379' }]) {
      const plain = await run(['status', ...('TESSERA_REDIS_URL' in env ? [] : ['--redis', 'redis://192.0.2.1:6379'])], 30_000, env);
      expect(plain.code).to.equal(2);
      expect(plain.stderr).to.match(/Redis at 192\.0\.2\.1 would be reached without TLS \(redis:\/\/\): give a rediss:\/\/ URL .* or --redis-insecure \(TESSERA_REDIS_INSECURE=1\) on a network you trust/);
    }
    // Loopback, and an explicit opt-in, are taken (here: a refused connection, not the check).
    const loopback = await run(['status', '--redis', 'redis://127.0.0.1:1', '--json'], 30_000);
    expect(loopback.stderr).to.not.match(/without TLS/);
    const optIn = await run(['status', '--redis', 'redis://192.0.2.1:6379', '--redis-insecure'], 5_000);
    expect(optIn.stderr).to.not.match(/without TLS/);
  });
});
