import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { expect } from 'chai';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';

/** Every shard serves the standard health service and server reflection beside its own. */
describe('functional: health and reflection', function () {
  this.timeout(30_000);
  let cluster: TestCluster;
  after(async () => cluster.close());

  function stub(protoFile: string, includeDir: string, pkg: string[], service: string, address: string): grpc.Client {
    const def = protoLoader.loadSync(protoFile, { includeDirs: [includeDir], keepCase: true, defaults: true, enums: String });
    let obj: grpc.GrpcObject = grpc.loadPackageDefinition(def);
    for (const p of pkg) obj = obj[p] as grpc.GrpcObject;
    const Ctor = obj[service] as grpc.ServiceClientConstructor;
    return new Ctor(address, grpc.credentials.createInsecure());
  }

  it('grpc.health.v1 answers SERVING for the server and tessera.v1.Shard; reflection lists the services', async () => {
    cluster = await startCluster({ shards: 1, model: flatModel(100) });
    const address = cluster.shards[0]!.address;
    const require = createRequire(import.meta.url);

    const healthPath = (require('grpc-health-check') as { protoPath: string }).protoPath;
    const health = stub(healthPath, dirname(healthPath), ['grpc', 'health', 'v1'], 'Health', address) as grpc.Client & {
      check(req: object, cb: (e: grpc.ServiceError | null, r?: { status: string }) => void): void;
    };
    for (const service of ['', 'tessera.v1.Shard', 'tessera.v1.SparseShard']) {
      const res = await new Promise<{ status: string }>((resolve, reject) => health.check({ service }, (e, r) => (e ? reject(e) : resolve(r!))));
      expect(res.status, service || '(server)').to.equal('SERVING');
    }
    health.close();

    const reflectionDir = `${dirname(require.resolve('@grpc/reflection/package.json'))}/build/proto`;
    const reflection = stub('grpc/reflection/v1/reflection.proto', reflectionDir, ['grpc', 'reflection', 'v1'], 'ServerReflection', address) as grpc.Client & {
      ServerReflectionInfo(): grpc.ClientDuplexStream<object, { list_services_response?: { service: { name: string }[] } }>;
    };
    const call = reflection.ServerReflectionInfo();
    const names = await new Promise<string[]>((resolve, reject) => {
      call.on('data', (r: { list_services_response?: { service: { name: string }[] } }) => resolve((r.list_services_response?.service ?? []).map((s) => s.name)));
      call.on('error', reject);
      call.write({ list_services: '' });
    });
    call.end();
    reflection.close();
    expect(names).to.include.members(['tessera.v1.Shard', 'tessera.v1.SparseShard', 'tessera.v1.Membership']);
  });
});
