import { InvalidArgumentError } from './errors.js';

/**
 * How far workers may run ahead of each other, as the cluster's configuration
 * names it: `async`, `ssp:K` (K ≥ 0) or `bsp`. See docs/consistency.md.
 */
export type Consistency = 'async' | 'bsp' | `ssp:${number}`;

/** A consistency model, parsed. */
export type ConsistencyModel =
  /** Pulls return the latest values; pushes apply on arrival (Hogwild-style). */
  | { kind: 'async' }
  /** A pull at clock c waits until every live worker's clock is ≥ c − staleness; pushes apply on arrival. */
  | { kind: 'ssp'; staleness: number }
  /** A step is applied, as the mean of the workers' pushes, once every live worker has pushed it; a pull at clock c waits for steps < c. */
  | { kind: 'bsp' };

/** Largest K of `ssp:K`: beyond it, bounded staleness is async in all but name. */
export const MAX_STALENESS = 1_000_000;

/**
 * Parses `async`, `bsp` or `ssp:K`.
 * @throws InvalidArgumentError naming the accepted forms.
 */
export function parseConsistency(text: string): ConsistencyModel {
  if (text === 'async') return { kind: 'async' };
  if (text === 'bsp') return { kind: 'bsp' };
  const m = /^ssp:(\d+)$/.exec(text);
  if (m) {
    const staleness = Number(m[1]);
    if (staleness <= MAX_STALENESS) return { kind: 'ssp', staleness };
  }
  throw new InvalidArgumentError(`unknown consistency "${text}"; use async, bsp, or ssp:K with K a whole number of clocks in [0, ${MAX_STALENESS}] (e.g. ssp:2)`);
}

/** Whether workers must send their clock (every model but `async`). */
export function isClocked(model: ConsistencyModel): boolean {
  return model.kind !== 'async';
}
