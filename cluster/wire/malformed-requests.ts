import * as grpc from '@grpc/grpc-js';
import { InvalidArgumentError } from '../errors.js';
import { toStatus } from './status-codec.js';

/**
 * Requests whose bytes do not decode as their message. grpc-js answers a
 * request deserializer that throws with INTERNAL ("Error deserializing
 * request"), which says the server failed where the sender did. So the
 * decoders of a Tessera server never throw: bytes that do not decode become a
 * {@link MalformedRequest}, and {@link refuseMalformedRequests} answers it
 * INVALID_ARGUMENT before any handler sees it (bad input gets a clear status,
 * docs/security.md). Found by the fuzz test (test/functional/fuzz.test.ts).
 */

/** Stands for a request that did not decode; never reaches a handler. */
class MalformedRequest {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {}
}

/** `definition` with request decoders that give a {@link MalformedRequest} instead of throwing. */
export function withRequestDecodeCheck(definition: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(definition)) {
    const decode = method.requestDeserialize;
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decode(bytes);
        } catch (err) {
          return new MalformedRequest(method.path, err instanceof Error ? err.message : String(err));
        }
      },
    };
  }
  return out as grpc.ServiceDefinition;
}

/**
 * A server interceptor that ends a call INVALID_ARGUMENT at its first
 * request message that did not decode (the call's handler then sees it
 * cancelled, as after any status the server sent).
 */
export const refuseMalformedRequests: grpc.ServerInterceptor = (_method, call) =>
  new grpc.ServerInterceptingCall(call, {
    start: (next) =>
      next({
        onReceiveMessage: (message: unknown, pass: (message: unknown) => void) => {
          if (!(message instanceof MalformedRequest)) return pass(message);
          call.sendStatus(toStatus(new InvalidArgumentError(`a ${message.path} request whose bytes are not its message: ${message.reason.slice(0, 80)}`)));
        },
      }),
  });
