import 'reflect-metadata';
import * as grpc from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { expect } from 'chai';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { InvalidArgumentError, NotFoundError } from '../../../cluster/errors.js';
import { type CertificateAndKey, clusterOfCa, createCa, issueCertificate, readCa } from '../../../cluster/tls/certificates.js';
import { identityOfAltNames, type Role } from '../../../cluster/tls/identity.js';
import { makeTlsDirs } from '../../helpers/tls.js';

const DAY_MS = 86_400_000;

/** What one process holds: the CA it trusts, its certificate and key. */
interface Pems {
  ca: string;
  cert: string;
  key: string;
}

interface Outcome {
  ok: boolean;
  error?: string;
  /** What the server saw of the client's certificate, when it was accepted. */
  altNames?: string;
}

function pems(ca: CertificateAndKey, leaf: CertificateAndKey): Pems {
  return { ca: ca.certPem, cert: leaf.certPem, key: leaf.keyPem };
}

/**
 * One mutual-TLS handshake over 127.0.0.1: a server that requires and checks
 * a client certificate, a client that checks the server's chain (not its host
 * name). The server answers "ok" once it accepted the client, so the client
 * knows the server's verdict too (under TLS 1.3 the client finishes first).
 */
async function handshake(serverSide: Pems, clientSide: Pems): Promise<{ server: Outcome; client: Outcome }> {
  const server = tls.createServer({ requestCert: true, rejectUnauthorized: true, ...serverSide });
  const serverOutcome = new Promise<Outcome>((resolve) => {
    server.on('secureConnection', (socket) => {
      resolve({ ok: true, altNames: socket.getPeerCertificate().subjectaltname });
      socket.end('ok\n');
    });
    server.on('tlsClientError', (err) => resolve({ ok: false, error: err.message }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const client = await new Promise<Outcome>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ...clientSide, checkServerIdentity: () => undefined });
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString()));
      socket.on('error', (err) => resolve({ ok: false, error: err.message }));
      socket.on('close', () => resolve(answer.startsWith('ok') ? { ok: true } : { ok: false, error: 'closed before the server answered' }));
    });
    return { server: await serverOutcome, client };
  } finally {
    server.close();
  }
}

