import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { CronJob, Job } from 'kubernetes-models/batch/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
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
import { type Logger } from '../../../cluster/log.js';
import { RedisMembershipStore } from '../../../cluster/membership/redis-store.js';
import { createCa } from '../../../cluster/tls/certificates.js';
import { type Role, parseSpiffeUri } from '../../../cluster/tls/identity.js';
import { TlsMaterial } from '../../../cluster/tls/tls-material.js';
import { run as runCli, waitFor } from '../../helpers/cli.js';
import { PodSandbox } from '../../helpers/pod-sandbox.js';
import { RedisServer, freePort } from '../../helpers/redis-server.js';
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
 * the pods that need them.
 *
 * Redis (docs/security.md): in the base and the gpu overlay it listens on TLS
 * only, with a server certificate from the shards' issuer naming the host the
 * Tessera pods dial, and every Tessera pod that reaches it dials rediss://
 * with that issuer's CA; in the dev overlay, redis:// always goes with
 * TESSERA_REDIS_INSECURE=1. Its one ACL user's password is the Secret's only
 * key and reaches Redis and the Tessera pods as a file from it, never through
 * an env var, a ConfigMap or a command line. And Redis as deployed (its init
 * container's ACL file, its command line, its probe, the container that
 * reloads its certificate) runs against a real redis-server and lets in the
 * Tessera pods as deployed, and nobody without the password.
 *
 * Availability (docs/deploy.md): the init Job may run again (--exists-ok:
 * its command line, run twice against a real redis-server, succeeds twice and
 * writes once) and gives every slot a backup where there are shards for it
 * (--replicas); the shards keep apart by node (anti-affinity or a topology
 * spread on kubernetes.io/hostname) and tell the cluster their node
 * (--topology from spec.nodeName); one PodDisruptionBudget lets one shard at
 * a time go; a startup probe gives a restoring shard minutes before the
 * liveness probe counts.
 *
 * Metrics (docs/operations.md): the shards and workers serve --metrics on a
 * container port named metrics, which a network policy opens to Prometheus's
 * pods in the monitoring namespace alone, and deploy/monitoring/pod-monitor.yaml
 * (a Prometheus Operator PodMonitor, checked by hand: its CRD is not in
 * kubernetes-models) scrapes exactly those pods on that port.
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
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
};
/** The identity each verb's process holds: the role its certificate must name. */
const ROLE_OF_VERB: Record<string, Role> = { shard: 'shard', worker: 'worker', init: 'admin', status: 'admin', checkpoint: 'admin', export: 'reader', serve: 'reader' };
/** The user each image runs as: `node` (uid/gid 1000) in Tessera's images (deploy/docker), `redis` (999) in Redis's. */
const UID_OF_IMAGE: [RegExp, number][] = [
  [/^tessera(-gpu)?(:|$)/, 1000],
  [/^redis(:|$)/, 999],
];
const CSI_DRIVER = 'csi.cert-manager.io';
/** The container port that serves Prometheus metrics (`--metrics`), and the PodMonitor that scrapes it (docs/operations.md). */
const METRICS_PORT = 'metrics';
const POD_MONITOR = 'deploy/monitoring/pod-monitor.yaml';
const CSI = (key: string) => `csi.cert-manager.io/${key}`;
const TLS_FILES = ['ca.crt', 'tls.crt', 'tls.key'];
/** For the Redis clients a test expects to be refused: their warnings are not news. */
const QUIET: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

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
  initialDelaySeconds?: number;
  periodSeconds?: number;
  failureThreshold?: number;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string } }[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { limits?: Record<string, unknown> };
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; privileged?: boolean; capabilities?: { drop?: string[]; add?: string[] }; runAsUser?: number; runAsNonRoot?: boolean };
}
interface Volume {
  name: string;
  persistentVolumeClaim?: { claimName: string; readOnly?: boolean };
  emptyDir?: Record<string, unknown>;
  csi?: { driver: string; readOnly?: boolean; volumeAttributes?: Record<string, string> };
  secret?: { secretName: string; items?: { key: string; path: string }[]; defaultMode?: number };
}
interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: {
    containers: Container[];
    initContainers?: Container[];
    volumes?: Volume[];
    automountServiceAccountToken?: boolean;
    affinity?: { podAntiAffinity?: { requiredDuringSchedulingIgnoredDuringExecution?: AffinityTerm[]; preferredDuringSchedulingIgnoredDuringExecution?: { weight: number; podAffinityTerm: AffinityTerm }[] } };
    topologySpreadConstraints?: { topologyKey: string; maxSkew: number; whenUnsatisfiable: string; labelSelector?: LabelSelector }[];
    securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; runAsGroup?: number; fsGroup?: number; seccompProfile?: { type: string } };
  };
}
interface AffinityTerm {
  topologyKey: string;
  labelSelector?: LabelSelector;
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
  spec?: Record<string, unknown> & { template?: PodTemplate; jobTemplate?: { spec: { template: PodTemplate } }; selector?: Record<string, string>; ports?: { name: string; port?: number; targetPort: string | number }[]; replicas?: number; serviceName?: string };
}

