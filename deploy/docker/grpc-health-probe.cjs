'use strict';
/*
 * The shard's Kubernetes probe under mutual TLS: asks grpc.health.v1.Health/Check on the shard's
 * own port, over loopback, and exits 0 only for SERVING.
 *
 * Why not the kubelet's built-in `grpc:` probe: it speaks plaintext gRPC, with no client
 * certificate, and a shard started with --tls-dir accepts only mutual TLS (its health service
 * too). So the probe runs in the container (an `exec` probe) and presents the pod's own
 * certificate from --tls-dir, which any role may use for health. Without --tls-dir it asks in
 * plaintext (a shard run with --insecure, or on loopback).
 *
 *   node /opt/tessera/probe/grpc-health-probe.cjs --port 7070 [--service NAME] [--tls-dir DIR] [--timeout-ms MS]
 *
 * Exit 0: SERVING. 1: answered, but not SERVING (or a gRPC error). 2: no answer (refused,
 * handshake failed, timed out) or bad arguments. Dependency-free (node:http2 only) and plain
 * CommonJS, so it runs from anywhere in the image, on a read-only root file system.
 */
const fs = require('node:fs');
const http2 = require('node:http2');
const path = require('node:path');

const STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

function fail(code, message) {
  process.stderr.write(`grpc-health-probe: ${message}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const o = { host: '127.0.0.1', port: undefined, service: '', tlsDir: undefined, timeoutMs: 4000 };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) fail(2, `${name} needs a value`);
    if (name === '--port') o.port = Number(value);
    else if (name === '--host') o.host = value;
    else if (name === '--service') o.service = value;
    else if (name === '--tls-dir') o.tlsDir = value;
    else if (name === '--timeout-ms') o.timeoutMs = Number(value);
    else fail(2, `unknown argument ${name}`);
  }
  if (!Number.isInteger(o.port) || o.port <= 0 || o.port > 65535) fail(2, '--port PORT is required');
  if (!(o.timeoutMs > 0)) fail(2, '--timeout-ms must be positive');
  return o;
}

/** A varint, as protobuf writes lengths and enum values. */
function varint(n) {
  const bytes = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

/** HealthCheckRequest { string service = 1; } in a gRPC message frame. */
function requestFrame(service) {
  const name = Buffer.from(service, 'utf8');
  const message = name.length ? Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]) : Buffer.alloc(0);
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

/** HealthCheckResponse { ServingStatus status = 1; } from a gRPC message frame; 0 (UNKNOWN) when absent. */
function statusOf(frame) {
  if (frame.length < 5 || frame[0] !== 0) return -1;
  const message = frame.subarray(5, 5 + frame.readUInt32BE(1));
  for (let i = 0; i < message.length; ) {
    const tag = message[i++];
    let value = 0;
    for (let shift = 0; i < message.length; shift += 7) {
      const b = message[i++];
      value |= (b & 0x7f) << shift;
      if (!(b & 0x80)) break;
    }
    if (tag === 0x08) return value;
    if ((tag & 7) === 2) i += value; // a length-delimited field we do not know: skip it
    else if ((tag & 7) !== 0) return -1;
  }
  return 0;
}

function main() {
  const o = parseArgs(process.argv.slice(2));
  const timer = setTimeout(() => fail(2, `no answer from ${o.host}:${o.port} within ${o.timeoutMs} ms`), o.timeoutMs);
  let session;
  if (o.tlsDir) {
    let files;
    try {
      files = { ca: fs.readFileSync(path.join(o.tlsDir, 'ca.crt')), cert: fs.readFileSync(path.join(o.tlsDir, 'tls.crt')), key: fs.readFileSync(path.join(o.tlsDir, 'tls.key')) };
    } catch (err) {
      fail(2, `cannot read ca.crt, tls.crt and tls.key in ${o.tlsDir}: ${err.message}`);
    }
    session = http2.connect(`https://${o.host}:${o.port}`, {
      ...files,
      // The chain is checked against ca.crt as usual; Tessera certificates name a SPIFFE URI, not a
      // host, so instead of the host name check: the server must carry a Tessera identity.
      checkServerIdentity: (_host, cert) => (/(^|, )URI:spiffe:\/\/tessera\//.test(cert.subjectaltname || '') ? undefined : new Error('the server presented no Tessera identity')),
    });
  } else {
    session = http2.connect(`http://${o.host}:${o.port}`);
  }
  session.on('error', (err) => fail(2, `${o.host}:${o.port}: ${err.message}`));
  const call = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' });
  const chunks = [];
  let grpcStatus;
  let grpcMessage = '';
  const note = (headers) => {
    if (headers['grpc-status'] !== undefined) grpcStatus = Number(headers['grpc-status']);
    if (headers['grpc-message'] !== undefined) grpcMessage = decodeURIComponent(String(headers['grpc-message']));
  };
  call.on('response', note);
  call.on('trailers', note);
  call.on('data', (chunk) => chunks.push(chunk));
  call.on('error', (err) => fail(2, `${o.host}:${o.port}: ${err.message}`));
  call.on('end', () => {
    clearTimeout(timer);
    session.close();
    const what = o.service ? `service "${o.service}"` : 'the server';
    if (grpcStatus === undefined) fail(2, `${o.host}:${o.port} closed the call without a gRPC answer (plaintext to a TLS listener, or a certificate it refused?)`);
    if (grpcStatus !== 0) fail(1, `${what}: gRPC status ${grpcStatus}${grpcMessage ? ` (${grpcMessage})` : ''}`);
    const status = statusOf(Buffer.concat(chunks));
    if (status !== 1) fail(1, `${what}: ${STATUS[status] ?? `unreadable answer (${status})`}`);
    process.stdout.write(`${what}: SERVING\n`);
    process.exit(0);
  });
  call.end(requestFrame(o.service));
}

main();
