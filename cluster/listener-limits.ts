/**
 * What one listener of a shard (its gRPC port, its bulk port) lets its
 * callers hold, each with its default and its `tessera shard` flag
 * (docs/security.md, "Limits"). Connections beyond the cap are closed as they
 * are accepted; a connection that carries nothing for `idleMs` is closed (a
 * client re-dials on its next request).
 */
export interface ListenerLimits {
  /** Open connections per listener (`--max-connections`). */
  maxConnections: number;
  /**
   * Milliseconds a connection may carry nothing before it is closed (`--idle-timeout-s`); above the clock gate's longest wait.
   * On gRPC, a connection with calls open is pinged this often instead, and closed when a ping goes unanswered (cluster/grpc-server.ts).
   */
  idleMs: number;
  /** Calls in flight on one gRPC connection (HTTP/2 streams). */
  maxStreamsPerConnection: number;
}

export const DEFAULT_LISTENER_LIMITS: ListenerLimits = {
  maxConnections: 1024,
  idleMs: 300_000,
  maxStreamsPerConnection: 1024,
};
