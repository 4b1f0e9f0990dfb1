import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { CronJob, Job } from 'kubernetes-models/batch/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service } from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';
import { parseArgs } from '../../../cli/args.js';
import { type Command } from '../../../cli/command.js';
import { checkpointCommand } from '../../../cli/commands/checkpoint.js';
import { exportCommand } from '../../../cli/commands/export.js';
import { initCommand } from '../../../cli/commands/init.js';
import { serveCommand } from '../../../cli/commands/serve.js';
import { shardCommand } from '../../../cli/commands/shard.js';
import { statusCommand } from '../../../cli/commands/status.js';
import { workerCommand } from '../../../cli/commands/worker.js';
import { DEFAULT_CLUSTER_NAME } from '../../../cluster/cluster-config.js';
import { startGrpcServer } from '../../../cluster/grpc-server.js';
import { type Role, parseSpiffeUri } from '../../../cluster/tls/identity.js';
import { TlsMaterial } from '../../../cluster/tls/tls-material.js';
import { makeTlsDirs } from '../../helpers/tls.js';

/*
 * deploy/: the kustomize base and overlays render offline (`kubectl
 * kustomize`), every object passes its Kubernetes schema (kubernetes-models),
 * and the pieces agree with each other and with the `tessera` command: every
 * container's command line parses as the CLI parses it, services select pods
 * that exist and name ports they have, the shard's probe and flags name its
 * own ports and volume, the init Job waits for as many shards as the
 * StatefulSet runs, and the model the export job writes is the one the
 * serving pods read, from the same volume, on the ports their probes and
 * Service name. The Dockerfiles copy only what exists.
 *
 * Security (docs/security.md): in the base and the gpu overlay every tessera
 * process that joins the cluster has `--tls-dir` on a volume that provides
 * ca.crt, tls.crt and tls.key (cert-manager csi-driver, or a Secret), with a
 * certificate naming the pod's own role and id, from an issuer that
 * deploy/cert-manager/issuers.yaml makes; the shard's exec probe passes
 * against a real mutual-TLS server; the dev overlay runs plaintext on
 * purpose (--insecure, no certificates). Every pod runs as non-root with a
 * read-only root, no capabilities and no service-account token; network
 * policies select pods that exist and admit to the shards and Redis exactly
 * the pods that need them; Redis's password lives in a Secret, never in a
 * ConfigMap or on a command line.
 */

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const RENDERS = ['deploy/base', 'deploy/overlays/dev', 'deploy/overlays/gpu'];
/** Renders without cert-manager: plaintext on purpose. */
const PLAINTEXT_RENDERS = new Set(['deploy/overlays/dev']);
const VERBS: Command[] = [initCommand, shardCommand, workerCommand, statusCommand, checkpointCommand, exportCommand, serveCommand];
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Namespace': Namespace,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'batch/v1/Job': Job,
  'batch/v1/CronJob': CronJob,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
};
/** The identity each verb's process holds: the role its certificate must name. */
const ROLE_OF_VERB: Record<string, Role> = { shard: 'shard', worker: 'worker', init: 'admin', status: 'admin', checkpoint: 'admin', export: 'reader', serve: 'reader' };
/** The user each image runs as: `node` (uid/gid 1000) in Tessera's images (deploy/docker), `redis` (999) in Redis's. */
const UID_OF_IMAGE: [RegExp, number][] = [
  [/^tessera(-gpu)?(:|$)/, 1000],
  [/^redis(:|$)/, 999],
];
const CSI_DRIVER = 'csi.cert-manager.io';
const CSI = (key: string) => `csi.cert-manager.io/${key}`;
const TLS_FILES = ['ca.crt', 'tls.crt', 'tls.key'];

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } };
}
interface Probe {
  grpc?: { port: number; service?: string };
  httpGet?: { path: string; port: string | number };
  exec?: { command: string[] };
  tcpSocket?: { port: string | number };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string } }[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  resources?: { limits?: Record<string, unknown> };
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; privileged?: boolean; capabilities?: { drop?: string[]; add?: string[] }; runAsUser?: number; runAsNonRoot?: boolean };
}
interface Volume {
  name: string;
  persistentVolumeClaim?: { claimName: string; readOnly?: boolean };
  emptyDir?: Record<string, unknown>;
  csi?: { driver: string; readOnly?: boolean; volumeAttributes?: Record<string, string> };
  secret?: { secretName: string; items?: { key: string; path: string }[] };
}
interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: {
    containers: Container[];
    initContainers?: Container[];
    volumes?: Volume[];
    automountServiceAccountToken?: boolean;
    securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; runAsGroup?: number; fsGroup?: number; seccompProfile?: { type: string } };
  };
}
interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }[];
}
interface PolicyPort {
  port?: string | number;
  protocol?: string;
}
interface NetworkPolicySpec {
  podSelector: LabelSelector;
  policyTypes?: string[];
  ingress?: { from?: { podSelector?: LabelSelector; namespaceSelector?: LabelSelector; ipBlock?: unknown }[]; ports?: PolicyPort[] }[];
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: Record<string, unknown> & { template?: PodTemplate; jobTemplate?: { spec: { template: PodTemplate } }; selector?: Record<string, string>; ports?: { name: string; targetPort: string | number }[]; replicas?: number; serviceName?: string };
}

