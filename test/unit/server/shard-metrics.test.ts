import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { ShardMetrics, codeName } from '../../../server/shard-metrics.js';
import { parseExposition, promtoolCheck, total } from '../../helpers/prometheus.js';

function metrics(processMetrics = false) {
  const held = { bytes: 4096, rows: 7, inflight: 0 };
  const m = new ShardMetrics('s0', 1024, 4096, {
    heldBytes: () => held.bytes,
    sparseRows: () => [{ table: 'emb', rows: held.rows }],
    inflightBytes: () => held.inflight,
    inflightLimitBytes: () => 1 << 30,
    ownedSlots: () => 512,
    lostSlots: () => 2,
    mapEpoch: () => 3,
    backedSlots: () => 256,
    underReplicatedSlots: () => 4,
    backupLag: () => [{ backup: 's1', pending: 5 }],
  }, processMetrics);
  return { m, held, read: async () => parseExposition(await m.registry.metrics()) };
}

describe('server/shard-metrics: what the edges count', () => {
  it('names status codes as gRPC does', () => {
    expect([codeName(status.OK), codeName(status.INVALID_ARGUMENT), codeName(status.RESOURCE_EXHAUSTED), codeName(99)]).to.deep.equal(['OK', 'INVALID_ARGUMENT', 'RESOURCE_EXHAUSTED', 'UNKNOWN']);
  });

  it('a request is in flight until it ends, ends once whatever path ends it, and counts bytes and slot ranges only when answered OK', async () => {
    const { m, read } = metrics();
    const push = m.request('push', 'bulk');
    const pull = m.sparseRequest('pull');
    expect(total(await read(), 'tessera_shard_inflight_requests')).to.equal(2);
    push.end(status.OK, 1024, [{ begin: 0, end: 64 }], 0.002);
    push.end(status.CANCELLED);
    pull.end(status.NOT_FOUND, 999);
    m.request('pull', 'grpc').end(status.FAILED_PRECONDITION, 4096, [{ begin: 0, end: 1024 }]);
    const s = await read();
    expect(total(s, 'tessera_shard_inflight_requests')).to.equal(0);
    expect(total(s, 'tessera_shard_push_requests_total', { transport: 'bulk', code: 'OK' })).to.equal(1);
    expect(total(s, 'tessera_shard_push_requests_total', { code: 'CANCELLED' }), 'the second end did nothing').to.equal(0);
    expect(total(s, 'tessera_shard_push_bytes_total', { transport: 'bulk' })).to.equal(1024);
    expect(total(s, 'tessera_shard_apply_seconds_sum')).to.equal(0.002);
    expect(total(s, 'tessera_shard_sparse_pull_requests_total', { code: 'NOT_FOUND' })).to.equal(1);
    expect(total(s, 'tessera_shard_sparse_pull_bytes_total'), 'not OK: no bytes').to.equal(0);
    expect(total(s, 'tessera_shard_pull_requests_total', { transport: 'grpc', code: 'FAILED_PRECONDITION' })).to.equal(1);
    expect(total(s, 'tessera_shard_pull_bytes_total')).to.equal(0);
    expect(total(s, 'tessera_shard_pull_duration_seconds_count', { transport: 'grpc' }), 'timed whatever the outcome').to.equal(1);
    // Slots [0, 64): four ranges of 16, a quarter of the bytes each; the refused pull counted in none.
    expect(total(s, 'tessera_shard_slot_requests_total', { op: 'push' })).to.equal(4);
    expect(total(s, 'tessera_shard_slot_bytes_total', { op: 'push', slot_range: '48-63' })).to.equal(256);
    expect(total(s, 'tessera_shard_slot_requests_total', { op: 'pull' })).to.equal(0);
  });

  it('reads its gauges when scraped, and counts clock waits, moves and checkpoints', async () => {
    const { m, held, read } = metrics();
    m.clockWaited(0.25);
    m.moved(true, 16);
    m.moved(false, 0);
    m.checkpointed(true, 1.5);
    m.checkpointed(false, 0);
    held.inflight = 1 << 20;
    const s = await read();
    expect(total(s, 'tessera_shard_clock_wait_seconds_count')).to.equal(1);
    expect([total(s, 'tessera_shard_moves_total', { result: 'ok' }), total(s, 'tessera_shard_moves_total', { result: 'error' }), total(s, 'tessera_shard_moved_slots_total')]).to.deep.equal([1, 1, 16]);
    expect([total(s, 'tessera_shard_checkpoints_total', { result: 'ok' }), total(s, 'tessera_shard_checkpoints_total', { result: 'error' }), total(s, 'tessera_shard_checkpoint_seconds_sum')]).to.deep.equal([1, 1, 1.5]);
    expect(total(s, 'tessera_shard_last_checkpoint_timestamp_seconds')).to.be.closeTo(Date.now() / 1000, 60);
    expect(total(s, 'tessera_shard_held_bytes')).to.equal(4096);
    expect(total(s, 'tessera_shard_sparse_rows', { table: 'emb' })).to.equal(7);
    expect(total(s, 'tessera_shard_inflight_bytes')).to.equal(1 << 20);
    expect([total(s, 'tessera_shard_owned_slots'), total(s, 'tessera_shard_lost_slots'), total(s, 'tessera_shard_map_epoch')]).to.deep.equal([512, 2, 3]);
    expect([total(s, 'tessera_shard_backed_slots'), total(s, 'tessera_shard_under_replicated_slots'), total(s, 'tessera_shard_backup_pending_updates')]).to.deep.equal([256, 4, 5]);
    held.bytes = 8192;
    expect(total(await read(), 'tessera_shard_held_bytes'), 'read anew at each scrape').to.equal(8192);
  });

  it('every metric, the process’s own included, passes promtool once each has a value', async () => {
    const { m } = metrics(true);
    m.request('push', 'grpc').end(status.OK, 64, [{ begin: 5, end: 6 }], 0.001);
    m.sparseRequest('push').end(status.OK, 64);
    m.clockWaited(0.01);
    m.moved(true, 1);
    m.checkpointed(true, 0.1);
    await promtoolCheck(await m.registry.metrics());
  });
});