function render(dir: string): K8sObject[] {
  const out = spawnSync('kubectl', ['kustomize', dir], { cwd: ROOT, encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${out.stderr}`);
  return parseAllDocuments(out.stdout).map((d) => d.toJS() as K8sObject);
}

const isTessera = (c: Container) => /^tessera(-gpu)?(:|$)/.test(c.image);
/** Redis's own server: the container with the port named redis (beside it, its init and reload containers). */
const isRedisServer = (c: Container) => c.ports?.some((p) => p.name === 'redis') ?? false;
const envOf = (c: Container, name: string) => c.env?.find((e) => e.name === name);
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

/** A Secret's values, by key (stringData as it is, data decoded). */
function secretValues(secret: K8sObject): Record<string, string> {
  const decoded = Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]);
  return { ...Object.fromEntries(decoded), ...(secret.stringData ?? {}) };
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
      const redisPod = () => find('Deployment', 'tessera-redis').spec!.template!;
      const redisServer = () => {
        const c = redisPod().spec.containers.find(isRedisServer);
        expect(c, "Redis's server container (its port named redis)").to.not.equal(undefined);
        return c!;
      };
      /** The value of `c`'s env var `name`: literal, or from a rendered Secret or ConfigMap. */
      const envValue = (c: Container, name: string) => {
        const e = envOf(c, name);
        const ref = e?.valueFrom?.secretKeyRef ?? e?.valueFrom?.configMapKeyRef;
        if (!ref) return e?.value;
        const o = find(e!.valueFrom!.secretKeyRef ? 'Secret' : 'ConfigMap', ref.name);
        return o.kind === 'Secret' ? secretValues(o)[ref.key] : o.data?.[ref.key];
      };
      /** The Tessera containers that reach Redis (TESSERA_REDIS_URL), with their pods. */
      const redisClients = () => tesseraContainers().filter(({ c }) => envOf(c, 'TESSERA_REDIS_URL') !== undefined);

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
          expect(shard.startupProbe?.exec?.command).to.deep.equal(['node', probe, '--port', String(port('grpc')), '--tls-dir', tlsDir]);
        } else {
          expect(shard.readinessProbe?.grpc).to.deep.equal({ port: port('grpc'), service: 'tessera.v1.Shard' });
          expect(shard.livenessProbe?.grpc).to.deep.equal({ port: port('grpc') });
          expect(shard.startupProbe?.grpc).to.deep.equal({ port: port('grpc') });
        }
        expect(flag(args, '--advertise')).to.equal(`$(POD_NAME).${set.spec!.serviceName}.$(POD_NAMESPACE).svc:${port('grpc')}`);
        expect(find('Service', set.spec!.serviceName!).spec!['clusterIP'], 'a headless service: one DNS name per shard').to.equal('None');
        expect(shard.volumeMounts!.map((m) => m.mountPath)).to.include(flag(args, '--checkpoint-dir'));
        expect(args).to.include('--resume');
        const init = find('Job', 'tessera-init').spec!.template!.spec.containers[0]!.args!;
        expect(Number(flag(init, '--shards') ?? 1), 'init --shards = shard replicas').to.equal(set.spec!.replicas);
      });

      it('availability: every slot has a backup on another node, a drain takes one shard at a time, a restoring shard is not killed, and the init Job may run again', () => {
        const set = find('StatefulSet', 'tessera-shard');
        const template = set.spec!.template!;
        const shard = template.spec.containers[0]!;
        const shards = set.spec!.replicas!;

        // The init Job: idempotent, and as many backups as the shards can place.
        const initArgs = find('Job', 'tessera-init').spec!.template!.spec.containers[0]!.args!;
        const init = parseArgs(initCommand.name, initCommand.options, initArgs.slice(1));
        expect(init['exists-ok'], 'init --exists-ok: a cluster that exists already is success').to.equal(true);
        expect(init['force'] ?? false, 'never --force: a rerun must not overwrite the cluster').to.equal(false);
        const replicas = init['replicas'] as number;
        expect(replicas, 'init --replicas: a backup needs a shard other than its primary').to.be.lessThan(shards);
        if (shards >= 2) {
          expect(replicas, 'init --replicas: a backup of every slot where there is a shard to hold it').to.be.at.least(1);
          // Losing one shard leaves a live copy of every slot and enough shards to hold all of its copies again.
          expect(shards, 'shards >= replicas + 2').to.be.at.least(replicas + 2);
          expect(String(init['consistency']), 'backups need async or ssp:K').to.not.equal('bsp');
        }

        // --topology: the node the pod runs on, from the downward API.
        const topology = flag(shard.args!, '--topology');
        const ref = /^\$\(([A-Z_]+)\)$/.exec(topology ?? '');
        expect(ref, `shard --topology $(VAR), got ${topology}`).to.not.equal(null);
        expect(envOf(shard, ref![1]!)?.valueFrom?.fieldRef?.fieldPath, `${ref![1]}: the node's name`).to.equal('spec.nodeName');

        // Shards spread over nodes: pod anti-affinity or a topology spread on the hostname, over the shard pods.
        const hostname = 'kubernetes.io/hostname';
        const labels = template.metadata.labels;
        const anti = template.spec.affinity?.podAntiAffinity;
        const antiTerms = [...(anti?.requiredDuringSchedulingIgnoredDuringExecution ?? []), ...(anti?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((p) => p.podAffinityTerm)];
        const spread = [
          ...antiTerms.filter((t) => t.topologyKey === hostname && t.labelSelector !== undefined && selects(t.labelSelector, labels)),
          ...(template.spec.topologySpreadConstraints ?? []).filter((t) => t.topologyKey === hostname && t.labelSelector !== undefined && selects(t.labelSelector, labels) && t.maxSkew === 1),
        ];
        expect(spread, `the shards keep apart by ${hostname}`).to.have.length.at.least(1);

        // One PodDisruptionBudget over the shard pods (and nothing else): a drain takes one at a time.
        const pdbs = objects.filter((o) => o.kind === 'PodDisruptionBudget');
        const shardPdbs = pdbs.filter((o) => selects(o.spec!['selector'] as LabelSelector, labels));
        expect(shardPdbs.map((o) => o.metadata.name), 'one PodDisruptionBudget selects the shards').to.have.length(1);
        const pdb = shardPdbs[0]!.spec!;
        expect(pdb['maxUnavailable'], 'maxUnavailable').to.equal(1);
        expect(pdb['minAvailable'], 'maxUnavailable, not minAvailable').to.equal(undefined);
        for (const { owner, template: other } of templates()) if (other !== template) expect(selects(pdb['selector'] as LabelSelector, other.metadata.labels), `the shards' budget selects ${owner.metadata.name}`).to.equal(false);

        // A startup probe that asks what the liveness probe asks, long enough for a large checkpoint to restore.
        const startup = shard.startupProbe;
        expect(startup, 'a startupProbe').to.not.equal(undefined);
        const window = (startup!.failureThreshold ?? 3) * (startup!.periodSeconds ?? 10);
        expect(window, 'startupProbe: failureThreshold x periodSeconds').to.be.at.least(300);
        const check = (p: Probe) => p.exec?.command ?? p.grpc ?? p.httpGet ?? p.tcpSocket;
        expect(check(startup!), 'the startup probe asks what the liveness probe asks').to.deep.equal(check(shard.livenessProbe!));
        expect(shard.livenessProbe!.initialDelaySeconds ?? 0, 'the startup probe, not an initial delay, holds the liveness probe back').to.be.lessThan(window);
      });

      it("the init Job's command line, run twice against a new Redis, creates the cluster and then succeeds without writing", async function () {
        if (spawnSync('sh', ['-c', 'command -v redis-server'], { stdio: 'ignore' }).status !== 0) this.skip();
        const args = [...find('Job', 'tessera-init').spec!.template!.spec.containers[0]!.args!];
        // Here: no certificate (init dials only Redis), a plain Redis on loopback.
        const tlsDir = args.indexOf('--tls-dir');
        if (tlsDir >= 0) args.splice(tlsDir, 2);
        const redis = await RedisServer.start();
        try {
          const env = { TESSERA_REDIS_URL: redis.url, TESSERA_REDIS_PASSWORD_FILE: '', TESSERA_REDIS_CA: '', TESSERA_REDIS_INSECURE: '', TESSERA_TLS_DIR: '' };
          const first = await runCli(args, 60_000, env);
          expect(first.code, `first run: ${first.stdout}${first.stderr}`).to.equal(0);
          expect(first.stdout).to.match(/created/);
          const store = new RedisMembershipStore({ url: redis.url, cluster: DEFAULT_CLUSTER_NAME });
          try {
            const config = await store.getConfig();
            const replicas = parseArgs(initCommand.name, initCommand.options, args.slice(1))['replicas'] as number;
            expect(config?.replicas ?? 0, 'the cluster has the backups the Job asks for').to.equal(replicas);
            const second = await runCli(args, 60_000, env);
            expect(second.code, `second run: ${second.stdout}${second.stderr}`).to.equal(0);
            expect(second.stdout).to.match(/exists already/);
            expect(await store.getConfig(), 'the second run wrote nothing').to.deep.equal(config);
          } finally {
            await store.close();
          }
        } finally {
          await redis.dispose();
        }
      });

      it('the shards and workers serve --metrics on their port named metrics, and the PodMonitor scrapes exactly those pods on it', () => {
        const withMetrics = tesseraContainers().filter(({ c }) => flag(c.args ?? [], '--metrics') !== undefined);
        expect(withMetrics.map(({ c }) => c.args![0]).sort(), 'the verbs that serve metrics').to.deep.equal(['shard', 'worker']);
        for (const { owner, c } of withMetrics) {
          const who = `${owner.metadata.name}/${c.name}`;
          const listen = flag(c.args!, '--metrics')!;
          const port = c.ports?.find((p) => p.name === METRICS_PORT);
          expect(port, `${who}: a container port named ${METRICS_PORT}`).to.not.equal(undefined);
          expect(listen, `${who}: --metrics on every interface, on that port`).to.equal(`0.0.0.0:${port!.containerPort}`);
        }
        for (const { owner, c } of tesseraContainers()) if (flag(c.args ?? [], '--metrics') === undefined) expect(c.ports?.some((p) => p.name === METRICS_PORT) ?? false, `${owner.metadata.name}: a metrics port without --metrics`).to.equal(false);

        // The PodMonitor (its CRD is not in kubernetes-models, nor in the rendered base: its shape by hand).
        expect(objects.filter((o) => o.apiVersion.startsWith('monitoring.coreos.com/')), 'not in the rendered manifests').to.have.length(0);
        type SecretKey = { name: string; key: string };
        type Endpoint = { port?: string; path?: string; scheme?: string; interval?: string; tlsConfig?: { serverName?: string; ca?: { secret: SecretKey }; cert?: { secret: SecretKey }; keySecret?: SecretKey } };
        const docs = parseAllDocuments(readFileSync(`${ROOT}${POD_MONITOR}`, 'utf8')).map(
          (d) => d.toJS() as { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; spec: { selector: LabelSelector; podMetricsEndpoints: Endpoint[]; namespaceSelector?: unknown; secretName?: string; uris?: string[]; usages?: string[]; issuerRef?: { name: string; kind: string } } },
        );
        expect(docs.map((d) => `${d.apiVersion} ${d.kind}`)).to.deep.equal(['monitoring.coreos.com/v1 PodMonitor', 'cert-manager.io/v1 Certificate']);
        const monitor = docs[0]!;
        const clientCert = docs[1]!;
        expect(monitor.metadata.name).to.match(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
        expect(monitor.spec.namespaceSelector, 'the namespace it is applied to').to.equal(undefined);
        const scraped = templates().filter(({ template }) => selects(monitor.spec.selector, template.metadata.labels));
        expect(scraped.map(({ owner }) => owner.metadata.name).sort(), 'selects the shard and worker pods only').to.deep.equal(withMetrics.map(({ owner }) => owner.metadata.name).sort());
        expect(monitor.spec.podMetricsEndpoints, 'one endpoint').to.have.length(1);
        const endpoint = monitor.spec.podMetricsEndpoints[0]!;
        expect(endpoint.port, 'the port by name').to.equal(METRICS_PORT);
        expect(endpoint.path ?? '/metrics').to.equal('/metrics');
        // Under mutual TLS (--tls-dir) --metrics serves HTTPS and asks for a client certificate of the cluster CA:
        // Prometheus presents a reader's, from the Certificate beside the PodMonitor, and checks each pod's
        // certificate under tessera-metrics, a name every scraped pod's certificate carries.
        if (withMetrics.every(({ c }) => flag(c.args!, '--tls-dir') !== undefined)) {
          expect(endpoint.scheme, 'HTTPS, as --metrics serves under mTLS').to.equal('https');
          const t = endpoint.tlsConfig!;
          expect([t.ca?.secret.name, t.cert?.secret.name, t.keySecret?.name], "the client certificate's Secret").to.deep.equal([clientCert.spec.secretName, clientCert.spec.secretName, clientCert.spec.secretName]);
          expect([t.ca?.secret.key, t.cert?.secret.key, t.keySecret?.key]).to.deep.equal(['ca.crt', 'tls.crt', 'tls.key']);
          expect(clientCert.spec.uris, 'a reader: it may read, never write').to.deep.equal(['spiffe://tessera/default/reader/prometheus']);
          expect(clientCert.spec.usages).to.include('client auth');
          const shardCsi = find('StatefulSet', 'tessera-shard').spec!.template!.spec.volumes!.find((v) => v.csi?.driver === CSI_DRIVER)!.csi!.volumeAttributes!;
          expect(clientCert.spec.issuerRef?.name, "the shards' issuer").to.equal(shardCsi[CSI('issuer-name')]);
          for (const { owner, template } of scraped) {
            const attrs = template.spec.volumes!.find((v) => v.csi?.driver === CSI_DRIVER)!.csi!.volumeAttributes!;
            expect((attrs[CSI('dns-names')] ?? '').split(',').map((n) => n.trim()), `${owner.metadata.name}: the name Prometheus checks`).to.include(t.serverName);
          }
        } else {
          // Plaintext (the dev overlay): a listener off loopback without TLS needs --insecure.
          for (const { owner, c } of withMetrics) expect(c.args, `${owner.metadata.name}: --insecure for plaintext metrics on every interface`).to.include('--insecure');
        }
        expect(goDurationS(endpoint.interval ?? '30s'), 'an interval').to.be.within(5, 60);
        // Workers keep /metrics up after they finish for at least one more scrape.
        const worker = withMetrics.find(({ c }) => c.args![0] === 'worker')!.c;
        expect(Number(flag(worker.args!, '--metrics-linger-s') ?? 0), 'workers linger for a last scrape').to.be.at.least(goDurationS(endpoint.interval ?? '30s'));
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

        // The export job finds the cluster as the shards and workers do (TESSERA_REDIS_URL, the
        // password from the Secret); the serving pods must not (it would make serve follow the live
        // cluster and refuse --model-dir).
        expect(exporter.envFrom?.map((e) => e.configMapRef?.name)).to.include('tessera-config');
        expect((exporter.env ?? []).map((e) => e.name)).to.include.members(['TESSERA_REDIS_URL', 'TESSERA_REDIS_PASSWORD_FILE']);
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
            // Scratch: Tessera's /tmp, Redis's working directory /data. A helper beside Redis (its
            // init and reload containers) needs none, but writes to nothing but an emptyDir.
            const scratch = isTessera(c) ? '/tmp' : isRedisServer(c) ? '/data' : undefined;
            if (scratch === undefined) {
              for (const w of (c.volumeMounts ?? []).filter((v) => !v.readOnly)) expect(spec.volumes?.find((v) => v.name === w.name)?.emptyDir, `${who}/${c.name}: writes to ${w.mountPath}, an emptyDir`).to.not.equal(undefined);
              continue;
            }
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
            // The scrape rule: only the metrics port, from Prometheus's pods in the monitoring namespace, never from the cluster's own pods.
            const scrape = (rule.ports ?? []).length > 0 && (rule.ports ?? []).every((port) => port.port === METRICS_PORT);
            for (const peer of rule.from ?? []) {
              if (scrape) {
                expect(peer.ipBlock, `${p.name}: no address blocks`).to.equal(undefined);
                expect(Object.keys(peer.namespaceSelector?.matchLabels ?? {}), `${p.name}: the monitoring namespace, by name`).to.deep.equal(['kubernetes.io/metadata.name']);
                expect(peer.podSelector?.matchLabels, `${p.name}: Prometheus's pods in it, not the whole namespace`).to.not.equal(undefined);
                expect(selected(peer.podSelector!), `${p.name}: admits none of the cluster's own pods`).to.have.length(0);
                continue;
              }
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
        // The shards' data ports (all but metrics): one policy opens them, to the pods that join the cluster.
        const shardPorts = shard.spec.containers[0]!.ports!.map((p) => p.name!).filter((name) => name !== METRICS_PORT);
        const shardPolicies = all.filter((p) => selects(p.spec.podSelector, shard.metadata.labels) && (p.spec.ingress ?? []).some((r) => (r.ports ?? []).some((port) => shardPorts.includes(String(port.port)))));
        expect(shardPolicies, 'one policy opens the shards').to.have.length(1);
        for (const rule of shardPolicies[0]!.spec.ingress!) expect((rule.ports ?? []).map((p) => p.port), "the shard policy's ports: the shard's named data ports").to.have.members(shardPorts);
        for (const port of shardPorts) expect(admitted(shard, port), `the shards' ${port} port admits`).to.deep.equal(joiners);
        // Metrics: every pod with a metrics port has it opened by one policy, to the scraper alone (checked above), and to no pod of the cluster.
        for (const { template } of pods.filter(({ template }) => template.spec.containers.some((c) => c.ports?.some((cp) => cp.name === METRICS_PORT)))) {
          const opening = all.filter((p) => selects(p.spec.podSelector, template.metadata.labels) && (p.spec.ingress ?? []).some((r) => (r.ports ?? []).some((port) => port.port === METRICS_PORT)));
          expect(opening.map((p) => p.name), `${podName(template)}: one policy opens its metrics port`).to.have.length(1);
          expect(admitted(template, METRICS_PORT), `${podName(template)}: no pod of the cluster scrapes it`).to.deep.equal([]);
        }

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

      it("Redis's password is the Secret's one key and reaches Redis and the Tessera pods as a file from it: no ConfigMap, env var or command line holds it", () => {
        const secret = find('Secret', 'tessera-redis');
        expect([...Object.keys(secret.stringData ?? {}), ...Object.keys(secret.data ?? {})], 'the password only: the URL is not secret').to.deep.equal(['password']);
        const password = secretValues(secret)['password']!;
        expect(password, 'a password').to.not.equal('');
        for (const o of objects) if (o !== secret) expect(JSON.stringify(o).includes(password), `${o.kind} ${o.metadata.name} holds the password`).to.equal(false);

        // Nor any other credentials: a URL with a password, a setting named for a password that is not a file's name.
        const urlWithPassword = /[a-z][a-z0-9+.-]*:\/\/[^\s/@:]*:[^\s/@]*@/i;
        const secretName = (name: string) => /pass(word|wd)?|secret|token/i.test(name) && !/_FILE$/.test(name);
        for (const cm of objects.filter((o) => o.kind === 'ConfigMap')) {
          for (const [k, v] of Object.entries(cm.data ?? {})) expect(urlWithPassword.test(v) || secretName(k), `ConfigMap ${cm.metadata.name}: ${k}`).to.equal(false);
        }
        for (const { owner, template } of templates()) {
          for (const c of [...(template.spec.initContainers ?? []), ...template.spec.containers]) {
            const who = `${owner.metadata.name}/${c.name}`;
            const line = [...(c.command ?? []), ...(c.args ?? [])];
            expect(line.some((a) => urlWithPassword.test(a)), `${who}: no credentials on the command line`).to.equal(false);
            expect(line, `${who}: no Redis password on the command line`).to.not.include.members(['--requirepass']);
            if (isTessera(c)) expect(flag(c.args ?? [], '--redis'), `${who}: --redis (TESSERA_REDIS_URL instead)`).to.equal(undefined);
            for (const e of c.env ?? []) {
              expect(urlWithPassword.test(e.value ?? ''), `${who}: env ${e.name}, a URL with a password`).to.equal(false);
              expect(e.valueFrom?.secretKeyRef?.name, `${who}: env ${e.name} from Secret ${secret.metadata.name} (the password goes in a file)`).to.not.equal(secret.metadata.name);
              expect(secretName(e.name) && e.value !== undefined, `${who}: env ${e.name} in clear`).to.equal(false);
            }
          }
        }

        // Every Tessera container that reaches Redis: TESSERA_REDIS_PASSWORD_FILE, the Secret's password
        // in a read-only secret volume that the container's user, and only it (and root), can read.
        /** The secret volume and item that `file` is in, in `template`'s `c`. */
        const secretFile = (template: PodTemplate, c: Container, file: string, who: string) => {
          const mount = c.volumeMounts?.find((m) => path.posix.dirname(file) === m.mountPath);
          expect(mount, `${who}: ${file} in a mounted volume`).to.not.equal(undefined);
          expect(mount!.readOnly, `${who}: ${mount!.mountPath} read-only`).to.equal(true);
          const volume = template.spec.volumes?.find((v) => v.name === mount!.name);
          expect(volume?.secret?.secretName, `${who}: ${file} from Secret ${secret.metadata.name}`).to.equal(secret.metadata.name);
          const base = path.posix.basename(file);
          const key = volume!.secret!.items ? volume!.secret!.items.find((i) => i.path === base)?.key : base;
          expect(key, `${who}: ${file} is the Secret's password`).to.equal('password');
          // A secret volume's files belong to root: the pod's fsGroup, the container's group, reads them.
          const pod = template.spec.securityContext ?? {};
          expect([0o400, 0o440], `${who}: ${file}'s mode`).to.include(volume!.secret!.defaultMode);
          expect(pod.fsGroup, `${who}: fsGroup, the group that reads ${file}`).to.equal(pod.runAsGroup);
        };
        const clients = redisClients();
        expect(clients.map(({ owner }) => owner.metadata.name).sort(), 'the Tessera pods that reach Redis').to.deep.equal(['tessera-export', 'tessera-init', 'tessera-shard', 'tessera-train']);
        for (const { owner, template, c } of clients) {
          const who = `${owner.metadata.name}/${c.name}`;
          const file = envOf(c, 'TESSERA_REDIS_PASSWORD_FILE')?.value;
          expect(file, `${who}: TESSERA_REDIS_PASSWORD_FILE`).to.be.a('string');
          secretFile(template, c, file!, who);
        }
        // Redis reads it from the same Secret, as a file, in the containers that mount it.
        const redis = redisPod();
        const readers = [...(redis.spec.initContainers ?? []), ...redis.spec.containers].filter((c) => c.volumeMounts?.some((m) => redis.spec.volumes?.find((v) => v.name === m.name)?.secret?.secretName === secret.metadata.name));
        expect(readers.length, "Redis's containers that read the password").to.be.at.least(1);
        for (const c of readers) {
          const mount = c.volumeMounts!.find((m) => redis.spec.volumes?.find((v) => v.name === m.name)?.secret)!;
          secretFile(redis, c, `${mount.mountPath}/password`, `tessera-redis/${c.name}`);
        }
      });

      it('every Tessera pod dials Redis as Redis listens: rediss:// to its TLS port, or redis:// to a plain one only with TESSERA_REDIS_INSECURE=1; as a user, never with the password in the URL', () => {
        const redis = redisServer();
        const port = redis.ports!.find((p) => p.name === 'redis')!.containerPort;
        const svc = find('Service', 'tessera-redis');
        const tlsPort = flag(redis.args ?? [], '--tls-port');
        const plainPort = flag(redis.args ?? [], '--port') ?? '6379';
        expect([tlsPort, plainPort], "Redis's port: TLS or plaintext, not both").to.include(String(port));
        for (const { owner, c } of tesseraContainers()) {
          const who = `${owner.metadata.name}/${c.name}`;
          const raw = envValue(c, 'TESSERA_REDIS_URL');
          const insecure = envValue(c, 'TESSERA_REDIS_INSECURE');
          if (raw === undefined) {
            expect(insecure, `${who}: TESSERA_REDIS_INSECURE without a Redis`).to.equal(undefined);
            continue;
          }
          const url = new URL(raw);
          expect(url.password, `${who}: no password in the URL`).to.equal('');
          expect(url.username, `${who}: an ACL user (the test below logs in as it)`).to.not.equal('');
          expect(url.hostname, `${who}: the Service`).to.equal(svc.metadata.name);
          expect(Number(url.port || 6379), `${who}: the Service's port`).to.equal(svc.spec!.ports!.find((p) => p.name === 'redis')!.port);
          if (url.protocol === 'rediss:') {
            expect(tlsPort, `${who}: rediss:// to Redis's TLS port`).to.equal(String(port));
            expect(insecure, `${who}: no TESSERA_REDIS_INSECURE with TLS`).to.equal(undefined);
          } else {
            expect(url.protocol, who).to.equal('redis:');
            expect(tls, `${who}: plaintext Redis only where everything is plaintext (${[...PLAINTEXT_RENDERS].join(', ')})`).to.equal(false);
            expect(plainPort, `${who}: redis:// to Redis's plain port`).to.equal(String(port));
            expect(insecure, `${who}: TESSERA_REDIS_INSECURE=1 with redis:// (the CLI refuses a plaintext URL to another host without it)`).to.equal('1');
          }
        }
      });

      if (tls) {
        it("Redis listens on TLS only, with a server certificate from the shards' issuer naming the host the Tessera pods dial, who check it against that issuer's CA", () => {
          const pod = redisPod();
          const redis = redisServer();
          const args = redis.args!;
          expect(flag(args, '--port'), 'no plaintext port').to.equal('0');
          expect(flag(args, '--tls-port')).to.equal(String(redis.ports!.find((p) => p.name === 'redis')!.containerPort));
          expect(['no', 'optional'], 'clients authenticate with the password (Tessera presents Redis no certificate)').to.include(flag(args, '--tls-auth-clients'));
          expect(args.filter((a) => a === '--user'), 'users from the ACL file, not the command line').to.have.length(0);

          // The certificate: a csi-driver volume, as the shards', but a server's only and no Tessera identity.
          const files = ['--tls-ca-cert-file', '--tls-cert-file', '--tls-key-file'].map((f) => flag(args, f)!);
          const mount = redis.volumeMounts?.find((m) => files.every((f) => f === `${m.mountPath}/${path.posix.basename(f)}`));
          expect(mount, `the TLS files (${files.join(', ')}) in one mounted volume`).to.not.equal(undefined);
          expect(mount!.readOnly).to.equal(true);
          const csi = pod.spec.volumes!.find((v) => v.name === mount!.name)!.csi;
          expect(csi?.driver).to.equal(CSI_DRIVER);
          const attrs = csi!.volumeAttributes!;
          expect([attrs[CSI('ca-file')], attrs[CSI('certificate-file')], attrs[CSI('privatekey-file')]]).to.deep.equal(files.map((f) => path.posix.basename(f)));
          const issuer = (a: Record<string, string>) => ['issuer-name', 'issuer-kind', 'issuer-group'].map((k) => a[CSI(k)]);
          const shard = find('StatefulSet', 'tessera-shard').spec!.template!;
          const shardCsi = shard.spec.volumes!.find((v) => v.csi?.driver === CSI_DRIVER)!.csi!.volumeAttributes!;
          expect(issuer(attrs), "the shards' issuer").to.deep.equal(issuer(shardCsi));
          const svc = find('Service', 'tessera-redis').metadata.name;
          const dnsNames = (attrs[CSI('dns-names')] ?? '').split(',').map((n) => n.trim());
          expect(dnsNames, 'the names Redis is dialled at').to.include.members([svc, `${svc}.\${POD_NAMESPACE}.svc`]);
          expect(attrs[CSI('uri-sans')], 'no Tessera identity').to.equal(undefined);
          const usages = (attrs[CSI('key-usages')] ?? '').split(',').map((u) => u.trim());
          expect(usages, 'a server').to.include('server auth');
          expect(usages, 'not a client').to.not.include('client auth');
          expect(Number(attrs[CSI('fs-group')]), "the key readable by Redis's group").to.equal(pod.spec.securityContext?.runAsGroup);
          expect(goDurationS(attrs[CSI('renew-before')]!), 'renewed before it expires').to.be.lessThan(goDurationS(attrs[CSI('duration')]!));

          // The Tessera side: the CA that csi-driver writes from the same issuer, in a mounted volume.
          for (const { owner, template, c } of redisClients()) {
            const who = `${owner.metadata.name}/${c.name}`;
            expect(dnsNames, `${who}: Redis's certificate names the host it dials`).to.include(new URL(envOf(c, 'TESSERA_REDIS_URL')!.value!).hostname);
            const ca = envOf(c, 'TESSERA_REDIS_CA')?.value;
            expect(ca, `${who}: TESSERA_REDIS_CA`).to.be.a('string');
            const caMount = c.volumeMounts?.find((m) => path.posix.dirname(ca!) === m.mountPath);
            expect(caMount, `${who}: ${ca} in a mounted volume`).to.not.equal(undefined);
            const caCsi = template.spec.volumes?.find((v) => v.name === caMount!.name)?.csi;
            expect(caCsi?.driver, `${who}: ${ca} from csi-driver`).to.equal(CSI_DRIVER);
            expect(caCsi!.volumeAttributes![CSI('ca-file')], `${who}: ${ca}, the volume's CA file`).to.equal(path.posix.basename(ca!));
            expect(issuer(caCsi!.volumeAttributes!), `${who}: the CA of Redis's issuer`).to.deep.equal(issuer(attrs));
          }
        });
      }

      it('Redis as deployed (its ACL file, its command line) lets in the Tessera pods as deployed (URL, password file, CA) and nobody without the password; under TLS its reload container makes it serve a renewed certificate', async function () {
        if (spawnSync('sh', ['-c', 'command -v redis-server redis-cli sha256sum cksum'], { stdio: 'ignore' }).status !== 0) this.skip();
        const root = mkdtempSync(path.join(tmpdir(), 'tessera-redis-pod-'));
        const stores: RedisMembershipStore[] = [];
        let server: ChildProcess | undefined;
        try {
          const ca = await createCa({ cluster: DEFAULT_CLUSTER_NAME });
          const secrets = Object.fromEntries(objects.filter((o) => o.kind === 'Secret').map((o) => [o.metadata.name, secretValues(o)]));
          const namespace = objects.find((o) => o.metadata.namespace !== undefined)?.metadata.namespace ?? 'default';
          const options = { secrets, ca, cluster: DEFAULT_CLUSTER_NAME, namespace, podName: 'pod-0' };
          const pod = redisPod();
          const redis = redisServer();
          const box = await PodSandbox.create(path.join(root, 'redis'), pod, options);
          const containerPort = String(redis.ports!.find((p) => p.name === 'redis')!.containerPort);
          const port = await freePort();
          // The pod's paths and port, here: every mount path, and Redis's port where a flag names it.
          const local = (args: readonly string[]) => args.map((a, i) => (['--port', '--tls-port', '-p'].includes(args[i - 1] ?? '') && a === containerPort ? String(port) : box.map(a)));
          const localScript = (c: Container) => {
            expect(c.command?.slice(0, 2), `${c.name}: a shell script`).to.deep.equal(['sh', '-c']);
            return box.map(c.command![2]!).replaceAll(`-p ${containerPort} `, `-p ${port} `);
          };

          for (const c of pod.spec.initContainers ?? []) {
            const out = spawnSync('sh', ['-c', localScript(c)], { encoding: 'utf8', timeout: 10_000 });
            expect(out.status, `init container ${c.name}: ${out.stderr}`).to.equal(0);
          }
          // The image's entrypoint runs redis-server with the container's args.
          expect(redis.command, "redis-server through the image's entrypoint").to.equal(undefined);
          let output = '';
          server = spawn('redis-server', [...local(redis.args!), '--bind', '127.0.0.1'], { cwd: box.dirOf('/data'), stdio: ['ignore', 'pipe', 'pipe'] });
          server.stdout!.on('data', (d: Buffer) => (output += d.toString()));
          server.stderr!.on('data', (d: Buffer) => (output += d.toString()));
          const probe = redis.readinessProbe!;
          const ready = () =>
            probe.exec
              ? spawnSync(probe.exec.command[0]!, local(probe.exec.command.slice(1)), { timeout: 5_000 }).status === 0
              : new Promise<boolean>((resolve) => {
                  const s = netConnect(port, '127.0.0.1', () => resolve(s.end() !== undefined)).on('error', () => resolve(false));
                });
          await waitFor(`Redis's readiness probe (${output})`, ready, 15_000, 100);

          // Each Tessera pod that reaches Redis, with its own files: in, as the URL's user.
          const storeAs = (url: URL, o: { password?: string; ca?: Buffer; refused?: true }) => {
            const host = url.hostname;
            const here = new URL(url);
            here.hostname = '127.0.0.1';
            here.port = String(port);
            const store = new RedisMembershipStore({ url: here.toString(), cluster: DEFAULT_CLUSTER_NAME, commandTimeoutMs: 2_000, connectTimeoutMs: 2_000, ...(o.refused ? { logger: QUIET } : {}), ...(o.password === undefined ? {} : { password: o.password }), ...(here.protocol === 'rediss:' ? { tls: { ...(o.ca ? { ca: o.ca } : {}), servername: host } } : {}) });
            stores.push(store);
            return store;
          };
          let url: URL | undefined;
          let caPem: Buffer | undefined;
          for (const { owner, template, c } of redisClients()) {
            const client = await PodSandbox.create(path.join(root, owner.metadata.name), template, options);
            url = new URL(envOf(c, 'TESSERA_REDIS_URL')!.value!);
            // As the CLI reads them (cli/membership-options.ts): one trailing newline off the password.
            const password = readFileSync(client.map(envOf(c, 'TESSERA_REDIS_PASSWORD_FILE')!.value!), 'utf8').replace(/\r?\n$/, '');
            const caFile = envOf(c, 'TESSERA_REDIS_CA')?.value;
            caPem = caFile === undefined ? undefined : readFileSync(client.map(caFile));
            expect(await storeAs(url, { password, ...(caPem ? { ca: caPem } : {}) }).getConfig(), `${owner.metadata.name}: in (${output})`).to.equal(null);
          }
          // Nobody else: not without the password, not as the default user with it.
          const refused = (store: RedisMembershipStore) => store.getConfig().then(() => false, () => true);
          expect(await refused(storeAs(url!, { refused: true, ...(caPem ? { ca: caPem } : {}) })), 'without the password').to.equal(true);
          const asDefault = new URL(url!);
          asDefault.username = '';
          expect(await refused(storeAs(asDefault, { refused: true, password: secrets['tessera-redis']!['password']!, ...(caPem ? { ca: caPem } : {}) })), 'the default user').to.equal(true);

          const helpers = pod.spec.containers.filter((c) => !isRedisServer(c));
          if (!tls) {
            expect(helpers, 'no certificate to reload').to.have.length(0);
            return;
          }
          // csi-driver renews the certificate in place; the reload container's loop, run once (its
          // `sleep` returns at once, then fails), makes Redis serve the new one.
          expect(helpers.map((c) => c.name), "Redis's certificate reloader").to.have.length(1);
          const tlsDir = path.posix.dirname(flag(redis.args!, '--tls-cert-file')!);
          const renewed = await box.issue(redis.volumeMounts!.find((m) => m.mountPath === tlsDir)!.name, options);
          const bin = path.join(root, 'bin');
          mkdirSync(bin);
          writeFileSync(path.join(bin, 'sleep'), '#!/bin/sh\n[ ! -e "$0.done" ] && : > "$0.done"\n', { mode: 0o755 });
          const served = () =>
            new Promise<string>((resolve, reject) => {
              const s = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(path.join(box.dirOf(tlsDir), 'ca.crt')), servername: url!.hostname }, () => {
                resolve(s.getPeerCertificate().fingerprint256);
                s.end();
              }).on('error', reject);
            });
          expect(await served(), 'the first certificate, before the reload').to.not.equal(new X509Certificate(renewed).fingerprint256);
          const reload = spawnSync('sh', ['-c', localScript(helpers[0]!)], { encoding: 'utf8', timeout: 15_000, env: { ...process.env, PATH: `${bin}${path.delimiter}${process.env['PATH'] ?? ''}` } });
          expect(reload.status, reload.stderr).to.equal(0);
          expect(reload.stderr, 'no complaint').to.equal('');
          expect(await served(), `the renewed certificate (${reload.stdout})`).to.equal(new X509Certificate(renewed).fingerprint256);
        } finally {
          for (const s of stores) await s.close();
          if (server && server.exitCode === null) {
            const exited = new Promise((resolve) => server!.once('exit', resolve));
            server.kill('SIGKILL');
            await exited;
          }
          rmSync(root, { recursive: true, force: true });
        }
      });

      it('the training Job is a work queue: parallelism alone says how many workers train (no completions to cap it)', () => {
        const job = find('Job', 'tessera-train').spec!;
        expect(job.parallelism, 'parallelism').to.be.a('number').and.at.least(1);
        expect(job.completions, 'with completions: N the controller never runs more than N workers at once').to.equal(undefined);
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
