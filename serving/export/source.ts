import { type Consistency } from '../../cluster/consistency.js';
import { type ManifestSource } from './manifest.js';

/** What a snapshot of the cluster's weights reports, as the manifest needs it. */
export interface SnapshotFacts {
  cluster: string;
  membership: string;
  consistency: Consistency;
  epoch: number;
  closedSteps: number;
  shards: { id: string; address: string; slots: number; rows: number; snapshotMs: number }[];
}

/**
 * Which instant the exported weights stand for, in words, by consistency
 * model (docs/serving.md): each shard copies its slots between two requests
 * (each push whole or not at all), as a checkpoint does; only bsp makes
 * those copies one state of the run.
 */
export function describeInstant(consistency: Consistency, closedSteps: number): string {
  if (consistency === 'bsp') return `one state of the run: every shard after exactly ${closedSteps} steps (no shard closed a later step before its copy was taken)`;
  const ssp = consistency.startsWith('ssp:') ? `; under ${consistency} the workers' clocks were within ${consistency.slice(4)} steps of each other` : '';
  return `each shard at one instant of its own, between two pushes (each push whole or not at all), the shards' instants within the moment the export reached them${ssp}`;
}

/** A Redis URL without its password, for the manifest. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, ':***@');
  }
}

export function manifestSource(f: SnapshotFacts): ManifestSource {
  return {
    cluster: f.cluster,
    membership: f.membership,
    map_epoch: f.epoch,
    consistency: f.consistency,
    closed_steps: f.closedSteps,
    instant: describeInstant(f.consistency, f.closedSteps),
    shards: f.shards.map((s) => ({ id: s.id, address: s.address, slots: s.slots, rows: s.rows, snapshot_ms: Math.round(s.snapshotMs * 1000) / 1000 })),
  };
}
