import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { CHANNEL_OPTIONS, dial, unary } from '../../cluster/grpc-client.js';
import { startGrpcServer } from '../../cluster/grpc-server.js';
import { membershipImplementation } from '../../cluster/membership/membership-service.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService, shardAdminService } from '../../cluster/proto.js';
import { issueCertificate, readCa, writeTlsDir } from '../../cluster/tls/certificates.js';
import { MEMBERSHIP_RULES } from '../../cluster/tls/authorization.js';
import { TlsMaterial } from '../../cluster/tls/tls-material.js';
import { encodeLog } from '../../server/migration.js';
import { type TransportSecurity, mutualTls } from '../../cluster/tls/transport-security.js';
import { type TesseraClient } from '../../client/tessera-client.js';
import { flatModel, startCluster, type TestCluster } from '../helpers/cluster.js';
import { RawBulk } from '../helpers/raw-bulk.js';
import { f32, rawClient, rawPull, rawPush } from '../helpers/raw-shard.js';
import { makeTlsDirs } from '../helpers/tls.js';
import { forEachTransport } from '../helpers/transports.js';
import * as https from 'node:https';
import { Counter, Registry } from 'prom-client';
import { MetricsServer } from '../../cluster/metrics/metrics-server.js';

/*
 * Mutual TLS on a real two-shard cluster over loopback (docs/security.md):
 * who gets in, and who may do what, over gRPC and the bulk port.
 */

const CLUSTER = 'sec';
const D = 4096;
const SLOTS = 16;


/** Raw gRPC credentials from the files of a `--tls-dir` (none of the checks TlsMaterial makes): what an attacker could hold. */
function rawCredentials(dir: string | null, caDir: string): grpc.ChannelCredentials {
  const ca = readFileSync(path.join(caDir, 'ca.crt'));
  if (!dir) return grpc.credentials.createSsl(ca);
  return grpc.credentials.createSsl(ca, readFileSync(path.join(dir, 'tls.key')), readFileSync(path.join(dir, 'tls.crt')));
}

