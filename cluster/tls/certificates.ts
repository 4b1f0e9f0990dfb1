/**
 * The cluster's certificates: a CA per cluster and, signed by it, one
 * certificate per process naming its identity as a SPIFFE URI
 * (cluster/tls/identity.ts). ECDSA P-256 keys, SHA-256 signatures, keys as
 * PKCS#8 PEM: what Node's `tls` and grpc-js take as they are.
 *
 * A process's `--tls-dir` holds the three files of a Kubernetes TLS Secret:
 * `ca.crt`, `tls.crt`, `tls.key`. A CA directory holds `ca.crt` and `ca.key`.
 * `tessera certs init` and `tessera certs issue` (cli/commands/certs.ts) are
 * the commands over these functions; docs/security.md describes both.
 */
// @peculiar/x509 resolves its algorithms through tsyringe, which throws on load unless the
// Reflect metadata API is there: this import has to stay before the library's.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { InvalidArgumentError, NotFoundError } from '../errors.js';
import { badName, isRole, ROLES, spiffeUri, type Role } from './identity.js';

/** File names in a CA directory and in a `--tls-dir`, as a Kubernetes TLS Secret names them. */
export const CA_CERT_FILE = 'ca.crt';
export const CA_KEY_FILE = 'ca.key';
export const TLS_CERT_FILE = 'tls.crt';
export const TLS_KEY_FILE = 'tls.key';

export const DEFAULT_CA_DAYS = 3650;
export const DEFAULT_CERT_DAYS = 365;

const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
/** Certificates are valid from a few minutes before they are made, so a host whose clock is a little behind the issuer's accepts a new one at once. */
const BACKDATE_MS = 5 * 60_000;
/** A DNS name: dot-separated labels of letters, digits and inner hyphens, optionally behind one leading wildcard label. */
const DNS_NAME = /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
/** The CA's subject, which names its cluster. */
const CA_COMMON_NAME = /^tessera (\S+) CA$/;