function render(dir: string): K8sObject[] {
  const out = spawnSync('kubectl', ['kustomize', dir], { cwd: ROOT, encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${out.stderr}`);
  return parseAllDocuments(out.stdout).map((d) => d.toJS() as K8sObject);
}

const isTessera = (c: Container) => /^tessera(-gpu)?(:|$)/.test(c.image);
const flag = (args: readonly string[], name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
/** Whether a tessera container joins the cluster: every verb but `serve --model-dir`, which only reads files. */
const joinsCluster = (c: Container) => !(c.args?.[0] === 'serve' && flag(c.args, '--model-dir') !== undefined && flag(c.args, '--redis') === undefined && flag(c.args, '--membership') === undefined);

/** Whether `selector` selects a pod with `labels`, as Kubernetes evaluates a LabelSelector. */
function selects(selector: LabelSelector, labels: Record<string, string>): boolean {
  const byLabels = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  const byExpressions = (selector.matchExpressions ?? []).every((e) => {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    switch (e.operator) {
      case 'In':
        return has && (e.values ?? []).includes(labels[e.key]!);
      case 'NotIn':
        return !has || !(e.values ?? []).includes(labels[e.key]!);
      case 'Exists':
        return has;
      case 'DoesNotExist':
        return !has;
    }
  });
  return byLabels && byExpressions;
}

/** A Go duration (as cert-manager reads `duration`, `renew-before`) in seconds. */
function goDurationS(s: string): number {
  const parts = [...s.matchAll(/(\d+(?:\.\d+)?)(h|m|s)/g)];
  expect(parts.map((p) => p[0]).join(''), `a Go duration: ${s}`).to.equal(s);
  return parts.reduce((t, [, n, unit]) => t + Number(n) * { h: 3600, m: 60, s: 1 }[unit as 'h' | 'm' | 's'], 0);
}

/** Where the Dockerfile puts a file of the repository in the image (COPY SRC DEST, relative to the last WORKDIR). */
function imagePathOf(src: string): string {
  const text = readFileSync(`${ROOT}deploy/docker/Dockerfile`, 'utf8');
  const copy = new RegExp(`^COPY ${src.replace(/[.]/g, '\\.')} (\\S+)$`, 'm').exec(text);
  expect(copy, `deploy/docker/Dockerfile copies ${src}`).to.not.equal(null);
  const workdirs = [...text.slice(0, copy!.index).matchAll(/^WORKDIR (\S+)$/gm)];
  return path.posix.resolve(workdirs.at(-1)?.[1] ?? '/', copy![1]!);
}
const PROBE_SOURCE = 'deploy/docker/grpc-health-probe.cjs';

/** Runs `command` (node SCRIPT ARGS…) with the in-image script path mapped to the repository's file; its exit code and output. */
function runProbe(command: readonly string[], replace: Record<string, string>): Promise<{ code: number; out: string }> {
  const [node, script, ...args] = command.map((a) => replace[a] ?? a);
  expect(node).to.equal('node');
  expect(script).to.equal(imagePathOf(PROBE_SOURCE));
  return new Promise((resolve) => {
    execFile(process.execPath, [`${ROOT}${PROBE_SOURCE}`, ...args], { timeout: 15_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as NodeJS.ErrnoException & { code?: unknown }).code ?? 99) : 0, out: `${stdout}${stderr}` });
    });
  });
}

describe('deploy: Kubernetes manifests', function () {
  this.timeout(30_000);
  before(function () {
    if (spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status !== 0) this.skip();
  });

  for (const dir of RENDERS) {
    const tls = !PLAINTEXT_RENDERS.has(dir);
    describe(dir, () => {
      let objects: K8sObject[] = [];
      before(() => {
        objects = render(dir);
      });
      const find = (kind: string, name: string) => {
        const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
        expect(o, `${kind} ${name}`).to.not.equal(undefined);
        return o!;
      };
      // Pod templates: a workload's spec.template, a CronJob's spec.jobTemplate.spec.template.
      const templates = () =>
        objects.flatMap((o) => {
          const template = o.spec?.template ?? o.spec?.jobTemplate?.spec.template;
          return template ? [{ owner: o, template }] : [];
        });
      const tesseraContainers = () => templates().flatMap(({ owner, template }) => template.spec.containers.filter(isTessera).map((c) => ({ owner, template, c })));
      const policies = () => objects.filter((o) => o.kind === 'NetworkPolicy').map((o) => ({ name: o.metadata.name, spec: o.spec as unknown as NetworkPolicySpec }));

      it('renders, and every object passes its Kubernetes schema', () => {
        expect(objects.length).to.be.at.least(16);
        for (const o of objects) {
          const Model = MODELS[`${o.apiVersion}/${o.kind}`];
          expect(Model, `a schema for ${o.apiVersion} ${o.kind}`).to.not.equal(undefined);
          expect(() => new Model!(o as never).validate(), `${o.kind} ${o.metadata.name}`).to.not.throw();
        }
      });

      it("every tessera container's command line parses as the CLI parses it, and names only env vars it defines", () => {
        let seen = 0;
        for (const { owner, template } of templates()) {
          for (const c of template.spec.containers.filter(isTessera)) {
            const [verb, ...rest] = c.args ?? [];
            const command = VERBS.find((v) => v.name === verb);
            expect(command, `${owner.metadata.name}: a tessera verb, got ${verb}`).to.not.equal(undefined);
            expect(() => parseArgs(command!.name, command!.options, rest), `${owner.metadata.name}: tessera ${(c.args ?? []).join(' ')}`).to.not.throw();
            const defined = new Set((c.env ?? []).map((e) => e.name));
            for (const ref of (c.args ?? []).join(' ').matchAll(/\$\(([A-Z_]+)\)/g)) expect(defined.has(ref[1]!), `${owner.metadata.name} uses $(${ref[1]}) without defining it`).to.equal(true);
            seen++;
          }
        }
        expect(seen, 'init, shard, worker, export and serve containers').to.equal(5);
      });

      it('services select pods that exist, on ports those pods have', () => {
        for (const svc of objects.filter((o) => o.kind === 'Service')) {
          const selector = svc.spec!.selector!;
          const pods = templates().filter(({ template }) => Object.entries(selector).every(([k, v]) => template.metadata.labels[k] === v));
          expect(pods, `pods for service ${svc.metadata.name}`).to.have.length(1);
          const ports = pods[0]!.template.spec.containers.flatMap((c) => c.ports ?? []);
          for (const p of svc.spec!.ports!) expect(ports.some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort), `${svc.metadata.name} port ${p.name}`).to.equal(true);
        }
      });

      it("the shard's flags, probes, ports and volume agree, and the init Job waits for as many shards as run", () => {
        const set = find('StatefulSet', 'tessera-shard');
        const shard = set.spec!.template!.spec.containers[0]!;
        const args = shard.args!;
        const port = (name: string) => shard.ports!.find((p) => p.name === name)!.containerPort;
        expect(Number(flag(args, '--listen')!.split(':').pop())).to.equal(port('grpc'));
        expect(Number(flag(args, '--bulk-port'))).to.equal(port('bulk'));
        if (tls) {
          // The kubelet's own grpc probe has no client certificate: an exec probe asks with the pod's.
          const probe = imagePathOf(PROBE_SOURCE);
          const tlsDir = flag(args, '--tls-dir')!;
          expect(shard.readinessProbe?.exec?.command).to.deep.equal(['node', probe, '--port', String(port('grpc')), '--service', 'tessera.v1.Shard', '--tls-dir', tlsDir]);
          expect(shard.livenessProbe?.exec?.command).to.deep.equal(['node', probe, '--port', String(port('grpc')), '--tls-dir', tlsDir]);
        } else {
          expect(shard.readinessProbe?.grpc).to.deep.equal({ port: port('grpc'), service: 'tessera.v1.Shard' });
          expect(shard.livenessProbe?.grpc).to.deep.equal({ port: port('grpc') });
        }
        expect(flag(args, '--advertise')).to.equal(`$(POD_NAME).${set.spec!.serviceName}.$(POD_NAMESPACE).svc:${port('grpc')}`);
        expect(find('Service', set.spec!.serviceName!).spec!['clusterIP'], 'a headless service: one DNS name per shard').to.equal('None');
        expect(shard.volumeMounts!.map((m) => m.mountPath)).to.include(flag(args, '--checkpoint-dir'));
        expect(args).to.include('--resume');
        const init = find('Job', 'tessera-init').spec!.template!.spec.containers[0]!.args!;
        expect(Number(flag(init, '--shards') ?? 1), 'init --shards = shard replicas').to.equal(set.spec!.replicas);
      });

      it('the serving pods read the model the export job writes: same volume, same directory, same name, on the ports their probes and Service use', () => {
        const serving = find('Deployment', 'tessera-serving').spec!.template!;
        const serve = serving.spec.containers[0]!;
        const cron = find('CronJob', 'tessera-export');
        const exportPod = cron.spec!.jobTemplate!.spec.template;
        const exporter = exportPod.spec.containers[0]!;
        expect(serve.args![0]).to.equal('serve');
        expect(exporter.args![0]).to.equal('export');
        expect(cron.spec!['concurrencyPolicy']).to.equal('Forbid');

        // Ports: flags, container ports, probes, Service.
        const port = (name: string) => serve.ports!.find((p) => p.name === name)?.containerPort;
        expect(Number(flag(serve.args!, '--http')!.split(':').pop()), '--http').to.equal(port('http'));
        expect(Number(flag(serve.args!, '--grpc')!.split(':').pop()), '--grpc').to.equal(port('grpc'));
        expect(flag(serve.args!, '--http')!.split(':')[0], 'listens on every interface').to.equal('0.0.0.0');
        expect(flag(serve.args!, '--grpc')!.split(':')[0], 'listens on every interface').to.equal('0.0.0.0');
        expect(serve.readinessProbe?.httpGet).to.deep.equal({ path: '/v2/health/ready', port: 'http' });
        expect(serve.livenessProbe?.httpGet?.path).to.equal('/v2/health/live');
        const svc = find('Service', 'tessera-serving');
        expect(svc.spec!.ports!.map((p) => [p.name, p.targetPort])).to.have.deep.members([['http', 'http'], ['grpc', 'grpc']]);

        // The volume: one claim, read-only where served, writable where exported, at --model-dir = --out.
        const mountOf = (pod: PodTemplate, c: Container, dir: string) => {
          const m = c.volumeMounts?.find((v) => v.mountPath === dir);
          expect(m, `a volume mounted at ${dir}`).to.not.equal(undefined);
          return { mount: m!, claim: pod.spec.volumes?.find((v) => v.name === m!.name)?.persistentVolumeClaim };
        };
        const modelDir = flag(serve.args!, '--model-dir')!;
        const out = flag(exporter.args!, '--out')!;
        expect(out, 'export --out = serve --model-dir').to.equal(modelDir);
        const served = mountOf(serving, serve, modelDir);
        const exported = mountOf(exportPod, exporter, out);
        expect(served.claim?.claimName).to.equal('tessera-models');
        expect(exported.claim?.claimName).to.equal(served.claim?.claimName);
        find('PersistentVolumeClaim', served.claim!.claimName);
        expect(served.mount.readOnly, 'read-only in the serving pods').to.equal(true);
        expect(Boolean(exported.mount.readOnly) || Boolean(exported.claim?.readOnly), 'writable in the export job').to.equal(false);

        // The name: export writes DIR/<cluster's model>/ unless told --name; serve reads DIR/--name/.
        const init = find('Job', 'tessera-init').spec!.template!.spec.containers[0]!.args!;
        const clusterModel = flag(init, '--model');
        expect(clusterModel, 'init --model').to.be.a('string');
        expect(flag(serve.args!, '--name'), 'serve --name = the name export writes under').to.equal(flag(exporter.args!, '--name') ?? clusterModel);

        // The export job finds the cluster as the shards and workers do (TESSERA_REDIS_URL from the
        // Secret); the serving pods must not (it would make serve follow the live cluster and refuse
        // --model-dir).
        expect(exporter.envFrom?.map((e) => e.configMapRef?.name)).to.include('tessera-config');
        expect(exporter.env?.find((e) => e.name === 'TESSERA_REDIS_URL')?.valueFrom?.secretKeyRef?.name).to.equal('tessera-redis');
        expect(serve.envFrom?.some((e) => e.configMapRef?.name === 'tessera-config') ?? false, 'no TESSERA_REDIS_URL in serving').to.equal(false);
        expect((serve.env ?? []).map((e) => e.name)).to.not.include('TESSERA_REDIS_URL');
      });

      if (tls) {
        it('every tessera container that joins the cluster has --tls-dir on a read-only volume that provides ca.crt, tls.crt and tls.key, with a certificate naming its own role and id', () => {
          let joined = 0;
          for (const { owner, template, c } of tesseraContainers()) {
            const args = c.args!;
            const who = `${owner.metadata.name}/${c.name}`;
            const tlsMount = c.volumeMounts?.find((m) => template.spec.volumes?.some((v) => v.name === m.name && (v.csi?.driver === CSI_DRIVER || v.secret)));
            if (!joinsCluster(c)) {
              // `serve --model-dir` reads files only and faces the public: it holds no cluster identity.
              expect(flag(args, '--tls-dir'), `${who}: serve --model-dir joins no cluster`).to.equal(undefined);
              expect(tlsMount, `${who}: no certificate in the public-facing pods`).to.equal(undefined);
              continue;
            }
            joined++;
            const dir = flag(args, '--tls-dir');
            expect(dir, `${who}: --tls-dir`).to.be.a('string');
            const mount = c.volumeMounts?.find((m) => m.mountPath === dir);
            expect(mount, `${who}: a volume mounted at --tls-dir ${dir}`).to.not.equal(undefined);
            expect(mount!.readOnly, `${who}: mounted read-only`).to.equal(true);
            const volume = template.spec.volumes?.find((v) => v.name === mount!.name);
            expect(volume, `${who}: volume ${mount!.name}`).to.not.equal(undefined);

            if (volume!.secret) {
              // A Secret from a cert-manager Certificate (a TLS Secret: ca.crt, tls.crt, tls.key).
              const items = volume!.secret.items;
              if (items) expect(items.map((i) => i.path), `${who}: the Secret's files`).to.include.members(TLS_FILES);
              continue;
            }
            expect(volume!.csi?.driver, `${who}: cert-manager csi-driver or a Secret`).to.equal(CSI_DRIVER);
            expect(volume!.csi!.readOnly, `${who}: csi-driver volumes are read-only`).to.equal(true);
            const attrs = volume!.csi!.volumeAttributes ?? {};
            expect([attrs[CSI('ca-file')], attrs[CSI('certificate-file')], attrs[CSI('privatekey-file')]], `${who}: the files --tls-dir reads`).to.deep.equal(TLS_FILES);
            expect(attrs[CSI('issuer-name')], `${who}: issuer`).to.be.a('string');
            expect(attrs[CSI('key-encoding')], `${who}: key encoding`).to.equal('PKCS8');
            expect(attrs[CSI('key-usages')]?.split(',').map((u) => u.trim()), `${who}: a server and a client`).to.include.members(['server auth', 'client auth']);
            expect(Number(attrs[CSI('fs-group')]), `${who}: the key readable by the container's group`).to.equal(template.spec.securityContext?.runAsGroup);
            expect(goDurationS(attrs[CSI('renew-before')]!), `${who}: renewed before it expires`).to.be.lessThan(goDurationS(attrs[CSI('duration')]!));

            // The identity: spiffe://tessera/<cluster>/<role>/<id>, this process's cluster and role, and its own id.
            const uris = (attrs[CSI('uri-sans')] ?? '').split(',').map((u) => u.trim()).filter(Boolean);
            expect(uris, `${who}: one URI SAN`).to.have.length(1);
            const m = /^spiffe:\/\/tessera\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(uris[0]!);
            expect(m, `${who}: a Tessera identity, got ${uris[0]}`).to.not.equal(null);
            const [, cluster, role, id] = m!;
            expect(cluster, `${who}: the cluster it joins`).to.equal(flag(args, '--cluster') ?? DEFAULT_CLUSTER_NAME);
            expect(role, `${who}: the role of \`tessera ${args[0]}\``).to.equal(ROLE_OF_VERB[args[0]!]);
            expect(template.metadata.labels['tessera.io/role'], `${who}: labelled with its role (the network policies admit by it)`).to.equal(role);
            if (role === 'shard' || role === 'worker') {
              // Per pod: the certificate names the pod, and the pod's name is its --id.
              expect(id, `${who}: the pod's own name`).to.equal('${POD_NAME}');
              expect(flag(args, '--id'), `${who}: --id is the pod name`).to.equal('$(POD_NAME)');
              expect(c.env?.find((e) => e.name === 'POD_NAME')?.valueFrom?.fieldRef?.fieldPath).to.equal('metadata.name');
            }
            expect(parseSpiffeUri(uris[0]!.replace('${POD_NAME}', `${owner.metadata.name}-0`)), `${who}: ${uris[0]} parses as Tessera parses it`).to.not.equal(null);
            // The subject, for people reading logs, as `tessera certs issue` writes it.
            if (attrs[CSI('common-name')] !== undefined) expect(attrs[CSI('common-name')], `${who}: CN role/id`).to.equal(`${role}/${id}`);
          }
          expect(joined, 'init, shard, worker and export').to.equal(4);
        });

        it("the shards' certificates name role shard and the pod (${POD_NAME}), from the CA issuer that deploy/cert-manager/issuers.yaml makes", () => {
          const template = find('StatefulSet', 'tessera-shard').spec!.template!;
          const shard = template.spec.containers[0]!;
          const mount = shard.volumeMounts!.find((m) => m.mountPath === flag(shard.args!, '--tls-dir'))!;
          const attrs = template.spec.volumes!.find((v) => v.name === mount.name)!.csi!.volumeAttributes!;
          expect(attrs[CSI('uri-sans')]).to.equal(`spiffe://tessera/${flag(shard.args!, '--cluster') ?? DEFAULT_CLUSTER_NAME}/shard/\${POD_NAME}`);

          // The issuers file: a CA Issuer of that name, over the Secret of a CA Certificate that the
          // self-signed Issuer makes, ECDSA P-256 in PKCS#8 and named as `tessera certs init` names a CA.
          const docs = parseAllDocuments(readFileSync(`${ROOT}deploy/cert-manager/issuers.yaml`, 'utf8')).map((d) => d.toJS() as { kind: string; metadata: { name: string }; spec: Record<string, never> });
          const issuer = docs.find((d) => d.kind === 'Issuer' && d.metadata.name === attrs[CSI('issuer-name')]);
          expect(issuer, `Issuer ${attrs[CSI('issuer-name')]} in deploy/cert-manager/issuers.yaml`).to.not.equal(undefined);
          expect(attrs[CSI('issuer-kind')]).to.equal('Issuer');
          const caSecret = (issuer!.spec['ca'] as { secretName?: string } | undefined)?.secretName;
          expect(caSecret, 'a CA issuer').to.be.a('string');
          const ca = docs.find((d) => d.kind === 'Certificate' && (d.spec['secretName'] as string) === caSecret) as { spec: { isCA: boolean; commonName: string; privateKey: Record<string, unknown>; issuerRef: { name: string } } } | undefined;
          expect(ca, `the Certificate that makes Secret ${caSecret}`).to.not.equal(undefined);
          expect(ca!.spec.isCA).to.equal(true);
          expect(ca!.spec.commonName).to.equal(`tessera ${DEFAULT_CLUSTER_NAME} CA`);
          expect(ca!.spec.privateKey).to.include({ algorithm: 'ECDSA', size: 256, encoding: 'PKCS8' });
          const root = docs.find((d) => d.kind === 'Issuer' && d.metadata.name === ca!.spec.issuerRef.name);
          expect(root?.spec['selfSigned'], 'the CA is signed by the self-signed bootstrap issuer').to.deep.equal({});
          // Not in the rendered base: their CRDs are not part of it.
          expect(objects.filter((o) => o.apiVersion.startsWith('cert-manager.io/'))).to.have.length(0);
        });

        it("the shard's exec probes pass against a mutual-TLS server that is SERVING, and fail when it is not, or without the certificate", async () => {
          const shard = find('StatefulSet', 'tessera-shard').spec!.template!.spec.containers[0]!;
          const tlsDir = flag(shard.args!, '--tls-dir')!;
          const root = mkdtempSync(path.join(tmpdir(), 'tessera-probe-'));
          const { dirs } = await makeTlsDirs(root, DEFAULT_CLUSTER_NAME, [{ role: 'shard', id: 'tessera-shard-0' }]);
          const material = TlsMaterial.load(dirs['shard-tessera-shard-0']!);
          const server = await startGrpcServer('127.0.0.1:0', [], { kind: 'mtls', material });
          try {
            const port = String(shard.ports!.find((p) => p.name === 'grpc')!.containerPort);
            const replace = { [port]: String(server.port), [tlsDir]: dirs['shard-tessera-shard-0']! };
            const readiness = shard.readinessProbe!.exec!.command;
            const liveness = shard.livenessProbe!.exec!.command;
            server.setServing(['tessera.v1.Shard'], 'NOT_SERVING');
            expect((await runProbe(readiness, replace)).code, 'not ready while NOT_SERVING').to.equal(1);
            expect((await runProbe(liveness, replace)).code, 'not live while NOT_SERVING').to.equal(1);
            server.setServing(['tessera.v1.Shard'], 'SERVING');
            const ready = await runProbe(readiness, replace);
            expect(ready.code, ready.out).to.equal(0);
            const live = await runProbe(liveness, replace);
            expect(live.code, live.out).to.equal(0);
            // Plaintext, as the kubelet's built-in grpc probe asks: refused.
            const plaintext = readiness.slice(0, readiness.indexOf('--tls-dir'));
            expect((await runProbe(plaintext, replace)).code, 'no certificate, no answer').to.equal(2);
          } finally {
            await server.close();
            material.close();
            rmSync(root, { recursive: true, force: true });
          }
        });
      } else {
        it('runs plaintext on purpose: the shards have --insecure and no --tls-dir, and no pod waits for a certificate', () => {
          const shard = find('StatefulSet', 'tessera-shard').spec!.template!.spec.containers[0]!;
          expect(shard.args, 'shard --insecure').to.include('--insecure');
          for (const { owner, template, c } of tesseraContainers()) {
            expect(c.args, `${owner.metadata.name}: no --tls-dir`).to.not.include('--tls-dir');
            expect(template.spec.volumes?.filter((v) => v.csi?.driver === CSI_DRIVER) ?? [], `${owner.metadata.name}: no cert-manager here`).to.have.length(0);
          }
        });
      }

      it('every pod runs as non-root with RuntimeDefault seccomp and no service-account token; every container without privilege escalation, capabilities or a writable root, with writable scratch space mounted', () => {
        // A namespace of our own enforces it too (Pod Security Admission).
        for (const ns of objects.filter((o) => o.kind === 'Namespace')) {
          expect((ns.metadata as { labels?: Record<string, string> }).labels?.['pod-security.kubernetes.io/enforce'], `Namespace ${ns.metadata.name}`).to.equal('restricted');
        }
        for (const { owner, template } of templates()) {
          const spec = template.spec;
          const who = owner.metadata.name;
          expect(spec.automountServiceAccountToken, `${who}: automountServiceAccountToken`).to.equal(false);
          const pod = spec.securityContext ?? {};
          expect(pod.runAsNonRoot, `${who}: runAsNonRoot`).to.equal(true);
          expect(pod.seccompProfile, `${who}: seccompProfile`).to.deep.equal({ type: 'RuntimeDefault' });
          const uid = UID_OF_IMAGE.find(([re]) => spec.containers.every((c) => re.test(c.image)))?.[1];
          expect(uid, `${who}: the user its image runs as`).to.be.a('number');
          expect([pod.runAsUser, pod.runAsGroup], `${who}: runAsUser, runAsGroup`).to.deep.equal([uid, uid]);
          // A volume the pod writes to is writable by its group.
          // (A mount with no volume of the pod is a StatefulSet's volumeClaimTemplate.)
          const writesClaim = spec.containers.some((c) => (c.volumeMounts ?? []).some((m) => { const v = spec.volumes?.find((x) => x.name === m.name); return !m.readOnly && (v === undefined || v.persistentVolumeClaim !== undefined); }));
          if (writesClaim) expect(pod.fsGroup, `${who}: fsGroup for its volume`).to.equal(uid);
          for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
            const sc = c.securityContext ?? {};
            expect(sc.allowPrivilegeEscalation, `${who}/${c.name}: allowPrivilegeEscalation`).to.equal(false);
            expect(sc.readOnlyRootFilesystem, `${who}/${c.name}: readOnlyRootFilesystem`).to.equal(true);
            expect(sc.capabilities?.drop, `${who}/${c.name}: capabilities.drop`).to.deep.equal(['ALL']);
            expect(sc.capabilities?.add ?? [], `${who}/${c.name}: capabilities.add`).to.have.length(0);
            expect(sc.privileged ?? false, `${who}/${c.name}: privileged`).to.equal(false);
            expect(sc.runAsUser ?? uid, `${who}/${c.name}: runAsUser`).to.equal(uid);
            // Scratch: Tessera's /tmp, Redis's working directory /data.
            const scratch = isTessera(c) ? '/tmp' : '/data';
            const m = c.volumeMounts?.find((v) => v.mountPath === scratch);
            expect(m, `${who}/${c.name}: a volume at ${scratch}`).to.not.equal(undefined);
            expect(m!.readOnly ?? false, `${who}/${c.name}: ${scratch} writable`).to.equal(false);
            expect(spec.volumes?.find((v) => v.name === m!.name)?.emptyDir, `${who}/${c.name}: ${scratch} an emptyDir`).to.not.equal(undefined);
          }
        }
      });

      it('network policies select pods that exist, deny ingress to every pod by default, and admit to the shards (on their named ports) and Redis exactly the pods that need them', () => {
        const pods = templates();
        const podName = (t: PodTemplate) => t.metadata.labels['app.kubernetes.io/name']!;
        const selected = (sel: LabelSelector) => pods.filter(({ template }) => selects(sel, template.metadata.labels)).map(({ template }) => template);
        const all = policies();
        expect(all.length, 'network policies').to.be.at.least(4);
        for (const p of all) {
          expect(selected(p.spec.podSelector), `${p.name}: selects pods that exist`).to.not.have.length(0);
          expect(p.spec.policyTypes, `${p.name}: policyTypes`).to.include('Ingress');
          for (const rule of p.spec.ingress ?? []) {
            for (const peer of rule.from ?? []) {
              expect(peer.namespaceSelector ?? peer.ipBlock, `${p.name}: from pods of this namespace only`).to.equal(undefined);
              expect(selected(peer.podSelector!), `${p.name}: admits pods that exist`).to.not.have.length(0);
            }
            // Named ports: each one is a port every selected pod has.
            for (const port of rule.ports ?? []) {
              for (const t of selected(p.spec.podSelector)) {
                const names = t.spec.containers.flatMap((c) => c.ports ?? []).map((cp) => (typeof port.port === 'string' ? cp.name : cp.containerPort));
                expect(names, `${p.name}: port ${port.port} on ${podName(t)}`).to.include(port.port);
              }
            }
          }
        }
        // Default deny: every pod is selected by a policy that allows no ingress at all.
        const denyAll = all.filter((p) => (p.spec.ingress ?? []).length === 0);
        for (const { template } of pods) expect(denyAll.some((p) => selects(p.spec.podSelector, template.metadata.labels)), `${podName(template)}: under a default-deny policy`).to.equal(true);

        /** The pods `target` admits on `port`, by every policy that selects it. */
        const admitted = (target: PodTemplate, port: string) =>
          pods
            .map(({ template }) => template)
            .filter((from) =>
              all.some((p) => selects(p.spec.podSelector, target.metadata.labels) && (p.spec.ingress ?? []).some((r) => (r.ports ?? []).some((rp) => rp.port === port) && (r.from ?? []).some((peer) => selects(peer.podSelector ?? {}, from.metadata.labels)))),
            )
            .map(podName)
            .sort();
        const shard = find('StatefulSet', 'tessera-shard').spec!.template!;
        const joiners = tesseraContainers()
          .filter(({ c }) => joinsCluster(c))
          .map(({ template }) => podName(template))
          .sort();
        expect(joiners, 'the pods that join the cluster').to.deep.equal(['tessera-export', 'tessera-init', 'tessera-shard', 'tessera-worker']);
        const shardPorts = shard.spec.containers[0]!.ports!.map((p) => p.name!);
        const shardPolicies = all.filter((p) => selects(p.spec.podSelector, shard.metadata.labels) && (p.spec.ingress ?? []).length > 0);
        expect(shardPolicies, 'one policy opens the shards').to.have.length(1);
        for (const rule of shardPolicies[0]!.spec.ingress!) expect((rule.ports ?? []).map((p) => p.port), "the shard policy's ports: the shard's named ports").to.have.members(shardPorts);
        for (const port of shardPorts) expect(admitted(shard, port), `the shards' ${port} port admits`).to.deep.equal(joiners);

        const redis = find('Deployment', 'tessera-redis').spec!.template!;
        const usesRedis = pods
          .filter(({ template }) => template.spec.containers.some((c) => c.env?.some((e) => e.name === 'TESSERA_REDIS_URL')))
          .map(({ template }) => podName(template))
          .sort();
        expect(admitted(redis, 'redis'), 'Redis admits the pods that have TESSERA_REDIS_URL').to.deep.equal(usesRedis);

        // Serving: the public face, open to anyone on its own ports.
        const serving = find('Deployment', 'tessera-serving').spec!.template!;
        const open = all.filter((p) => selects(p.spec.podSelector, serving.metadata.labels)).flatMap((p) => p.spec.ingress ?? []);
        expect(open.filter((r) => r.from === undefined).flatMap((r) => (r.ports ?? []).map((p) => p.port))).to.have.members(serving.spec.containers[0]!.ports!.map((p) => p.name!));
      });

      it("Redis's password is in a Secret only: no ConfigMap value or command line holds a password or a URL with credentials, and Redis and Tessera take it from the same Secret", () => {
        const credentials = /password|passwd|requirepass|[a-z][a-z0-9+.-]*:\/\/[^\s/@]*@/i;
        for (const cm of objects.filter((o) => o.kind === 'ConfigMap')) {
          for (const [k, v] of Object.entries(cm.data ?? {})) expect(credentials.test(`${k}=${v}`), `ConfigMap ${cm.metadata.name}: ${k}`).to.equal(false);
        }
        const secretKey = (c: Container, name: string) => c.env?.find((e) => e.name === name)?.valueFrom?.secretKeyRef;
        let urls = 0;
        for (const { owner, template } of templates()) {
          for (const c of template.spec.containers) {
            const who = `${owner.metadata.name}/${c.name}`;
            expect((c.args ?? []).some((a) => /:\/\/[^\s/@]*@/.test(a)), `${who}: no credentials on the command line`).to.equal(false);
            if (isTessera(c)) expect(flag(c.args ?? [], '--redis'), `${who}: --redis (the URL carries the password)`).to.equal(undefined);
            for (const e of c.env ?? []) expect(credentials.test(e.value ?? ''), `${who}: env ${e.name} in clear`).to.equal(false);
            const url = c.env?.find((e) => e.name === 'TESSERA_REDIS_URL');
            if (url) {
              expect(url.valueFrom?.secretKeyRef, `${who}: TESSERA_REDIS_URL from a Secret`).to.not.equal(undefined);
              urls++;
            }
          }
        }
        expect(urls, 'init, shard, worker and export take TESSERA_REDIS_URL').to.equal(4);

        // Redis asks for the password of the Secret the Tessera containers take their URL from.
        const redis = find('Deployment', 'tessera-redis').spec!.template!.spec.containers[0]!;
        const pass = flag(redis.args!, '--requirepass');
        const ref = /^\$\(([A-Z_]+)\)$/.exec(pass ?? '');
        expect(ref, 'redis --requirepass $(VAR)').to.not.equal(null);
        const passKey = secretKey(redis, ref![1]!);
        const urlKey = secretKey(find('StatefulSet', 'tessera-shard').spec!.template!.spec.containers[0]!, 'TESSERA_REDIS_URL')!;
        expect(passKey?.name, 'the same Secret').to.equal(urlKey.name);
        for (const { c } of tesseraContainers()) {
          const k = secretKey(c, 'TESSERA_REDIS_URL');
          if (k) expect(k).to.deep.equal(urlKey);
        }
        // The example Secret: both keys there, and they agree.
        const secret = find('Secret', urlKey.name);
        const value = (k: string) => secret.stringData?.[k] ?? (secret.data?.[k] === undefined ? undefined : Buffer.from(secret.data[k]!, 'base64').toString('utf8'));
        const redisUrl = new URL(value(urlKey.key)!);
        expect(redisUrl.protocol).to.match(/^rediss?:$/);
        expect(decodeURIComponent(redisUrl.password), "the URL's password is Redis's").to.equal(value(passKey!.key));
        expect(redisUrl.hostname).to.equal(find('Service', 'tessera-redis').metadata.name);
      });

      if (dir.endsWith('gpu')) {
        it('workers run the GPU image on a GPU each, with the webgpu backend forced', () => {
          const worker = find('Job', 'tessera-train').spec!.template!.spec.containers[0]!;
          expect(worker.image).to.match(/^tessera-gpu:/);
          expect(flag(worker.args!, '--backend')).to.equal('webgpu');
          expect(worker.resources?.limits?.['nvidia.com/gpu']).to.equal(1);
        });
      }
    });
  }

  it('the Dockerfiles copy only what exists and run bin/tessera.js', () => {
    for (const file of ['deploy/docker/Dockerfile', 'deploy/docker/Dockerfile.gpu']) {
      const text = readFileSync(`${ROOT}${file}`, 'utf8');
      for (const m of text.matchAll(/^COPY (?!--from)(.+)$/gm)) {
        const parts = m[1]!.trim().split(/\s+/);
        for (const src of parts.slice(0, -1)) expect(existsSync(`${ROOT}${src}`), `${file}: COPY ${src}`).to.equal(true);
      }
      // Both run as node (uid 1000), as the pods' securityContext says.
      expect([...text.matchAll(/^USER (\S+)$/gm)].at(-1)?.[1], `${file}: the last USER`).to.equal('node');
    }
    const entry = /^ENTRYPOINT \["node", "\/opt\/tessera\/(bin\/tessera\.js)"\]$/m.exec(readFileSync(`${ROOT}deploy/docker/Dockerfile`, 'utf8'));
    expect(entry, 'ENTRYPOINT').to.not.equal(null);
    expect(existsSync(`${ROOT}${entry![1]}`)).to.equal(true);
  });
});
