import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startGrpcServer } from '../../cluster/grpc-server.js';
import { setLogLevel } from '../../cluster/log.js';
import { membershipImplementation } from '../../cluster/membership/membership-service.js';
import { MemoryMembershipStore } from '../../cluster/membership/memory-store.js';
import { type ClusterConfig } from '../../cluster/cluster-config.js';
import { type ShardMap } from '../../cluster/shard-map.js';
import { MEMBERSHIP_SERVICE_NAME, membershipService } from '../../cluster/proto.js';
import { MEMBERSHIP_RULES } from '../../cluster/tls/authorization.js';
import { mutualTls } from '../../cluster/tls/transport-security.js';
import { type Running } from './cli.js';

/**
 * An embedded membership store served over gRPC (as `tessera local` serves
 * one) in a process of its own, so a test can watch that process while it
 * sends it whatever it likes: `node membership-process.js TLS_DIR CONFIG_JSON
 * MAP_JSON` creates the cluster and its first map, prints `{"port":N}` and
 * serves until SIGTERM.
 */

const SELF = fileURLToPath(import.meta.url);

/** Starts the membership process with the identity in `tlsDir`; resolves with it and its port once it serves. */
export async function startMembershipProcess(tlsDir: string, config: ClusterConfig, map: ShardMap, timeoutMs = 20_000): Promise<{ proc: Running; port: number }> {
  const child = spawn(process.execPath, [SELF, tlsDir, JSON.stringify(config), JSON.stringify(map)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const finished = new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => child.on('exit', (code, signal) => resolve({ code: code ?? (signal === 'SIGKILL' ? 137 : -1), stdout, stderr })));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the membership process did not start within ${timeoutMs} ms: ${stderr}`)), timeoutMs);
    child.stdout!.on('data', (d) => {
      stdout += d;
      const line = /\{"port":(\d+)\}/.exec(stdout);
      if (line) {
        clearTimeout(timer);
        resolve(Number(line[1]));
      }
    });
    child.once('exit', () => reject(new Error(`the membership process exited while starting: ${stderr}`)));
  });
  return { proc: { child, finished, kill: (signal = 'SIGKILL') => child.kill(signal), stdout: () => stdout, stderr: () => stderr }, port };
}

async function main(tlsDir: string, configJson: string, mapJson: string): Promise<void> {
  setLogLevel('error');
  const store = new MemoryMembershipStore();
  await store.createCluster(JSON.parse(configJson) as ClusterConfig);
  await store.casMap(0, JSON.parse(mapJson) as ShardMap);
  const server = await startGrpcServer('127.0.0.1:0', [{ name: MEMBERSHIP_SERVICE_NAME, definition: membershipService().service, implementation: membershipImplementation(store), rules: MEMBERSHIP_RULES }], mutualTls(tlsDir));
  server.setServing([MEMBERSHIP_SERVICE_NAME], 'SERVING');
  process.stdout.write(`${JSON.stringify({ port: server.port })}\n`);
  process.once('SIGTERM', () => void server.close(200).then(() => process.exit(0)));
}

if (process.argv[1] === SELF) {
  const [tlsDir, config, map] = process.argv.slice(2);
  main(tlsDir!, config!, map!).catch((err: Error) => {
    process.stderr.write(`${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