// Node's WebCrypto, passed to every call of the library rather than installed as its global provider.
const crypto = webcrypto;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** A certificate and its private key, both PEM (the key PKCS#8). */
export interface CertificateAndKey {
  certPem: string;
  keyPem: string;
}

export interface CaOptions {
  cluster: string;
  /** Days the CA is valid for. Default {@link DEFAULT_CA_DAYS}. */
  days?: number;
  /** When the CA is made. Default now. */
  now?: Date;
}

export interface IssueOptions {
  /** The cluster's CA, as {@link createCa} or {@link readCa} gives it. */
  ca: CertificateAndKey;
  cluster: string;
  role: Role;
  /** The shard id, worker id… the process acts as. */
  id: string;
  /** Days the certificate is valid for, from now. Default {@link DEFAULT_CERT_DAYS}. */
  days?: number;
  /** Overrides the start of validity (default a few minutes ago): tests make expired certificates with it. */
  notBefore?: Date;
  /** Overrides the end of validity (default `days` from now). Never later than the CA's own. */
  notAfter?: Date;
  /** DNS names the process is reached at, for peers that check the host name. */
  dnsNames?: readonly string[];
  /** IP addresses the process is reached at, likewise. */
  ipAddresses?: readonly string[];
}

/**
 * A new self-signed CA for `cluster`: basicConstraints CA:true and keyUsage
 * keyCertSign + cRLSign (both critical), subject `CN=tessera <cluster> CA`.
 * @throws InvalidArgumentError for a cluster name or a number of days that does not fit.
 */
export async function createCa({ cluster, days = DEFAULT_CA_DAYS, now = new Date() }: CaOptions): Promise<CertificateAndKey> {
  const problem = badName(cluster, 'cluster name') ?? badDays(days);
  if (problem) throw new InvalidArgumentError(problem);
  const keys = await generateKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: `CN=tessera ${cluster} CA`,
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter: new Date(now.getTime() + days * DAY_MS),
      signingAlgorithm: SIGNING_ALGORITHM,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return { certPem: certificatePem(cert), keyPem: await privateKeyPem(keys.privateKey) };
}

/**
 * A certificate for one process, signed by `ca`: subject `CN=<role>/<id>`,
 * subjectAltName the identity's URI (`spiffe://tessera/<cluster>/<role>/<id>`)
 * plus any DNS names and IP addresses, basicConstraints CA:false, keyUsage
 * digitalSignature + keyEncipherment (critical), extendedKeyUsage serverAuth +
 * clientAuth (every Tessera process is both a TLS server and a client), and
 * the CA's key identifier.
 * @throws InvalidArgumentError for a role, name, address or validity that does
 *   not fit, or a CA that cannot sign (not a CA, key not its own, expired, of another cluster).
 */
export async function issueCertificate(options: IssueOptions): Promise<CertificateAndKey> {
  const { cluster, role, id, days = DEFAULT_CERT_DAYS, dnsNames = [], ipAddresses = [] } = options;
  const problem = leafProblem({ cluster, role, id, days, dnsNames, ipAddresses });
  if (problem) throw new InvalidArgumentError(problem);
  const { cert: caCert, signingKey } = await openCa(options.ca, cluster);
  const now = Date.now();
  const notBefore = options.notBefore ?? new Date(now - BACKDATE_MS);
  // A certificate cannot usefully outlive the CA that vouches for it.
  const notAfter = new Date(Math.min((options.notAfter ?? new Date(now + days * DAY_MS)).getTime(), caCert.notAfter.getTime()));
  if (notAfter <= notBefore) throw new InvalidArgumentError(`the certificate would be valid from ${notBefore.toISOString()} to ${notAfter.toISOString()}: make notAfter later than notBefore`);
  const keys = await generateKeys();
  const caKeyId = caCert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const names: x509.JsonGeneralName[] = [
    { type: 'url', value: spiffeUri({ cluster, role, id }) },
    ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
    ...ipAddresses.map((value) => ({ type: 'ip' as const, value })),
  ];
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: `CN=${role}/${id}`,
      issuer: caCert.subjectName,
      notBefore,
      notAfter,
      signingAlgorithm: SIGNING_ALGORITHM,
      publicKey: keys.publicKey,
      signingKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
        new x509.SubjectAlternativeNameExtension(names, false),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
        caKeyId ? new x509.AuthorityKeyIdentifierExtension(caKeyId) : await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return { certPem: certificatePem(cert), keyPem: await privateKeyPem(keys.privateKey) };
}

/**
 * Why these cannot name a certificate's identity and addresses, or null when
 * they can: the one check behind {@link issueCertificate}, exported so that a
 * command line can refuse the same things as a usage error.
 */
export function leafProblem(o: { cluster: string; role: string; id: string; days?: number; dnsNames?: readonly string[]; ipAddresses?: readonly string[] }): string | null {
  if (!isRole(o.role)) return `role "${o.role}" must be one of ${ROLES.join(', ')}`;
  const bad = badName(o.cluster, 'cluster name') ?? badName(o.id, 'id') ?? (o.days === undefined ? null : badDays(o.days));
  if (bad) return bad;
  const dns = (o.dnsNames ?? []).find((d) => d.length > 253 || !DNS_NAME.test(d));
  if (dns !== undefined) return `DNS name "${dns.slice(0, 80)}" is not a host name: give labels of letters, digits and '-' separated by dots (e.g. shard-0.tessera.svc)`;
  const ip = (o.ipAddresses ?? []).find((a) => isIP(a) === 0);
  if (ip !== undefined) return `IP address "${ip.slice(0, 80)}" is not an IPv4 or IPv6 address (e.g. 10.0.0.7 or fd00::7)`;
  return null;
}

/** The cluster a Tessera CA certificate names in its subject (`CN=tessera <cluster> CA`), or null for another CA. */
export function clusterOfCa(certPem: string): string | null {
  const cn = new x509.X509Certificate(certPem).subjectName.getField('CN')[0];
  return cn === undefined ? null : (CA_COMMON_NAME.exec(cn)?.[1] ?? null);
}

/**
 * The CA kept in `dir` (`ca.crt`, `ca.key`), as written by `tessera certs init`.
 * @throws NotFoundError naming the missing file and the command that creates it.
 */
export async function readCa(dir: string): Promise<CertificateAndKey> {
  const read = async (file: string): Promise<string> => {
    try {
      return await readFile(path.join(dir, file), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      throw new NotFoundError(`no ${file} in ${dir}: create the cluster's CA there with \`tessera certs init --dir ${dir}\`, or point --dir at the directory that holds it`);
    }
  };
  return { certPem: await read(CA_CERT_FILE), keyPem: await read(CA_KEY_FILE) };
}

/** Writes a CA into `dir` (created 0700 if missing): `ca.crt` and `ca.key`, each 0600, each replaced by an atomic rename. */
export async function writeCa(dir: string, ca: CertificateAndKey): Promise<string[]> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files = [path.join(dir, CA_KEY_FILE), path.join(dir, CA_CERT_FILE)];
  await writePrivateFile(files[0]!, ca.keyPem);
  await writePrivateFile(files[1]!, ca.certPem);
  return files;
}

/**
 * Writes a process's `--tls-dir` (created 0700 if missing): `ca.crt`,
 * `tls.key`, `tls.crt`, each 0600 and each replaced by an atomic rename, so
 * re-issuing into the same directory is how a certificate is rotated. The
 * certificate goes last: a process that reloads when it changes finds its key
 * already there.
 */
export async function writeTlsDir(dir: string, files: { caCertPem: string } & CertificateAndKey): Promise<string[]> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const written: [string, string][] = [
    [path.join(dir, CA_CERT_FILE), files.caCertPem],
    [path.join(dir, TLS_KEY_FILE), files.keyPem],
    [path.join(dir, TLS_CERT_FILE), files.certPem],
  ];
  for (const [file, text] of written) await writePrivateFile(file, text);
  return written.map(([file]) => file);
}

