import { expect } from 'chai';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { identityOfAltNames } from '../../cluster/tls/identity.js';
import { run } from '../helpers/cli.js';

/** Permission bits of `file`. */
async function mode(file: string): Promise<number> {
  return (await stat(file)).mode & 0o777;
}

/**
 * `tessera certs init` and `tessera certs issue` as an operator runs them, in
 * a temporary directory: the files and their modes, the --force rule, the
 * identity in the issued certificate, and command lines that are refused.
 */
describe('functional: tessera certs init / certs issue', function () {
  this.timeout(60_000);
  let root: string;
  let caDir: string;

  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'tessera-certs-'));
    caDir = path.join(root, 'ca');
  });
  after(async () => rm(root, { recursive: true, force: true }));

  it('init writes ca.crt and ca.key, 0600, in a new 0700 directory, and says what to run next', async () => {
    const init = await run(['certs', 'init', '--dir', caDir, '--cluster', 'prod']);
    expect(init.code, init.stderr).to.equal(0);
    expect(await mode(caDir)).to.equal(0o700);
    for (const file of ['ca.crt', 'ca.key']) expect(await mode(path.join(caDir, file)), file).to.equal(0o600);
    expect(new X509Certificate(await readFile(path.join(caDir, 'ca.crt'))).subject).to.equal('CN=tessera prod CA');
    expect(await readFile(path.join(caDir, 'ca.key'), 'utf8')).to.match(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(init.stdout).to.include(path.join(caDir, 'ca.key')).and.include(`tessera certs issue --dir ${caDir} --cluster prod`);
  });

  it('init refuses to replace a CA without --force, and replaces it with', async () => {
    const before = await readFile(path.join(caDir, 'ca.crt'), 'utf8');
    const again = await run(['certs', 'init', '--dir', caDir, '--cluster', 'prod']);
    expect(again.code).to.equal(2);
    expect(again.stderr).to.include('already exist').and.include('--force');
    expect(await readFile(path.join(caDir, 'ca.crt'), 'utf8')).to.equal(before);
    const forced = await run(['certs', 'init', '--dir', caDir, '--cluster', 'prod', '--force', '--json']);
    expect(forced.code, forced.stderr).to.equal(0);
    expect(JSON.parse(forced.stdout)).to.include({ cluster: 'prod', replaced: true });
    expect(await readFile(path.join(caDir, 'ca.crt'), 'utf8')).to.not.equal(before);
    expect(await mode(path.join(caDir, 'ca.key'))).to.equal(0o600);
  });

  it("issue writes a --tls-dir whose certificate names the identity, chained to the CA, in the CA's cluster", async () => {
    const issue = await run(['certs', 'issue', '--dir', caDir, '--role', 'shard', '--id', 'shard-0', '--dns', 'shard-0.tessera.svc,localhost', '--ip', '127.0.0.1']);
    expect(issue.code, issue.stderr).to.equal(0);
    const out = path.join(caDir, 'shard-shard-0');
    expect(issue.stdout).to.include('spiffe://tessera/prod/shard/shard-0').and.include(`--tls-dir ${out}`);
    expect(await mode(out)).to.equal(0o700);
    for (const file of ['ca.crt', 'tls.crt', 'tls.key']) expect(await mode(path.join(out, file)), file).to.equal(0o600);
    expect(await readFile(path.join(out, 'ca.crt'), 'utf8')).to.equal(await readFile(path.join(caDir, 'ca.crt'), 'utf8'));
    const cert = new X509Certificate(await readFile(path.join(out, 'tls.crt')));
    expect(identityOfAltNames(cert.subjectAltName)).to.deep.equal({ cluster: 'prod', role: 'shard', id: 'shard-0' });
    expect(cert.subjectAltName).to.include('DNS:shard-0.tessera.svc').and.include('DNS:localhost').and.include('IP Address:127.0.0.1');
    expect(cert.verify(new X509Certificate(await readFile(path.join(caDir, 'ca.crt'))).publicKey)).to.equal(true);
  });

  it('issue into an existing --out replaces the certificate (rotation)', async () => {
    const out = path.join(root, 'worker-w1');
    const first = await run(['certs', 'issue', '--dir', caDir, '--role', 'worker', '--id', 'w1', '--out', out, '--json']);
    expect(first.code, first.stderr).to.equal(0);
    expect(JSON.parse(first.stdout)).to.include({ uri: 'spiffe://tessera/prod/worker/w1', dir: out });
    const serial = new X509Certificate(await readFile(path.join(out, 'tls.crt'))).serialNumber;
    const second = await run(['certs', 'issue', '--dir', caDir, '--role', 'worker', '--id', 'w1', '--out', out]);
    expect(second.code, second.stderr).to.equal(0);
    expect(new X509Certificate(await readFile(path.join(out, 'tls.crt'))).serialNumber).to.not.equal(serial);
    expect(await mode(path.join(out, 'tls.key'))).to.equal(0o600);
  });

  it('refuses a bad role, id, address or cluster with exit 2 and says what fits', async () => {
    const cases: [string[], RegExp][] = [
      [['--role', 'driver', '--id', 'x'], /--role must be one of shard, worker, admin, reader; got "driver"/],
      [['--role', 'worker', '--id', 'a/b'], /id "a\/b" must be 1–64 letters/],
      [['--role', 'worker', '--id', 'x', '--ip', '10.0.0.300'], /IP address "10.0.0.300" is not an IPv4 or IPv6 address/],
      [['--role', 'worker', '--id', 'x', '--cluster', 'staging'], /the CA in .* is cluster "prod"'s: drop --cluster/],
    ];
    const results = await Promise.all(cases.map(([args]) => run(['certs', 'issue', '--dir', caDir, ...args])));
    cases.forEach(([, message], i) => {
      expect(results[i]!.code, results[i]!.stderr).to.equal(2);
      expect(results[i]!.stderr).to.match(message);
    });
  });

  it('names the missing CA file and the command that makes it; `tessera certs` alone names its subcommands', async () => {
    const [missing, bare] = await Promise.all([run(['certs', 'issue', '--dir', path.join(root, 'nowhere'), '--role', 'worker', '--id', 'x']), run(['certs'])]);
    expect(missing.code).to.equal(1);
    expect(missing.stderr).to.include('no ca.crt in').and.include('tessera certs init --dir');
    expect(bare.code).to.equal(2);
    expect(bare.stderr).to.include('tessera certs init').and.include('tessera certs issue');
  });
});
