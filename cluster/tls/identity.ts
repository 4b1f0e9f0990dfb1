/**
 * Who a peer is, as its certificate says: a SPIFFE-style URI in the
 * certificate's subject alternative names,
 *
 *     spiffe://tessera/<cluster>/<role>/<id>
 *
 * issued by the cluster's CA (`tessera certs issue`, docs/security.md). The
 * role decides what the peer may call (cluster/tls/authorization.ts); the id
 * is the shard id or the worker id it acts as.
 */

export const ROLES = ['shard', 'worker', 'admin', 'reader'] as const;
export type Role = (typeof ROLES)[number];

export interface Identity {
  cluster: string;
  role: Role;
  id: string;
}

/** Cluster names and ids: short and printable, so they fit a URI path segment, a file name and a log line. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Why `name` cannot be a cluster name or an id, or null when it can. */
export function badName(name: string, what: string): string | null {
  return NAME.test(name) ? null : `${what} "${name.slice(0, 80)}" must be 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit`;
}

export function isRole(s: string): s is Role {
  return (ROLES as readonly string[]).includes(s);
}

/** The URI of `identity`. @throws Error for a name that does not fit. */
export function spiffeUri(identity: Identity): string {
  for (const [v, what] of [
    [identity.cluster, 'cluster name'],
    [identity.id, 'id'],
  ] as const) {
    const bad = badName(v, what);
    if (bad) throw new Error(bad);
  }
  if (!isRole(identity.role)) throw new Error(`role "${identity.role}" is not one of ${ROLES.join(', ')}`);
  return `spiffe://tessera/${identity.cluster}/${identity.role}/${identity.id}`;
}

/** The identity a URI names, or null when it is not a Tessera identity. */
export function parseSpiffeUri(uri: string): Identity | null {
  const m = /^spiffe:\/\/tessera\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(uri);
  if (!m) return null;
  const [, cluster, role, id] = m;
  if (!isRole(role!) || badName(cluster!, 'cluster') || badName(id!, 'id')) return null;
  return { cluster: cluster!, role, id: id! };
}

/**
 * The Tessera identity among a certificate's subject alternative names, as
 * Node prints them (`PeerCertificate.subjectaltname`, `X509Certificate.subjectAltName`:
 * `"DNS:a, URI:spiffe://…, IP Address:…"`), or null when there is none or
 * more than one.
 */
export function identityOfAltNames(altNames: string | undefined): Identity | null {
  if (!altNames) return null;
  const found = altNames
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('URI:'))
    .map((s) => parseSpiffeUri(s.slice(4)))
    .filter((x): x is Identity => x !== null);
  return found.length === 1 ? found[0]! : null;
}

export function describeIdentity(i: Identity): string {
  return `${i.role} "${i.id}" of cluster "${i.cluster}"`;
}

/** "a shard", "an admin"…: a role with its article, for messages. */
export function aRole(role: Role): string {
  return `${/^[aeiou]/.test(role) ? 'an' : 'a'} ${role}`;
}
