import { X509Certificate, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { InvalidArgumentError } from '../errors.js';
import { createLogger } from '../log.js';
import { type Identity, describeIdentity, identityOfAltNames } from './identity.js';

const log = createLogger('tls');

/** The files of a `--tls-dir`, named as a Kubernetes TLS Secret (and cert-manager) names them. */
export const TLS_FILES = { ca: 'ca.crt', cert: 'tls.crt', key: 'tls.key' } as const;

/** How often the files are read again to pick up a rotated certificate. */
export const TLS_RELOAD_MS = 2_000;

/** One reading of the three files. */
export interface TlsFiles {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/**
 * A process's TLS material from a `--tls-dir`: the cluster CA, its own
 * certificate and key, and the identity that certificate carries. The files
 * are read again every {@link TLS_RELOAD_MS}; when they change (a rotation:
 * new files written into the directory, or a Kubernetes Secret's update) the
 * listeners told through {@link onChange} switch to them, and connections
 * made from then on use them. A reading that does not parse, or whose
 * certificate names another identity, is refused with a warning and the
 * previous material stays in use.
 */
export class TlsMaterial {
  private files: TlsFiles;
  private context: tls.SecureContext;
  private digest: string;
  private readonly listeners = new Set<(files: TlsFiles) => void>();
  private timer: NodeJS.Timeout | null = null;

  private constructor(
    readonly dir: string,
    readonly identity: Identity,
    files: TlsFiles,
  ) {
    this.files = files;
    this.context = tls.createSecureContext(files);
    this.digest = digestOf(files);
  }

  /**
   * Reads `dir` and checks it: the three files present, the key matching the
   * certificate, the certificate issued by the CA and carrying one Tessera
   * identity of `cluster` (when given).
   * @throws InvalidArgumentError saying which file is missing or wrong and what to do.
   */
  static load(dir: string, cluster?: string): TlsMaterial {
    const files = readTlsDir(dir);
    const identity = checkTlsFiles(files, dir, cluster);
    const m = new TlsMaterial(dir, identity, files);
    m.timer = setInterval(() => m.reload(), TLS_RELOAD_MS);
    m.timer.unref();
    log.debug(`TLS from ${dir}: ${describeIdentity(identity)}`);
    return m;
  }

  /** The files as last read. */
  get current(): TlsFiles {
    return this.files;
  }

  /** A secure context over the current files, for node:tls sockets and grpc-js channels. */
  get secureContext(): tls.SecureContext {
    return this.context;
  }

  /** Calls `fn` with the new files after each rotation; returns a function that stops it. */
  onChange(fn: (files: TlsFiles) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Reads the files again now (the timer does it every {@link TLS_RELOAD_MS}); returns whether they changed. */
  reload(): boolean {
    let files: TlsFiles;
    try {
      files = readTlsDir(this.dir);
      const digest = digestOf(files);
      if (digest === this.digest) return false;
      const identity = checkTlsFiles(files, this.dir, this.identity.cluster);
      if (identity.role !== this.identity.role || identity.id !== this.identity.id) {
        throw new InvalidArgumentError(`the new certificate names ${describeIdentity(identity)}, not ${describeIdentity(this.identity)}`);
      }
      this.context = tls.createSecureContext(files);
      this.files = files;
      this.digest = digest;
    } catch (err) {
      log.warn(`TLS files in ${this.dir} changed but cannot be used (${(err as Error).message}); keeping the previous ones`);
      return false;
    }
    log.info(`TLS files in ${this.dir} reloaded`);
    for (const fn of this.listeners) fn(files);
    return true;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.listeners.clear();
  }
}

function readTlsDir(dir: string): TlsFiles {
  const read = (name: string) => {
    try {
      return readFileSync(path.join(dir, name));
    } catch (err) {
      throw new InvalidArgumentError(`cannot read ${path.join(dir, name)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); a --tls-dir holds ${Object.values(TLS_FILES).join(', ')} (make them with \`tessera certs issue\`)`);
    }
  };
  return { ca: read(TLS_FILES.ca), cert: read(TLS_FILES.cert), key: read(TLS_FILES.key) };
}

/** The identity of `files`' certificate, once the three are checked to belong together. */
function checkTlsFiles(files: TlsFiles, dir: string, cluster?: string): Identity {
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(files.cert);
    ca = new X509Certificate(files.ca);
  } catch (err) {
    throw new InvalidArgumentError(`${dir}: ${TLS_FILES.cert} or ${TLS_FILES.ca} is not a PEM certificate (${(err as Error).message})`);
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) throw new InvalidArgumentError(`${dir}: ${TLS_FILES.cert} was not issued by the CA in ${TLS_FILES.ca}`);
  try {
    tls.createSecureContext(files);
  } catch (err) {
    throw new InvalidArgumentError(`${dir}: ${TLS_FILES.key} does not go with ${TLS_FILES.cert} (${(err as Error).message})`);
  }
  const identity = identityOfAltNames(cert.subjectAltName);
  if (!identity) throw new InvalidArgumentError(`${dir}: ${TLS_FILES.cert} carries no Tessera identity (a URI spiffe://tessera/<cluster>/<role>/<id>); issue it with \`tessera certs issue\``);
  if (cluster !== undefined && identity.cluster !== cluster) throw new InvalidArgumentError(`${dir}: the certificate is for cluster "${identity.cluster}", not "${cluster}"`);
  if (Date.parse(cert.validTo) < Date.now()) throw new InvalidArgumentError(`${dir}: ${TLS_FILES.cert} expired on ${cert.validTo}; issue a new one`);
  return identity;
}

function digestOf(files: TlsFiles): string {
  return createHash('sha256').update(files.ca).update(files.cert).update(files.key).digest('hex');
}