/** The CA's certificate and its key ready to sign, once checked to be a CA of `cluster` that can sign now with its own key. */
async function openCa(ca: CertificateAndKey, cluster: string): Promise<{ cert: x509.X509Certificate; signingKey: CryptoKey }> {
  const fix = 'create one with `tessera certs init`';
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(ca.certPem);
  } catch (err) {
    throw new InvalidArgumentError(`the CA certificate is not a PEM certificate (${(err as Error).message}); ${fix}`);
  }
  if (!cert.getExtension(x509.BasicConstraintsExtension)?.ca) throw new InvalidArgumentError(`"${cert.subject}" is not a CA certificate (no basicConstraints CA:true); ${fix}`);
  if (cert.notAfter.getTime() <= Date.now()) throw new InvalidArgumentError(`the CA "${cert.subject}" expired on ${cert.notAfter.toISOString()}; create a new one with \`tessera certs init --force\` and issue every certificate again`);
  const caCluster = clusterOfCa(ca.certPem);
  if (caCluster !== null && caCluster !== cluster) throw new InvalidArgumentError(`the CA is cluster "${caCluster}"'s, not "${cluster}"'s: issue for cluster "${caCluster}" or use cluster "${cluster}"'s CA`);
  let publicDer: Buffer;
  let signingKey: CryptoKey;
  try {
    publicDer = createPublicKey(ca.keyPem).export({ type: 'spki', format: 'der' });
    signingKey = await crypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(ca.keyPem), KEY_ALGORITHM, false, ['sign']);
  } catch (err) {
    throw new InvalidArgumentError(`the CA key is not an ECDSA P-256 private key in PKCS#8 PEM (${(err as Error).message}); ${fix}`);
  }
  if (!publicDer.equals(Buffer.from(cert.publicKey.rawData))) throw new InvalidArgumentError(`the CA key does not belong to the CA certificate "${cert.subject}": keep ca.crt and ca.key from the same \`tessera certs init\``);
  return { cert, signingKey };
}

function badDays(days: number): string | null {
  return Number.isInteger(days) && days >= 1 ? null : `days must be a positive whole number, got ${days}`;
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** 16 random bytes, the first in 0x40–0x7f: a positive DER INTEGER with no leading zero byte (RFC 5280 allows up to 20 octets). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x3f) | 0x40;
  return bytes.toString('hex');
}

function certificatePem(cert: x509.X509Certificate): string {
  return withNewline(cert.toString('pem'));
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  return withNewline(x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY'));
}

function withNewline(pem: string): string {
  const text = pem.replace(/\r\n/g, '\n');
  return text.endsWith('\n') ? text : `${text}\n`;
}

/** Writes `text` to `file` with mode 0600 through a temporary file beside it and a rename, so a reader never sees half a file. */
async function writePrivateFile(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, text, { mode: 0o600, flag: 'wx' });
    await rename(tmp, file);
  } finally {
    await rm(tmp, { force: true });
  }
}
