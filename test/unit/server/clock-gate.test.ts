import { expect } from 'chai';
import { parseConsistency } from '../../../cluster/consistency.js';
import { ClockTimeoutError, InvalidArgumentError, NotReadyError, StepAheadError } from '../../../cluster/errors.js';
import { ClockGate } from '../../../server/clock-gate.js';

/** Whether `p` settles within a few event-loop turns. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return done;
}

describe('unit: consistency names', () => {
  it('parses async, bsp and ssp:K, and names the forms on a bad one', () => {
    expect(parseConsistency('async')).to.deep.equal({ kind: 'async' });
    expect(parseConsistency('bsp')).to.deep.equal({ kind: 'bsp' });
    expect(parseConsistency('ssp:0')).to.deep.equal({ kind: 'ssp', staleness: 0 });
    expect(parseConsistency('ssp:3')).to.deep.equal({ kind: 'ssp', staleness: 3 });
    for (const bad of ['ssp', 'ssp:-1', 'ssp:1.5', 'BSP', 'ssp:99999999', '']) {
      expect(() => parseConsistency(bad), bad).to.throw(InvalidArgumentError, /use async, bsp, or ssp:K/);
    }
  });
});

describe('unit: ClockGate', () => {
  let gates: ClockGate[] = [];
  const gate = (text: string, initialWorkers = 1, startTimeoutMs = 30_000, now?: () => number) => {
    const g = new ClockGate(parseConsistency(text), initialWorkers, startTimeoutMs, now);
    gates.push(g);
    return g;
  };
  afterEach(() => {
    for (const g of gates) g.close();
    gates = [];
  });

  it('async never waits and reports clock 0', async () => {
    const g = gate('async');
    expect(g.clocked).to.equal(false);
    expect(await settled(g.beforePull('a', 1_000, false, 1_000))).to.equal(true);
    expect(g.clock()).to.equal(0);
  });

  it('ssp:1: a pull at clock c waits until every live worker reached c − 1', async () => {
    const g = gate('ssp:1');
    await g.beforePull('a', 0, true, 1_000);
    await g.beforePull('b', 0, true, 1_000);
    g.afterPush('a', 0);
    expect(await settled(g.beforePull('a', 1, false, 1_000)), 'a at 1, b at 0: within 1').to.equal(true);
    g.afterPush('a', 1);
    const ahead = g.beforePull('a', 2, false, 1_000);
    expect(await settled(ahead), 'a at 2 while b is at 0').to.equal(false);
    g.afterPush('b', 0);
    expect(await settled(ahead), 'b reached 1').to.equal(true);
    expect(g.clock()).to.equal(1);
    expect(Object.fromEntries(g.clocks())).to.deep.equal({ a: 2, b: 1 });
  });

  it('bsp closes a step once every live worker pushed it, in order, and refuses a push ahead of the open step', async () => {
    const g = gate('bsp', 2);
    const closed: number[] = [];
    g.onStepClosed((s) => void closed.push(s));
    await Promise.all([g.beforePull('a', 0, true, 1_000), g.beforePull('b', 0, true, 1_000)]);
    expect(() => g.checkPush('a', 1)).to.throw(StepAheadError, /ahead of this shard's open step 0/);
    g.afterPush('a', 0);
    expect(closed).to.deep.equal([]);
    const next = g.beforePull('a', 1, false, 1_000);
    expect(await settled(next)).to.equal(false);
    g.afterPush('b', 0);
    expect(closed).to.deep.equal([0]);
    expect(await settled(next)).to.equal(true);
    expect(g.clock()).to.equal(1);
    // A late push (for a step already closed) counts towards the open one: no error.
    expect(() => g.checkPush('c', 0)).not.to.throw();
  });

  it('bsp: a hold keeps steps from closing past it; whenApplied runs at exactly that step, and refuses one already past', async () => {
    const g = gate('bsp', 1);
    await g.beforePull('a', 0, true, 1_000);
    const release = g.hold(2);
    const seen: number[] = [];
    const at2 = g.whenApplied(2, () => g.closedSteps, 1_000);
    for (const step of [0, 1, 2, 3]) {
      g.afterPush('a', step);
      seen.push(g.closedSteps);
    }
    expect(seen, 'held at 2 while the worker pushed on').to.deep.equal([1, 2, 2, 2]);
    expect(await at2).to.equal(2);
    expect(await g.whenApplied(2, () => 'now', 1_000), 'at the step now: at once').to.equal('now');
    release();
    expect(g.closedSteps, 'released: the summed steps close').to.equal(4);
    await g.whenApplied(2, () => 0, 1_000).then(
      () => expect.fail('a step already past'),
      (err: unknown) => expect(err).to.be.instanceOf(StepAheadError),
    );
  });

  it('a worker missing from the live set stops counting; one that joined after the set was read still counts', async () => {
    let t = 1_000;
    const g = gate('bsp', 1, 30_000, () => t);
    const closed: number[] = [];
    g.onStepClosed((s) => void closed.push(s));
    await g.beforePull('a', 0, true, 1_000);
    await g.beforePull('b', 0, true, 1_000);
    g.afterPush('a', 0);
    g.setLive(['a', 'b'], t);
    expect(closed).to.deep.equal([]);
    t += 10;
    await g.beforePull('c', 0, true, 1_000); // joins after the read below was started
    g.setLive(['a'], t - 5);
    expect(closed, 'b is gone, c joined after the read: c still holds step 0').to.deep.equal([]);
    g.afterPush('c', 0);
    expect(closed).to.deep.equal([0]);
  });

  it('waits for initialWorkers before letting anyone through, or for the start timeout', async () => {
    const g = gate('bsp', 2, 150);
    const first = g.beforePull('a', 0, true, 5_000);
    expect(await settled(first)).to.equal(false);
    const err = await gate('bsp', 2, 60_000).beforePull('x', 0, true, 50).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(ClockTimeoutError);
    expect((err as Error).message).to.match(/1 of 2 workers joined/);
    await first; // the start timeout lets the lone worker go
  });

  it('close fails waiting pulls, and any later one, with a retryable error', async () => {
    const g = gate('ssp:0', 2);
    const waiting = g.beforePull('a', 0, true, 5_000);
    g.close();
    expect(await waiting.catch((e: unknown) => e)).to.be.instanceOf(NotReadyError);
    expect(await g.beforePull('b', 0, true, 5_000).catch((e: unknown) => e)).to.be.instanceOf(NotReadyError);
  });

  it('bsp on a shard that restarted mid-run opens its first step where the workers are', async () => {
    const g = gate('bsp');
    expect(() => g.checkPush('a', 7), 'a pipelined push before any pull').not.to.throw();
    expect(g.clock()).to.equal(7);
    const h = gate('bsp');
    await h.beforePull('a', 12, false, 1_000);
    expect(h.clock()).to.equal(12);
  });
});
