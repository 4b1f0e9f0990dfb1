import { expect } from 'chai';
import { type DashboardStatus, HISTORY_EVENTS, HISTORY_SAMPLES, History } from '../../../../cli/dashboard/history.js';

function status(at: number, over: Partial<DashboardStatus> = {}): DashboardStatus {
  const shard = (id: string, slots: number) => ({ id, address: `127.0.0.1:${id.length}`, state: 'alive', slots, backed_slots: 0, topology: null, bytes: 0, epoch: 1, lost_slots: [], rolled_back: null, last_checkpoint: null });
  return {
    cluster: 'c', model: 'logreg', consistency: 'async', epoch: 1, slots: 4, orphaned_slots: 0, replicas: 0, under_replicated_slots: 0, replica_sets: [],
    shards: [shard('shard-0', 2), shard('shard-1', 2)],
    workers: [{ id: 'w0', state: 'training', step: at, backend: 'cpu', train_epoch: 0, loss: 1 / (1 + at), held_out: null, pushed: null }],
    data: null, at, owners: ['shard-0', 'shard-0', 'shard-1', 'shard-1'],
    load: { 'shard-0': [{ slot: 0, bytesPerSec: 10 }, { slot: 1, bytesPerSec: 5 }], 'shard-1': [] },
    ...over,
  };
}

describe('unit: the dashboard history', () => {
  it('samples per shard the sum of its slots\' load and per worker step and loss', () => {
    const h = new History(2);
    h.add(status(1));
    const { samples, events, every_s } = h.snapshot();
    expect(every_s).to.equal(2);
    expect(samples).to.deep.equal([{ at: 1, shards: { 'shard-0': 15, 'shard-1': 0 }, workers: { w0: { step: 1, loss: 0.5, held_out: null } } }]);
    expect(events, 'the first status is a baseline').to.deep.equal([]);
  });

  it('reads map moves, shards dying and checkpoints off successive statuses', () => {
    const h = new History(2);
    const first = status(1);
    h.add(first);
    h.add(status(2, { epoch: 2, shards: [{ ...first.shards[0]!, slots: 3, last_checkpoint: { path: 'a.ck', at: 'T1', steps: 9 } }, { ...first.shards[1]!, slots: 1, state: 'dead' }] }));
    h.add(status(3, { epoch: 2, shards: [{ ...first.shards[0]!, slots: 3, last_checkpoint: { path: 'a.ck', at: 'T1', steps: 9 } }, { ...first.shards[1]!, slots: 1, state: 'dead' }] }));
    expect(h.snapshot().events).to.deep.equal([
      { at: 2, kind: 'map', text: 'map epoch 1 → 2: shard-0 3, shard-1 1 slots' },
      { at: 2, kind: 'checkpoint', text: 'shard-0 checkpoint a.ck (step 9)' },
      { at: 2, kind: 'shard', text: 'shard-1 alive → dead' },
    ]);
  });

  it('keeps the newest samples and events only', () => {
    const h = new History(1);
    for (let i = 0; i < HISTORY_SAMPLES + 10; i++) h.add(status(i, { epoch: i }));
    const { samples, events } = h.snapshot();
    expect(samples).to.have.length(HISTORY_SAMPLES);
    expect(samples[0]!.at).to.equal(10);
    expect(events).to.have.length(HISTORY_EVENTS);
    expect(events.at(-1)!.at).to.equal(HISTORY_SAMPLES + 9);
  });
});
