import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { type CertificateAndKey, issueCertificate } from '../../cluster/tls/certificates.js';

/** The parts of a rendered pod template a sandbox reads. */
export interface SandboxPod {
  spec: {
    containers: SandboxContainer[];
    initContainers?: SandboxContainer[];
    volumes?: {
      name: string;
      emptyDir?: Record<string, unknown>;
      secret?: { secretName: string; items?: { key: string; path: string }[] };
      csi?: { driver: string; volumeAttributes?: Record<string, string> };
    }[];
  };
}
interface SandboxContainer {
  name: string;
  volumeMounts?: { name: string; mountPath: string }[];
}

const CSI = (key: string) => `csi.cert-manager.io/${key}`;

export interface SandboxOptions {
  /** The rendered Secrets' values, by Secret name and key. */
  secrets: Record<string, Record<string, string>>;
  /** The CA that signs the csi volumes' certificates: a Tessera CA of `cluster`. */
  ca: CertificateAndKey;
  cluster: string;
  /** What csi-driver puts for `${POD_NAMESPACE}` and `${POD_NAME}`. */
  namespace: string;
  podName: string;
}

/**
 * A pod's volumes as directories on this machine, so that its containers'
 * scripts and command lines can run here as they would in the pod: an
 * emptyDir is an empty directory, a Secret volume holds the rendered Secret's
 * values, and a cert-manager csi-driver volume holds a certificate issued by
 * `ca` for the DNS names it asks for (`${POD_NAMESPACE}`, `${POD_NAME}` filled in), under
 * the file names it asks for. {@link map} rewrites every mount path in a
 * text to its directory. Tests remove `root` themselves.
 */
export class PodSandbox {
  private readonly dirOfMount = new Map<string, string>();

  private constructor(
    readonly root: string,
    private readonly pod: SandboxPod,
  ) {
    for (const c of [...(pod.spec.initContainers ?? []), ...pod.spec.containers]) {
      for (const m of c.volumeMounts ?? []) {
        const dir = path.join(root, m.name);
        const before = this.dirOfMount.get(m.mountPath);
        if (before !== undefined && before !== dir) throw new Error(`${m.mountPath} is two volumes in one pod: a sandbox cannot map it`);
        this.dirOfMount.set(m.mountPath, dir);
      }
    }
  }

  /** Makes every volume of `pod` under `root`, with the Secrets' values and certificates signed by `ca` (a Tessera CA of `cluster`). */
  static async create(root: string, pod: SandboxPod, o: SandboxOptions): Promise<PodSandbox> {
    const box = new PodSandbox(root, pod);
    for (const v of pod.spec.volumes ?? []) {
      const dir = path.join(root, v.name);
      mkdirSync(dir, { recursive: true });
      if (v.secret) {
        const values = o.secrets[v.secret.secretName];
        if (!values) throw new Error(`no Secret ${v.secret.secretName} for volume ${v.name}`);
        for (const { key, path: file } of v.secret.items ?? Object.keys(values).map((k) => ({ key: k, path: k }))) writeFileSync(path.join(dir, file), values[key]!, { mode: 0o600 });
      } else if (v.csi) {
        await box.issue(v.name, o);
      }
    }
    return box;
  }

  /** Issues a new certificate into csi volume `volume` (as csi-driver does at renewal); the new certificate's PEM. */
  async issue(volume: string, { ca, cluster, namespace, podName }: Omit<SandboxOptions, 'secrets'>): Promise<string> {
    const attrs = this.pod.spec.volumes?.find((v) => v.name === volume)?.csi?.volumeAttributes ?? {};
    const dnsNames = (attrs[CSI('dns-names')] ?? '')
      .split(',')
      .map((n) => n.trim().replaceAll('${POD_NAMESPACE}', namespace).replaceAll('${POD_NAME}', podName))
      .filter(Boolean);
    // A Tessera identity too (issueCertificate always writes one): TLS servers ignore it.
    const leaf = await issueCertificate({ ca, cluster, role: 'admin', id: 'pod-sandbox', dnsNames, days: 1 });
    const dir = path.join(this.root, volume);
    writeFileSync(path.join(dir, attrs[CSI('ca-file')] ?? 'ca.crt'), ca.certPem);
    writeFileSync(path.join(dir, attrs[CSI('certificate-file')] ?? 'tls.crt'), leaf.certPem);
    writeFileSync(path.join(dir, attrs[CSI('privatekey-file')] ?? 'tls.key'), leaf.keyPem, { mode: 0o600 });
    return leaf.certPem;
  }

  /** `text` with every mount path of the pod replaced by its directory here (the longest paths first). */
  map(text: string): string {
    const mounts = [...this.dirOfMount.keys()].sort((a, b) => b.length - a.length);
    const re = new RegExp(mounts.map((m) => m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
    return mounts.length === 0 ? text : text.replace(re, (m) => this.dirOfMount.get(m)!);
  }

  /** The directory here of mount path `mountPath`. */
  dirOf(mountPath: string): string {
    const dir = this.dirOfMount.get(mountPath);
    if (dir === undefined) throw new Error(`nothing is mounted at ${mountPath}`);
    return dir;
  }
}