forEachTransport('functional: mutual TLS and roles', function (transport) {
  this.timeout(60_000);
  let root: string;
  let dirs: Record<string, string>;
  let caDir: string;
  let cluster: TestCluster;
  const materials: TlsMaterial[] = [];
  const as = (key: string): TransportSecurity => {
    const s = mutualTls(dirs[key]!);
    if (s.kind === 'mtls') materials.push(s.material);
    return s;
  };
  let worker: TesseraClient;

  before(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'tessera-mtls-'));
    ({ dirs, caDir } = await makeTlsDirs(
      root,
      CLUSTER,
      [
        { role: 'shard', id: 'shard-0' },
        { role: 'shard', id: 'shard-1' },
        { role: 'shard', id: 'shard-9' },
        { role: 'worker', id: 'w1' },
        { role: 'worker', id: 'w2' },
        { role: 'reader', id: 'r1' },
        { role: 'admin', id: 'ops' },
        { role: 'worker', id: 'old', expired: true },
      ],
      { otherCa: true },
    ));
    cluster = await startCluster({ shards: 2, model: flatModel(D), slots: SLOTS, optimizer: { name: 'sgd', learningRate: 1 }, transport, name: CLUSTER, security: (id) => as(`shard-${id}`), checkpointDir: root });
    worker = await cluster.client({ workerId: 'w1', security: as('worker-w1') });
  });
  after(async () => {
    await cluster?.close();
    for (const m of materials) m.close();
    rmSync(root, { recursive: true, force: true });
  });

  const shardAddress = () => (transport === 'grpc' ? cluster.shards[0]!.address : cluster.shards[0]!.bulkAddress);

  it('a worker pushes and pulls under its own id', async () => {
    const before = await worker.pull();
    const g = new Float32Array(D).fill(0.5);
    expect(await worker.push(g)).to.include({ appliedSlots: SLOTS, duplicateSlots: 0 });
    const after = await worker.pull();
    for (let i = 0; i < D; i += 97) expect(after[i]).to.equal(Math.fround(before[i]! - 0.5));
  });

  it('a worker pushing under another worker’s id is refused, PERMISSION_DENIED naming both; nothing changes', async () => {
    const before = await worker.pull();
    const impostor = await cluster.client({ workerId: 'w2', security: as('worker-w1'), maxRetries: 0 });
    const err = await impostor.push(new Float32Array(D).fill(1)).then(
      () => null,
      (e: Error & { code?: number }) => e,
    );
    expect(err?.name).to.equal('PermissionDeniedError');
    expect(err?.message).to.match(/as worker "w2" refused: the caller's certificate is for worker "w1"/);
    expect(Buffer.from((await worker.pull()).buffer).equals(Buffer.from(before.buffer))).to.equal(true);
  });

  it('a reader pulls, and its push is refused, PERMISSION_DENIED naming the role needed', async () => {
    const reader = await cluster.client({ workerId: 'r1', security: as('reader-r1'), maxRetries: 0 });
    const before = await reader.pull();
    expect(before.length).to.equal(D);
    const err = await reader.push(new Float32Array(D).fill(1)).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.name).to.equal('PermissionDeniedError');
    expect(err?.message).to.match(/needs a worker certificate; the caller is reader "r1"/);
    expect(Buffer.from((await reader.pull()).buffer).equals(Buffer.from(before.buffer))).to.equal(true);
    // A clocked pull would count the reader as a training worker at the clock gate.
    const clocked = await reader.pull(undefined, { clock: 0, join: true }).then(
      () => null,
      (e: Error) => e,
    );
    expect(clocked?.name).to.equal('PermissionDeniedError');
    expect(clocked?.message).to.match(/a clocked pull counts its sender as a training worker; the caller is reader "r1"/);
  });

  describe('who cannot get in', () => {
    const cases: { name: string; creds: () => { grpc: grpc.ChannelCredentials; tls: tls.ConnectionOptions } }[] = [
      { name: 'no client certificate', creds: () => ({ grpc: rawCredentials(null, caDir), tls: { ca: readFileSync(path.join(caDir, 'ca.crt')) } }) },
      { name: 'a certificate from another CA', creds: () => ({ grpc: rawCredentials(dirs['intruder']!, caDir), tls: tlsOptions(dirs['intruder']!, caDir) }) },
      { name: 'an expired certificate', creds: () => ({ grpc: rawCredentials(dirs['worker-old']!, caDir), tls: tlsOptions(dirs['worker-old']!, caDir) }) },
    ];
    for (const c of cases) {
      it(`${c.name}: the handshake is refused; no value changes`, async () => {
        const before = await worker.pull();
        const creds = c.creds();
        if (transport === 'grpc') {
          const raw = rawClient(cluster.shards[0]!.address, { ...CHANNEL_OPTIONS, 'grpc.ssl_target_name_override': 'localhost' }, creds.grpc);
          const header = { epoch: 1, ranges: [{ begin: 0, end: 8 }], workerId: 'w1', seq: 1, model: 'flat' };
          const pushed = await rawPush(raw, [{ header, offset: 0, values: f32(new Float32Array(D / 2).fill(1)) }]);
          expect(pushed.ok).to.equal(false);
          if (!pushed.ok) expect(pushed.error.code, pushed.error.details).to.equal(grpc.status.UNAVAILABLE);
          const pulled = await rawPull(raw, { epoch: 1, ranges: [{ begin: 0, end: 8 }] });
          expect(pulled.ok).to.equal(false);
          raw.close();
        } else {
          const refused = await tlsRefused(shardAddress(), creds.tls);
          expect(refused, 'the shard closed the connection during or right after the handshake').to.not.equal(null);
        }
        expect(Buffer.from((await worker.pull()).buffer).equals(Buffer.from(before.buffer))).to.equal(true);
      });
    }

    it('a plaintext client gets nothing from a TLS listener', async () => {
      if (transport === 'grpc') {
        const pulled = await rawPull(rawClient(cluster.shards[0]!.address), { epoch: 1, ranges: [{ begin: 0, end: 8 }] });
        expect(pulled.ok).to.equal(false);
        if (!pulled.ok) expect(pulled.error.code).to.equal(grpc.status.UNAVAILABLE);
      } else {
        const conn = new RawBulk(cluster.shards[0]!.bulkAddress);
        conn.send({ id: 1, op: 'pull', epoch: 1, ranges: [{ begin: 0, end: 8 }], workerId: 'w1' });
        expect(await conn.next(), 'no reply: the shard speaks TLS only').to.equal(null);
        conn.close();
      }
    });
  });

  it('a worker certificate on each admin RPC: PERMISSION_DENIED naming the role needed; an admin checkpoints', async () => {
    const asWorker = dial(shardAdminService(), cluster.shards[0]!.address, as('worker-w1'));
    const calls: [string, object, RegExp][] = [
      ['checkpoint', { name: 'by-worker' }, /needs an admin or shard certificate/],
      ['moveSlots', { slots: [0], targetId: 'shard-1', targetAddress: cluster.shards[1]!.address }, /needs an admin or shard certificate/],
      ['importSlots', { data: Buffer.alloc(0) }, /ImportSlots needs a shard certificate/],
      ['applyLog', { data: Buffer.alloc(0) }, /ApplyLog needs a shard certificate/],
      ['dropSlots', { slots: [0] }, /DropSlots needs a shard certificate/],
    ];
    for (const [method, req, message] of calls) {
      const err = await unary(asWorker, method, req).then(
        () => null,
        (e: Error & { code: number }) => e,
      );
      expect(err?.code, method).to.equal(grpc.status.PERMISSION_DENIED);
      expect(err?.message, method).to.match(message);
      expect(err?.message, method).to.match(/the caller is worker "w1" of cluster "sec"/);
    }
    asWorker.close();
    const asAdmin = dial(shardAdminService(), cluster.shards[0]!.address, as('admin-ops'));
    const info = await unary<object, { slots: number }>(asAdmin, 'checkpoint', { name: 'by-admin' });
    expect(info.slots).to.equal(SLOTS / 2);
    asAdmin.close();
  });

  it("a move's payload only from the shard that owns the slots; a move only to a live shard at its address", async () => {
    // shard-9 holds a shard certificate but no slot: it may not hand shard-1's slots to shard-0, nor drop them there.
    const stranger = dial(shardAdminService(), cluster.shards[0]!.address, as('shard-shard-9'));
    const theirs = SLOTS - 1;
    for (const [method, req] of [
      ['dropSlots', { slots: [theirs] }],
      ['applyLog', { data: encodeLog([{ kind: 'dense', slot: theirs, worker: 'w1', seq: 1, gradient: new Float32Array(D / SLOTS) }]) }],
    ] as const) {
      const err = await unary(stranger, method, req).then(
        () => null,
        (e: Error & { code: number }) => e,
      );
      expect(err?.code, method).to.equal(grpc.status.PERMISSION_DENIED);
      expect(err?.message, method).to.match(new RegExp(`slot ${theirs} belongs to shard-1 in the map of epoch 1; only its owner moves it, and the caller is shard "shard-9"`));
    }
    stranger.close();
    const asAdmin = dial(shardAdminService(), cluster.shards[0]!.address, as('admin-ops'));
    const err = await unary(asAdmin, 'moveSlots', { slots: [0], targetId: 'shard-1', targetAddress: '127.0.0.1:9' }).then(
      () => null,
      (e: Error & { code: number }) => e,
    );
    asAdmin.close();
    expect(err?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(err?.message).to.match(/the target of a move must be a live shard at its own address: shard-1 is at 127\.0\.0\.1:\d+, not 127\.0\.0\.1:9/);
  });

  it('the membership service under mTLS: a worker reads but cannot rewrite the map or the cluster', async () => {
    const server = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(cluster.store), rules: MEMBERSHIP_RULES }], as('shard-shard-0'));
    try {
      const asWorker = dial(membershipService(), `127.0.0.1:${server.port}`, as('worker-w1'));
      const doc = await unary<object, { configJson: string }>(asWorker, 'getCluster', {});
      expect(JSON.parse(doc.configJson).name).to.equal(CLUSTER);
      for (const [method, req] of [
        ['compareAndSetMap', { expectedEpoch: 1, mapJson: '{}' }],
        ['createCluster', { configJson: '{}', force: true }],
      ] as const) {
        const err = await unary(asWorker, method, req).then(
          () => null,
          (e: Error & { code: number }) => e,
        );
        expect(err?.code, method).to.equal(grpc.status.PERMISSION_DENIED);
        expect(err?.message, method).to.match(/needs an admin or shard certificate; the caller is worker "w1"/);
      }
      asWorker.close();
      expect((await cluster.store.getMap())!.epoch).to.equal(1);
    } finally {
      await server.close(100);
    }
  });

  it('/metrics under mTLS: HTTPS with a client certificate of the cluster CA; none, or another CA’s, is refused', async () => {
    const registry = new Registry();
    new Counter({ name: 'tessera_test_total', help: 'a counter', registers: [registry] }).inc(3);
    const server = await MetricsServer.start('127.0.0.1:0', registry, as('shard-shard-0'));
    const get = (dir: string | null, ca = caDir) =>
      new Promise<string>((resolve, reject) => {
        const req = https.get(
          {
            host: '127.0.0.1',
            port: server.port,
            path: '/metrics',
            ca: readFileSync(path.join(ca, 'ca.crt')),
            ...(dir ? { cert: readFileSync(path.join(dir, 'tls.crt')), key: readFileSync(path.join(dir, 'tls.key')) } : {}),
            checkServerIdentity: () => undefined,
          },
          (res) => {
            let body = '';
            res.on('data', (d: Buffer) => (body += d));
            res.on('end', () => resolve(body));
          },
        );
        req.on('error', reject);
      });
    try {
      expect(server.scheme).to.equal('https');
      expect(await get(dirs['reader-r1']!), 'a reader scrapes').to.match(/tessera_test_total 3/);
      for (const [who, dir] of [['no certificate', null], ['another CA', dirs['intruder']!], ['an expired one', dirs['worker-old']!]] as const) {
        expect(await get(dir).then(() => 'served', () => 'refused'), who).to.equal('refused');
      }
    } finally {
      await server.close();
    }
  });

  it('a rotated shard certificate is served without a restart, and clients go on', async () => {
    const before = await peerSerial(shardAddress(), dirs['worker-w1']!);
    const ca = await readCa(caDir);
    const fresh = await issueCertificate({ ca, cluster: CLUSTER, role: 'shard', id: 'shard-0', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    await writeTlsDir(dirs['shard-shard-0']!, { caCertPem: ca.certPem, ...fresh });
    const material = cluster.shards[0]!.security;
    expect(material.kind).to.equal('mtls');
    if (material.kind === 'mtls') expect(material.material.reload(), 'the new files were taken').to.equal(true);
    const after = await peerSerial(shardAddress(), dirs['worker-w1']!);
    expect(after, 'new connections see the new certificate').to.not.equal(before);
    // A client connected before the rotation still pushes (its open connections stay, new ones use the new certificate).
    expect(await worker.push(new Float32Array(D).fill(0.25))).to.include({ appliedSlots: SLOTS });
  });
});

