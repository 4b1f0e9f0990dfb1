import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { CronJob, Job } from 'kubernetes-models/batch/v1';
import { ConfigMap, Namespace, PersistentVolumeClaim, Service } from 'kubernetes-models/v1';
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
 */

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const RENDERS = ['deploy/base', 'deploy/overlays/dev', 'deploy/overlays/gpu'];
const VERBS: Command[] = [initCommand, shardCommand, workerCommand, statusCommand, checkpointCommand, exportCommand, serveCommand];
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Namespace': Namespace,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'batch/v1/Job': Job,
  'batch/v1/CronJob': CronJob,
};

interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: { name: string }[];
  envFrom?: { configMapRef?: { name: string } }[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  readinessProbe?: { grpc?: { port: number; service?: string }; httpGet?: { path: string; port: string | number } };
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  resources?: { limits?: Record<string, unknown> };
}
interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: { containers: Container[]; volumes?: { name: string; persistentVolumeClaim?: { claimName: string; readOnly?: boolean } }[] };
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
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

describe('deploy: Kubernetes manifests', function () {
  this.timeout(30_000);
  before(function () {
    if (spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status !== 0) this.skip();
  });

  for (const dir of RENDERS) {
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

      it('renders, and every object passes its Kubernetes schema', () => {
        expect(objects.length).to.be.at.least(11);
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

      it("the shard's flags, probe, ports and volume agree, and the init Job waits for as many shards as run", () => {
        const set = find('StatefulSet', 'tessera-shard');
        const shard = set.spec!.template!.spec.containers[0]!;
        const args = shard.args!;
        const port = (name: string) => shard.ports!.find((p) => p.name === name)!.containerPort;
        expect(Number(flag(args, '--listen')!.split(':').pop())).to.equal(port('grpc'));
        expect(Number(flag(args, '--bulk-port'))).to.equal(port('bulk'));
        expect(shard.readinessProbe?.grpc).to.deep.equal({ port: port('grpc'), service: 'tessera.v1.Shard' });
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
        expect(flag(serve.args!, '--name'), "serve --name = the name export writes under").to.equal(flag(exporter.args!, '--name') ?? clusterModel);

        // The export job finds the cluster as the shards and workers do; the serving pods must not
        // (TESSERA_REDIS_URL would make serve follow the live cluster and refuse --model-dir).
        expect(exporter.envFrom?.map((e) => e.configMapRef?.name)).to.include('tessera-config');
        expect(serve.envFrom?.some((e) => e.configMapRef?.name === 'tessera-config') ?? false, 'no TESSERA_REDIS_URL in serving').to.equal(false);
        expect((serve.env ?? []).map((e) => e.name)).to.not.include('TESSERA_REDIS_URL');
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
    }
    const entry = /^ENTRYPOINT \["node", "\/opt\/tessera\/(bin\/tessera\.js)"\]$/m.exec(readFileSync(`${ROOT}deploy/docker/Dockerfile`, 'utf8'));
    expect(entry, 'ENTRYPOINT').to.not.equal(null);
    expect(existsSync(`${ROOT}${entry![1]}`)).to.equal(true);
  });
});
