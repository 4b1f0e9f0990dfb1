import { X509Certificate } from 'node:crypto';
import { access } from 'node:fs/promises';
import path from 'node:path';
import { DEFAULT_CLUSTER_NAME } from '../../cluster/cluster-config.js';
import {
  CA_CERT_FILE,
  CA_KEY_FILE,
  clusterOfCa,
  createCa,
  DEFAULT_CA_DAYS,
  DEFAULT_CERT_DAYS,
  issueCertificate,
  leafProblem,
  readCa,
  writeCa,
  writeTlsDir,
} from '../../cluster/tls/certificates.js';
import { badName, ROLES, spiffeUri, type Role } from '../../cluster/tls/identity.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';

/** `tessera certs init`: the cluster's CA, written once into a directory kept off the cluster's hosts. */
export const certsInitCommand: Command = {
  name: 'certs init',
  summary: "Create the cluster's certificate authority: ca.crt and ca.key in a directory (docs/security.md).",
  options: [
    { name: 'dir', type: 'string', metavar: 'DIR', required: true, description: 'directory to write ca.crt and ca.key to (created 0700 if missing)' },
    { name: 'cluster', type: 'string', default: DEFAULT_CLUSTER_NAME, metavar: 'NAME', description: 'cluster the CA vouches for' },
    { name: 'days', type: 'int', default: DEFAULT_CA_DAYS, description: 'days the CA is valid for' },
    { name: 'force', type: 'boolean', description: 'replace an existing CA (every certificate it issued stops verifying)' },
    { name: 'json', type: 'boolean', description: 'print what was written as JSON' },
  ],
  async run(o) {
    const dir = o['dir'] as string;
    const cluster = o['cluster'] as string;
    const days = o['days'] as number;
    const problem = badName(cluster, 'cluster name') ?? (days < 1 ? `--days must be at least 1, got ${days}` : null);
    if (problem) throw new UsageError(problem);
    const existing = await existingFiles(dir, [CA_CERT_FILE, CA_KEY_FILE]);
    if (existing.length > 0 && !o['force']) {
      throw new UsageError(`${existing.join(' and ')} already exist: pass --force to replace the CA (every certificate it issued must then be issued again), or choose another --dir`);
    }
    const ca = await createCa({ cluster, days });
    const files = await writeCa(dir, ca);
    const notAfter = validUntil(ca.certPem);
    if (o['json']) {
      process.stdout.write(`${JSON.stringify({ cluster, files, notAfter, replaced: existing.length > 0 })}\n`);
      return EXIT.ok;
    }
    const clusterFlag = cluster === DEFAULT_CLUSTER_NAME ? '' : ` --cluster ${cluster}`;
    process.stdout.write(
      `wrote ${files.join(', ')}: the CA of cluster "${cluster}", valid until ${notAfter.slice(0, 10)}.\n` +
        `Keep ${CA_KEY_FILE} secret and off the cluster's hosts; only ${CA_CERT_FILE} is shared.\n` +
        (existing.length > 0 ? 'The previous CA was replaced: issue every certificate again.\n' : '') +
        `Next, a certificate per process: \`tessera certs issue --dir ${dir}${clusterFlag} --role shard --id shard-0\`.\n`,
    );
    return EXIT.ok;
  },
};

/** `tessera certs issue`: one process's `--tls-dir` (ca.crt, tls.crt, tls.key), signed by the CA. */
export const certsIssueCommand: Command = {
  name: 'certs issue',
  summary: "Issue a process's certificate, signed by the CA in --dir: tls.crt, tls.key and ca.crt, ready for --tls-dir.",
  options: [
    { name: 'dir', type: 'string', metavar: 'DIR', required: true, description: 'directory of the CA (`tessera certs init`)' },
    { name: 'role', type: 'string', required: true, choices: ROLES, metavar: 'ROLE', description: 'what the process is, which decides what it may call' },
    { name: 'id', type: 'string', required: true, metavar: 'ID', description: 'the shard id, worker id or name the process acts as' },
    { name: 'cluster', type: 'string', metavar: 'NAME', description: "cluster name (default: the CA's)" },
    { name: 'days', type: 'int', default: DEFAULT_CERT_DAYS, description: "days the certificate is valid for (never past the CA's end)" },
    { name: 'dns', type: 'string', metavar: 'NAME,…', description: 'comma-separated DNS names the process is reached at' },
    { name: 'ip', type: 'string', metavar: 'IP,…', description: 'comma-separated IP addresses the process is reached at' },
    { name: 'out', type: 'string', metavar: 'DIR', description: 'directory to write to, replacing what is there (default DIR/<role>-<id>)' },
    { name: 'json', type: 'boolean', description: 'print what was written as JSON' },
  ],
  async run(o) {
    const dir = o['dir'] as string;
    const role = o['role'] as Role;
    const id = o['id'] as string;
    const days = o['days'] as number;
    const dnsNames = list(o['dns']);
    const ipAddresses = list(o['ip']);
    const ca = await readCa(dir);
    const caCluster = clusterOfCa(ca.certPem);
    const cluster = (o['cluster'] as string | undefined) ?? caCluster ?? DEFAULT_CLUSTER_NAME;
    if (caCluster !== null && cluster !== caCluster) throw new UsageError(`the CA in ${dir} is cluster "${caCluster}"'s: drop --cluster (or pass --cluster ${caCluster}), or point --dir at cluster "${cluster}"'s CA`);
    const problem = leafProblem({ cluster, role, id, days, dnsNames, ipAddresses });
    if (problem) throw new UsageError(problem);
    const out = (o['out'] as string | undefined) ?? path.join(dir, `${role}-${id}`);
    const leaf = await issueCertificate({ ca, cluster, role, id, days, dnsNames, ipAddresses });
    const files = await writeTlsDir(out, { caCertPem: ca.certPem, ...leaf });
    const uri = spiffeUri({ cluster, role, id });
    const notAfter = validUntil(leaf.certPem);
    if (o['json']) {
      process.stdout.write(`${JSON.stringify({ uri, dir: out, files, dnsNames, ipAddresses, notAfter })}\n`);
      return EXIT.ok;
    }
    const also = [...dnsNames, ...ipAddresses];
    process.stdout.write(
      `issued ${uri}${also.length > 0 ? ` (also ${also.join(', ')})` : ''}, valid until ${notAfter.slice(0, 10)}\n` +
        `wrote ${files.join(', ')}\n` +
        `Start the process with \`--tls-dir ${out}\`; to rotate, issue again into the same directory.\n`,
    );
    return EXIT.ok;
  },
};

/** The files among `names` that exist in `dir`, as paths. */
async function existingFiles(dir: string, names: readonly string[]): Promise<string[]> {
  const found: string[] = [];
  for (const name of names) {
    const file = path.join(dir, name);
    try {
      await access(file);
      found.push(file);
    } catch {
      // absent: nothing to overwrite
    }
  }
  return found;
}

/** A comma-separated option as a list (args.ts has no repeatable options): empty items dropped. */
function list(value: unknown): string[] {
  return typeof value === 'string' ? value.split(',').map((s) => s.trim()).filter((s) => s.length > 0) : [];
}

/** The end of a certificate's validity, as ISO 8601. */
function validUntil(certPem: string): string {
  return new Date(new X509Certificate(certPem).validTo).toISOString();
}