function tlsOptions(dir: string, caDir: string): tls.ConnectionOptions {
  return { ca: readFileSync(path.join(caDir, 'ca.crt')), cert: readFileSync(path.join(dir, 'tls.crt')), key: readFileSync(path.join(dir, 'tls.key')) };
}

/**
 * Connects to a TLS listener with `options` and sends one bulk pull; resolves
 * with the error that ended the connection, or null if the server answered.
 */
function tlsRefused(address: string, options: tls.ConnectionOptions): Promise<Error | 'closed' | null> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    const socket = tls.connect({ host, port, ...options, checkServerIdentity: () => undefined });
    socket.on('error', (err) => resolve(err));
    socket.on('close', () => resolve('closed'));
    socket.on('data', () => {
      socket.destroy();
      resolve(null);
    });
    socket.on('secureConnect', () => {
      const head = Buffer.from(JSON.stringify({ id: 1, op: 'pull', epoch: 1, ranges: [{ begin: 0, end: 1 }], workerId: 'w1' }));
      const len = Buffer.alloc(4);
      len.writeUInt32LE(head.length);
      socket.write(Buffer.concat([len, head]));
    });
  });
}

/** The serial number of the certificate a TLS listener presents now (read with the identity in `dir`). */
function peerSerial(address: string, dir: string): Promise<string> {
  const ca = readFileSync(path.join(dir, 'ca.crt'));
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, ca, cert: readFileSync(path.join(dir, 'tls.crt')), key: readFileSync(path.join(dir, 'tls.key')), checkServerIdentity: () => undefined, ALPNProtocols: ['h2'] });
    socket.on('error', reject);
    socket.on('secureConnect', () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
  });
}
