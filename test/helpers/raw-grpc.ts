import * as grpc from '@grpc/grpc-js';
import { channelOptions } from '../../cluster/grpc-client.js';
import { type TransportSecurity, channelCredentials } from '../../cluster/tls/transport-security.js';
import { type Role } from '../../cluster/tls/identity.js';

/**
 * A gRPC client that sends a method any bytes as its request, with identity
 * serializers: what the server's protobuf decoder gets is exactly what a test
 * made, malformed or not (the typed stubs of cluster/proto.ts could only send
 * what protobufjs encodes). Answers are counted, never decoded.
 */

/** How a method streams (from its definition in proto/). */
export type CallShape = 'unary' | 'server-stream' | 'client-stream';

/** What a raw call came to: the status code, its details, the server's `tessera-error` reason (empty for none), and the response messages seen. */
export interface RawOutcome {
  code: grpc.status;
  details: string;
  reason: string;
  responses: number;
}

const identity = (b: Buffer): Buffer => b;

export class RawGrpc {
  private readonly client: grpc.Client;

  /** A channel to `address`, secured as `security` says; under mTLS the server must hold one of `roles`. */
  constructor(address: string, security: TransportSecurity, roles?: readonly Role[]) {
    this.client = new grpc.Client(address, channelCredentials(security, roles), channelOptions(security));
  }

  /**
   * Calls `path` (`/package.Service/Method`) with `messages` as the request
   * bytes: one for a unary or server-streaming call, any number for a
   * client-streaming one. A server stream is cancelled after `keepStreamMs`
   * (a WatchMap never ends by itself); a call not answered within
   * `deadlineMs` ends DEADLINE_EXCEEDED.
   */
  call(path: string, shape: CallShape, messages: readonly Buffer[], deadlineMs: number, keepStreamMs = Infinity): Promise<RawOutcome> {
    const options: grpc.CallOptions = { deadline: new Date(Date.now() + deadlineMs) };
    const metadata = new grpc.Metadata();
    return new Promise((resolve) => {
      let responses = 0;
      const done = (err: grpc.ServiceError | null) =>
        resolve({ code: err ? err.code : grpc.status.OK, details: err?.details ?? '', reason: String(err?.metadata?.get('tessera-error')[0] ?? ''), responses });
      if (shape === 'unary') {
        this.client.makeUnaryRequest(path, identity, identity, messages[0] ?? Buffer.alloc(0), metadata, options, (err) => {
          responses += err ? 0 : 1;
          done(err);
        });
      } else if (shape === 'client-stream') {
        const call = this.client.makeClientStreamRequest(path, identity, identity, metadata, options, (err) => {
          responses += err ? 0 : 1;
          done(err);
        });
        // A write after the server answered early fails quietly; the status is what counts.
        call.on('error', () => undefined);
        for (const m of messages) call.write(m);
        call.end();
      } else {
        const call = this.client.makeServerStreamRequest(path, identity, identity, messages[0] ?? Buffer.alloc(0), metadata, options);
        const timer = Number.isFinite(keepStreamMs) ? setTimeout(() => call.cancel(), keepStreamMs) : null;
        call.on('data', () => responses++);
        call.on('error', (err: grpc.ServiceError) => {
          if (timer) clearTimeout(timer);
          done(err);
        });
        call.on('end', () => {
          if (timer) clearTimeout(timer);
          done(null);
        });
      }
    });
  }

  close(): void {
    this.client.close();
  }
}
