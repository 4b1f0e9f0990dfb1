import path from 'node:path';
import { createCa, issueCertificate, writeCa, writeTlsDir } from '../../cluster/tls/certificates.js';
import { type Role } from '../../cluster/tls/identity.js';

const DAY_MS = 86_400_000;

/** The directories {@link makeTlsDirs} made. */
export interface TlsDirs {
  /** The cluster's CA: `ca.crt`, `ca.key`. */
  caDir: string;
  /** One `--tls-dir` per identity, keyed `<role>-<id>`; `intruder` with `otherCa`. */
  dirs: Record<string, string>;
}

/**
 * A CA for `cluster` under `root/ca` and one `--tls-dir` per identity under
 * `root/<role>-<id>`, as `tessera certs init` / `certs issue` write them;
 * every certificate also names `localhost` and `127.0.0.1`, so a client that
 * checks the host name accepts a server on loopback. An identity with `expired: true` gets a certificate that ended yesterday. With
 * `otherCa`, also a second, unrelated CA of the same name under
 * `root/other-ca` and, issued by it, `root/worker-intruder` (keyed
 * `intruder`): a worker of the same cluster whose `ca.crt` is the real CA, so
 * that it trusts the cluster's servers and the only thing wrong is who signed
 * its own certificate.
 */
export async function makeTlsDirs(root: string, cluster: string, identities: { role: Role; id: string; expired?: boolean }[], options: { otherCa?: boolean } = {}): Promise<TlsDirs> {
  const ca = await createCa({ cluster });
  const caDir = path.join(root, 'ca');
  await writeCa(caDir, ca);
  const dirs: Record<string, string> = {};
  for (const { role, id, expired } of identities) {
    const past = expired ? { notBefore: new Date(Date.now() - 2 * DAY_MS), notAfter: new Date(Date.now() - DAY_MS) } : {};
    const leaf = await issueCertificate({ ca, cluster, role, id, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], ...past });
    const key = `${role}-${id}`;
    dirs[key] = path.join(root, key);
    await writeTlsDir(dirs[key], { caCertPem: ca.certPem, ...leaf });
  }
  if (options.otherCa) {
    const other = await createCa({ cluster });
    await writeCa(path.join(root, 'other-ca'), other);
    const leaf = await issueCertificate({ ca: other, cluster, role: 'worker', id: 'intruder', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    dirs['intruder'] = path.join(root, 'worker-intruder');
    await writeTlsDir(dirs['intruder'], { caCertPem: ca.certPem, ...leaf });
  }
  return { caDir, dirs };
}
