import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { InvalidArgumentError } from '../errors.js';
import { type Identity, type Role, aRole, describeIdentity, identityOfAltNames } from './identity.js';
import { type TlsFiles, TlsMaterial } from './tls-material.js';

/**
 * How a process's connections are secured: plaintext, or mutual TLS with its
 * material (cluster/tls/tls-material.ts). Every listener (gRPC, the bulk
 * port) and every client (gRPC channels, bulk connections) takes its
 * credentials from one of these, so a process is either all mTLS or all
 * plaintext. Under mTLS a server asks every client for a certificate issued
 * by the cluster CA and refuses the handshake without one; a client accepts a
 * server only if its certificate carries an identity of the same cluster with
 * a role the client expects there (a shard, for the data and admin planes)
 * — not its host name: shards are dialled by the addresses the map holds.
 */
export type TransportSecurity = { kind: 'plaintext' } | { kind: 'mtls'; material: TlsMaterial };

export const PLAINTEXT: TransportSecurity = { kind: 'plaintext' };

/** Mutual TLS with the material of a `--tls-dir` (TlsMaterial.load, which says what is missing or wrong). */
export function mutualTls(dir: string): TransportSecurity {
  return { kind: 'mtls', material: TlsMaterial.load(dir) };
}

/**
 * The security a process's clients and listeners use when none is passed to
 * them: set once by the command line (`--tls-dir`, cli/tls-options.ts) at
 * start, before anything connects. Libraries take an explicit one wherever
 * a caller needs two identities in one process (tests).
 */
let processDefault: TransportSecurity = PLAINTEXT;

export function setProcessSecurity(security: TransportSecurity): void {
  processDefault = security;
}

export function processSecurity(): TransportSecurity {
  return processDefault;
}

/** Credentials for a gRPC server: plaintext, or mTLS that requires a client certificate and follows rotations. */
export function serverCredentials(security: TransportSecurity): grpc.ServerCredentials {
  if (security.kind === 'plaintext') return grpc.ServerCredentials.createInsecure();
  const provider = new MaterialProvider(security.material);
  return grpc.experimental.createCertificateProviderServerCredentials(provider, provider, true);
}

/**
 * Credentials for a gRPC channel to a server that must hold one of `roles`.
 * Under mTLS they use the material as it is when the channel is made (a
 * client re-dials after a rotation, client/node-pool.ts).
 */
export function channelCredentials(security: TransportSecurity, roles: readonly Role[] = ['shard']): grpc.ChannelCredentials {
  if (security.kind === 'plaintext') return grpc.credentials.createInsecure();
  const cluster = security.material.identity.cluster;
  return grpc.credentials.createFromSecureContext(security.material.secureContext, { checkServerIdentity: (_host, cert) => serverIdentityError(cert, cluster, roles) });
}

/** Why a server's certificate is not one this client may talk to, or undefined when it is. */
export function serverIdentityError(cert: PeerCertificate, cluster: string, roles: readonly Role[]): Error | undefined {
  const identity = identityOfAltNames(cert?.subjectaltname);
  if (!identity) return new Error('the server presented a certificate with no Tessera identity');
  if (identity.cluster !== cluster) return new Error(`the server is ${describeIdentity(identity)}, not of cluster "${cluster}"`);
  if (!roles.includes(identity.role)) return new Error(`the server is ${describeIdentity(identity)}, expected ${roles.map(aRole).join(' or ')}`);
  return undefined;
}

/** The identity in a peer's certificate, as a TLS socket or grpc-js's auth context gives it; null for none. */
export function identityOfPeer(cert: PeerCertificate | null | undefined): Identity | null {
  return cert ? identityOfAltNames(cert.subjectaltname) : null;
}

/**
 * Whether a listener on `host` may run without TLS: loopback addresses only,
 * unless the operator said `--insecure`.
 * @throws InvalidArgumentError saying how to give the process certificates.
 */
export function checkPlaintextListener(security: TransportSecurity, host: string, insecure: boolean, what: string): void {
  if (security.kind === 'mtls' || insecure || isLoopback(host)) return;
  throw new InvalidArgumentError(
    `${what} would listen on ${host || 'every interface'} without TLS: give it --tls-dir DIR (see \`tessera certs issue\`, docs/security.md), or --insecure to serve plaintext on a network you trust`,
  );
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * grpc-js's certificate-provider interface over a TlsMaterial: the current
 * files right after a listener is added, the new ones on each rotation. The
 * first call is deferred to a microtask: grpc-js adds its own watcher only
 * after adding these listeners, and an update sent before would be lost
 * (the server would then drop every connection as "unloaded credentials").
 */
class MaterialProvider implements grpc.experimental.CertificateProvider {
  private readonly ca = new Map<grpc.experimental.CaCertificateUpdateListener, () => void>();
  private readonly identity = new Map<grpc.experimental.IdentityCertificateUpdateListener, () => void>();

  constructor(private readonly material: TlsMaterial) {}

  addCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    const send = (f: TlsFiles) => listener({ caCertificate: f.ca });
    this.ca.set(listener, this.material.onChange(send));
    queueMicrotask(() => send(this.material.current));
  }

  removeCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.ca.get(listener)?.();
    this.ca.delete(listener);
  }

  addIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    const send = (f: TlsFiles) => listener({ certificate: f.cert, privateKey: f.key });
    this.identity.set(listener, this.material.onChange(send));
    queueMicrotask(() => send(this.material.current));
  }

  removeIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identity.get(listener)?.();
    this.identity.delete(listener);
  }
}