function extension<T extends x509.Extension>(pem: string, type: new (raw: ArrayBuffer) => T): T {
  const ext = new x509.X509Certificate(pem).getExtension(type);
  expect(ext, type.name).to.not.equal(null);
  return ext!;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('cluster/tls/certificates', function () {
  this.timeout(30_000);
  let ca: CertificateAndKey;
  let shard: CertificateAndKey;
  let worker: CertificateAndKey;

  before(async () => {
    ca = await createCa({ cluster: 'c1' });
    shard = await issueCertificate({ ca, cluster: 'c1', role: 'shard', id: 'shard-0', dnsNames: ['localhost', 'shard-0.tessera.svc'], ipAddresses: ['127.0.0.1', '::1'] });
    worker = await issueCertificate({ ca, cluster: 'c1', role: 'worker', id: 'w7' });
  });

  describe('createCa', () => {
    it('makes a self-signed CA: CA:true and keyCertSign+cRLSign, both critical, and a key identifier', () => {
      const cert = new X509Certificate(ca.certPem);
      expect(cert.ca).to.equal(true);
      expect(cert.subject).to.equal('CN=tessera c1 CA');
      expect(cert.checkIssued(cert) && cert.verify(cert.publicKey)).to.equal(true);
      const bc = extension(ca.certPem, x509.BasicConstraintsExtension);
      expect([bc.ca, bc.critical]).to.deep.equal([true, true]);
      const ku = extension(ca.certPem, x509.KeyUsagesExtension);
      expect(ku.critical).to.equal(true);
      expect(ku.usages).to.equal(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
      expect(extension(ca.certPem, x509.SubjectKeyIdentifierExtension).keyId).to.match(/^[0-9a-f]{40}$/);
      expect(clusterOfCa(ca.certPem)).to.equal('c1');
    });

    it('writes an ECDSA P-256 key as PKCS#8 PEM, signs with SHA-256, and draws a fresh serial each time', async () => {
      expect(ca.keyPem).to.match(/^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
      expect(ca.certPem).to.match(/^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n$/);
      const cert = new X509Certificate(ca.certPem);
      expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).to.equal('prime256v1');
      expect(new x509.X509Certificate(ca.certPem).signatureAlgorithm).to.deep.include({ name: 'ECDSA', hash: { name: 'SHA-256' } });
      const again = await createCa({ cluster: 'c1' });
      expect(new X509Certificate(again.certPem).serialNumber).to.not.equal(cert.serialNumber);
    });

    it('is valid from `now` (a few minutes before, for clock skew) for `days` days', async () => {
      const now = new Date('2030-01-01T00:00:00Z');
      const cert = new X509Certificate((await createCa({ cluster: 'c1', days: 10, now })).certPem);
      expect(new Date(cert.validTo).getTime()).to.equal(now.getTime() + 10 * DAY_MS);
      const from = new Date(cert.validFrom).getTime();
      expect(from).to.be.at.most(now.getTime()).and.at.least(now.getTime() - 3_600_000);
    });

    it('refuses a cluster name that cannot go in a URI, and days below 1', async () => {
      for (const bad of [{ cluster: 'a/b' }, { cluster: '' }, { cluster: 'c1', days: 0 }, { cluster: 'c1', days: 1.5 }]) {
        expect(await rejection(createCa(bad))).to.be.instanceOf(InvalidArgumentError);
      }
    });
  });

  describe('issueCertificate', () => {
    it('names the identity as a SPIFFE URI beside the DNS names and addresses, with CN <role>/<id>', () => {
      const cert = new X509Certificate(shard.certPem);
      expect(cert.subject).to.equal('CN=shard/shard-0');
      expect(cert.issuer).to.equal('CN=tessera c1 CA');
      expect(cert.subjectAltName).to.equal('URI:spiffe://tessera/c1/shard/shard-0, DNS:localhost, DNS:shard-0.tessera.svc, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
      expect(identityOfAltNames(cert.subjectAltName)).to.deep.equal({ cluster: 'c1', role: 'shard', id: 'shard-0' });
      expect(identityOfAltNames(new X509Certificate(worker.certPem).subjectAltName)).to.deep.equal({ cluster: 'c1', role: 'worker', id: 'w7' });
      expect(cert.checkHost('shard-0.tessera.svc')).to.equal('shard-0.tessera.svc');
      expect(cert.checkIP('127.0.0.1')).to.equal('127.0.0.1');
    });

    it('is a leaf for both ends of a connection, chained to the CA by key identifier', () => {
      const cert = new X509Certificate(shard.certPem);
      const caCert = new X509Certificate(ca.certPem);
      expect(cert.ca).to.equal(false);
      expect(cert.checkIssued(caCert) && cert.verify(caCert.publicKey)).to.equal(true);
      expect(cert.keyUsage).to.have.members(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
      const bc = extension(shard.certPem, x509.BasicConstraintsExtension);
      expect([bc.ca, bc.critical]).to.deep.equal([false, true]);
      const ku = extension(shard.certPem, x509.KeyUsagesExtension);
      expect(ku.critical).to.equal(true);
      expect(ku.usages).to.equal(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
      expect(extension(shard.certPem, x509.AuthorityKeyIdentifierExtension).keyId).to.equal(extension(ca.certPem, x509.SubjectKeyIdentifierExtension).keyId);
      expect(shard.keyPem).to.match(/^-----BEGIN PRIVATE KEY-----\n/);
    });

    it('lasts `days` days, never past the CA', async () => {
      const short = new X509Certificate((await issueCertificate({ ca, cluster: 'c1', role: 'reader', id: 'r', days: 2 })).certPem);
      const span = new Date(short.validTo).getTime() - Date.now();
      expect(span).to.be.above(DAY_MS).and.at.most(2 * DAY_MS);
      const shortCa = await createCa({ cluster: 'c1', days: 3 });
      const capped = new X509Certificate((await issueCertificate({ ca: shortCa, cluster: 'c1', role: 'admin', id: 'ops', days: 365 })).certPem);
      expect(capped.validTo).to.equal(new X509Certificate(shortCa.certPem).validTo);
    });

    it('refuses a bad role, id, cluster name, DNS name, address or validity with a message that says what fits', async () => {
      const cases: [Partial<Parameters<typeof issueCertificate>[0]>, RegExp][] = [
        [{ role: 'driver' as Role }, /role "driver" must be one of shard, worker, admin, reader/],
        [{ id: 'a/b' }, /id "a\/b" must be 1–64 letters/],
        [{ id: '' }, /id "" must be/],
        [{ cluster: 'c 1' }, /cluster name "c 1" must be/],
        [{ dnsNames: ['bad_name.svc'] }, /DNS name "bad_name.svc" is not a host name/],
        [{ ipAddresses: ['10.0.0.300'] }, /IP address "10.0.0.300" is not an IPv4 or IPv6 address/],
        [{ days: 0 }, /days must be a positive whole number/],
        [{ notBefore: new Date(), notAfter: new Date(Date.now() - DAY_MS) }, /make notAfter later than notBefore/],
      ];
      for (const [change, message] of cases) {
        const err = await rejection(issueCertificate({ ca, cluster: 'c1', role: 'worker', id: 'w', ...change }));
        expect(err, message.source).to.be.instanceOf(InvalidArgumentError);
        expect(err.message).to.match(message);
      }
    });

    it('refuses a CA that cannot sign for the cluster: another cluster\'s, a leaf, a key not its own', async () => {
      const other = await createCa({ cluster: 'c2' });
      const cases: [CertificateAndKey, RegExp][] = [
        [other, /the CA is cluster "c2"'s, not "c1"'s/],
        [shard, /is not a CA certificate/],
        [{ certPem: ca.certPem, keyPem: other.keyPem }, /the CA key does not belong to the CA certificate/],
        [{ certPem: ca.certPem, keyPem: 'not a key' }, /the CA key is not an ECDSA P-256 private key/],
      ];
      for (const [badCa, message] of cases) {
        const err = await rejection(issueCertificate({ ca: badCa, cluster: 'c1', role: 'worker', id: 'w' }));
        expect(err, message.source).to.be.instanceOf(InvalidArgumentError);
        expect(err.message).to.match(message);
      }
    });
  });

  describe('readCa', () => {
    let dir: string;
    beforeEach(async () => (dir = await mkdtemp(path.join(tmpdir(), 'tessera-ca-'))));
    afterEach(async () => rm(dir, { recursive: true, force: true }));

    it('names the missing file and the command that makes it', async () => {
      const err = await rejection(readCa(dir));
      expect(err).to.be.instanceOf(NotFoundError);
      expect(err.message).to.include(`no ca.crt in ${dir}`).and.include(`tessera certs init --dir ${dir}`);
      await writeFile(path.join(dir, 'ca.crt'), ca.certPem);
      expect((await rejection(readCa(dir))).message).to.include('no ca.key in');
      await writeFile(path.join(dir, 'ca.key'), ca.keyPem);
      expect(await readCa(dir)).to.deep.equal(ca);
    });
  });

  describe('test/helpers/tls makeTlsDirs', () => {
    let root: string;
    before(async () => (root = await mkdtemp(path.join(tmpdir(), 'tessera-tls-dirs-'))));
    after(async () => rm(root, { recursive: true, force: true }));

    it('makes one --tls-dir per identity under one CA: current ones shake hands, an expired one and the intruder do not', async () => {
      const { caDir, dirs } = await makeTlsDirs(root, 'c1', [{ role: 'shard', id: 's0' }, { role: 'worker', id: 'w0' }, { role: 'worker', id: 'w-old', expired: true }], { otherCa: true });
      expect(caDir).to.equal(path.join(root, 'ca'));
      expect(Object.keys(dirs)).to.have.members(['shard-s0', 'worker-w0', 'worker-w-old', 'intruder']);
      expect(dirs['intruder']).to.equal(path.join(root, 'worker-intruder'));
      const load = async (dir: string): Promise<Pems> => ({
        ca: await readFile(path.join(dir, 'ca.crt'), 'utf8'),
        cert: await readFile(path.join(dir, 'tls.crt'), 'utf8'),
        key: await readFile(path.join(dir, 'tls.key'), 'utf8'),
      });
      const shardPems = await load(dirs['shard-s0']!);
      expect(shardPems.ca).to.equal(await readFile(path.join(caDir, 'ca.crt'), 'utf8'));
      const ok = await handshake(shardPems, await load(dirs['worker-w0']!));
      expect(identityOfAltNames(ok.server.altNames)).to.deep.equal({ cluster: 'c1', role: 'worker', id: 'w0' });
      expect((await handshake(shardPems, await load(dirs['worker-w-old']!))).server.ok).to.equal(false);
      const intruder = await handshake(shardPems, await load(dirs['intruder']!));
      expect(intruder.server.ok).to.equal(false);
      expect(identityOfAltNames(new X509Certificate(await readFile(path.join(dirs['intruder']!, 'tls.crt'))).subjectAltName)).to.deep.equal({ cluster: 'c1', role: 'worker', id: 'intruder' });
    });
  });

  describe('in a TLS handshake', () => {
    it('is accepted by Node: each end sees the other, the server reads the client\'s identity', async () => {
      const { server, client } = await handshake(pems(ca, shard), pems(ca, worker));
      expect(client).to.deep.equal({ ok: true });
      expect(server.ok, server.error).to.equal(true);
      expect(server.altNames).to.include('URI:spiffe://tessera/c1/worker/w7');
      expect(identityOfAltNames(server.altNames)).to.deep.equal({ cluster: 'c1', role: 'worker', id: 'w7' });
    });

    it("refuses a client whose certificate another CA signed, even one of the same name", async () => {
      const otherCa = await createCa({ cluster: 'c1' });
      const intruder = await issueCertificate({ ca: otherCa, cluster: 'c1', role: 'worker', id: 'intruder' });
      const { server, client } = await handshake(pems(ca, shard), pems(ca, intruder));
      expect(server.ok).to.equal(false);
      expect(client.ok).to.equal(false);
    });

    it('refuses a server whose certificate another CA signed', async () => {
      const otherCa = await createCa({ cluster: 'c1' });
      const impostor = await issueCertificate({ ca: otherCa, cluster: 'c1', role: 'shard', id: 'shard-0' });
      const { server, client } = await handshake(pems(ca, impostor), pems(ca, worker));
      expect(client.ok).to.equal(false);
      expect(server.ok).to.equal(false);
    });

    it('refuses an expired certificate, at either end', async () => {
      const expired = { notBefore: new Date(Date.now() - 2 * DAY_MS), notAfter: new Date(Date.now() - DAY_MS) };
      const oldWorker = await issueCertificate({ ca, cluster: 'c1', role: 'worker', id: 'w-old', ...expired });
      const oldShard = await issueCertificate({ ca, cluster: 'c1', role: 'shard', id: 's-old', ...expired });
      // The same pairs with current certificates shake hands (the first test): only the dates differ.
      const asClient = await handshake(pems(ca, shard), pems(ca, oldWorker));
      // Node's server reports a refused client certificate as a reset ("socket hang up"), without the reason.
      expect(asClient.server.ok).to.equal(false);
      expect(asClient.client.ok).to.equal(false);
      const asServer = await handshake(pems(ca, oldShard), pems(ca, worker));
      expect(asServer.client.ok).to.equal(false);
      expect(asServer.client.error).to.equal('certificate has expired');
      expect(asServer.server.ok).to.equal(false);
    });

    it('is accepted by grpc-js, which checks the server against its IP address', async () => {
      const server = new grpc.Server();
      const credentials = grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ private_key: Buffer.from(shard.keyPem), cert_chain: Buffer.from(shard.certPem) }], true);
      const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', credentials, (err, p) => (err ? reject(err) : resolve(p))));
      const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(ca.certPem), Buffer.from(worker.keyPem), Buffer.from(worker.certPem)));
      try {
        await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 20_000, (err) => (err ? reject(err) : resolve())));
      } finally {
        client.close();
        server.forceShutdown();
      }
    });
  });
});
