import * as grpc from '@grpc/grpc-js';
import { fromStatus } from './wire/status-codec.js';
import { type Role } from './tls/identity.js';
import { type TransportSecurity, channelCredentials, processSecurity } from './tls/transport-security.js';
import { FLOW_CONTROL_WINDOW_BYTES, MAX_MESSAGE_BYTES } from './wire/dense-values.js';

/**
 * Channel options every Tessera client uses: 16 MiB messages, and HTTP/2
 * flow-control windows raised from 64 KiB to {@link FLOW_CONTROL_WINDOW_BYTES}
 * so one stream can keep a loopback or LAN link full (grpc-js reads
 * `grpc-node.flow_control_window`, for the stream and the connection).
 */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // A shard that restarts is dialled again within a second of coming back (grpc-js would otherwise back off up to 120 s).
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 1_000,
};

/**
 * {@link CHANNEL_OPTIONS} for a channel secured as `security` says. Under
 * mTLS the TLS server name is a fixed "tessera" rather than the dialled host:
 * shards are dialled by IP addresses (an IP is not a valid server name), and
 * the server is checked by the identity in its certificate, not by its name.
 */
export function channelOptions(security: TransportSecurity): grpc.ChannelOptions {
  return security.kind === 'mtls' ? { ...CHANNEL_OPTIONS, 'grpc.ssl_target_name_override': 'tessera' } : CHANNEL_OPTIONS;
}

/** Default deadline of control-plane calls. */
export const DEFAULT_DEADLINE_MS = 10_000;

/**
 * A client of a service (a constructor from proto.ts) at `address`, with
 * {@link CHANNEL_OPTIONS}, secured as `security` says; under mTLS the server
 * must hold one of `roles` (a shard, unless told otherwise).
 */
export function dial(Ctor: grpc.ServiceClientConstructor, address: string, security: TransportSecurity = processSecurity(), roles?: readonly Role[]): grpc.Client {
  return new Ctor(address, channelCredentials(security, roles), channelOptions(security));
}

export function deadlineIn(ms: number): grpc.Deadline {
  return new Date(Date.now() + ms);
}

type UnaryMethod<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => grpc.ClientUnaryCall;

/** Calls a unary method with a deadline; a failure comes back as a typed TesseraError. */
export function unary<Req, Res>(client: grpc.Client, method: string, request: Req, deadlineMs = DEFAULT_DEADLINE_MS, address = ''): Promise<Res> {
  const fn = (client as unknown as Record<string, UnaryMethod<Req, Res>>)[method]!;
  return new Promise<Res>((resolve, reject) => {
    fn.call(client, request, new grpc.Metadata(), { deadline: deadlineIn(deadlineMs) }, (err, res) => {
      if (err) reject(fromStatus(err, address));
      else resolve(res as Res);
    });
  });
}
