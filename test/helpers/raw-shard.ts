import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS } from '../../cluster/grpc-client.js';
import { shardService } from '../../cluster/proto.js';

/**
 * A bare `tessera.v1.Shard` stub that sends exactly the messages a test gives
 * it, bypassing the typed client's own checks, to see what the server answers.
 */
export type RawResult<T> = { ok: true; value: T } | { ok: false; error: grpc.ServiceError };

type RawClient = grpc.Client & {
  pull(req: object, opts?: grpc.CallOptions): grpc.ClientReadableStream<{ offset: number; values: Buffer; total: number; epoch: number }>;
  push(cb: (err: grpc.ServiceError | null, res?: object) => void): grpc.ClientWritableStream<object>;
};

export function rawClient(address: string, options: grpc.ChannelOptions = CHANNEL_OPTIONS, credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure()): RawClient {
  const Ctor = shardService();
  return new Ctor(address, credentials, options) as unknown as RawClient;
}

export function rawPull(client: RawClient, req: object): Promise<RawResult<{ offset: number; values: Buffer; total: number; epoch: number }[]>> {
  return new Promise((resolve) => {
    const chunks: { offset: number; values: Buffer; total: number; epoch: number }[] = [];
    const call = client.pull(req);
    call.on('data', (c) => chunks.push(c));
    call.on('error', (error: grpc.ServiceError) => resolve({ ok: false, error }));
    call.on('end', () => resolve({ ok: true, value: chunks }));
  });
}

export function rawPush(client: RawClient, messages: object[]): Promise<RawResult<{ epoch: number; appliedSlots: number; duplicateSlots: number }>> {
  return new Promise((resolve) => {
    const call = client.push((error, value) => resolve(error ? { ok: false, error } : { ok: true, value: value as { epoch: number; appliedSlots: number; duplicateSlots: number } }));
    call.on('error', () => undefined);
    for (const m of messages) call.write(m);
    call.end();
  });
}

/** Little-endian float32 bytes of `values`. */
export function f32(values: number[] | Float32Array): Buffer {
  const a = values instanceof Float32Array ? values : Float32Array.from(values);
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}
