import { type ClusterStatus } from '../cluster-status.js';

/** What `GET /api/status` answers: `tessera status --json`'s object, each slot's owner and each shard's load, and when it was read. */
export interface DashboardStatus extends ClusterStatus {
  /** Milliseconds since the epoch, on the dashboard's clock, when it was read. */
  at: number;
  /** The shard owning each slot, by slot (the map's `owners`); empty before the first map. */
  owners: string[];
  /** Per live shard, its slots' traffic: bytes/s per slot with any (the lease's `load`). */
  load: Record<string, { slot: number; bytesPerSec: number }[]>;
}

/** One point of the curves: per shard the sum of its slots' bytes/s, per worker its step, loss and held-out metrics. */
export interface Sample {
  at: number;
  shards: Record<string, number>;
  workers: Record<string, { step: number; loss: number | null; held_out: Record<string, number> | null }>;
}

/** Something that happened between two samples: the map changed epoch, a shard wrote a checkpoint, or one died or came back. */
export interface DashboardEvent {
  at: number;
  kind: 'map' | 'checkpoint' | 'shard';
  text: string;
}

/** What `GET /api/history` answers, oldest first. */
export interface DashboardHistory {
  every_s: number;
  samples: Sample[];
  events: DashboardEvent[];
}

/** Samples kept: 30 minutes at the default 2 s; with a longer --every-s, the same count spans longer. */
export const HISTORY_SAMPLES = 900;
/** Events kept (the newest). */
export const HISTORY_EVENTS = 200;

/**
 * The dashboard's memory of the run: a bounded ring of samples, and the
 * events read off the difference between one status and the next. The
 * events come from the dashboard's own samples, so it sees only those that
 * happen while it runs (the first status gives a baseline, not events).
 */
export class History {
  private readonly samples: Sample[] = [];
  private readonly events: DashboardEvent[] = [];
  private last: DashboardStatus | null = null;

  constructor(private readonly everyS: number) {}

  add(s: DashboardStatus): void {
    this.samples.push({
      at: s.at,
      shards: Object.fromEntries(s.shards.map((x) => [x.id, (s.load[x.id] ?? []).reduce((a, l) => a + l.bytesPerSec, 0)])),
      workers: Object.fromEntries(s.workers.map((w) => [w.id, { step: w.step, loss: w.loss, held_out: w.held_out }])),
    });
    if (this.samples.length > HISTORY_SAMPLES) this.samples.splice(0, this.samples.length - HISTORY_SAMPLES);
    const prev = this.last;
    if (prev) {
      if (s.epoch !== prev.epoch) this.event(s.at, 'map', `map epoch ${prev.epoch} → ${s.epoch}: ${s.shards.map((x) => `${x.id} ${x.slots}`).join(', ')} slots`);
      const before = new Map(prev.shards.map((x) => [x.id, x]));
      for (const x of s.shards) {
        const was = before.get(x.id);
        if (x.last_checkpoint && x.last_checkpoint.at !== was?.last_checkpoint?.at) this.event(s.at, 'checkpoint', `${x.id} checkpoint ${x.last_checkpoint.path} (step ${x.last_checkpoint.steps})`);
        if (was && was.state !== x.state) this.event(s.at, 'shard', `${x.id} ${was.state} → ${x.state}`);
      }
    }
    this.last = s;
  }

  snapshot(): DashboardHistory {
    return { every_s: this.everyS, samples: [...this.samples], events: [...this.events] };
  }

  private event(at: number, kind: DashboardEvent['kind'], text: string): void {
    this.events.push({ at, kind, text });
    if (this.events.length > HISTORY_EVENTS) this.events.splice(0, this.events.length - HISTORY_EVENTS);
  }
}
