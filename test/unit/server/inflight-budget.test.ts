import { expect } from 'chai';
import { ShardBusyError } from '../../../cluster/errors.js';
import { encodedSlotBytes } from '../../../cluster/wire/gradient-codec.js';
import { EncodedPush } from '../../../server/encoded-push.js';
import { GradientPool } from '../../../server/gradient-pool.js';
import { BudgetCharge, InflightBudget } from '../../../server/inflight-budget.js';

describe('unit: the shard’s budget of bytes in flight', () => {
  it('takes until full, refuses what does not fit with busy (nothing taken), and gives back', () => {
    const b = new InflightBudget(100);
    b.take(60, 'a');
    b.take(40, 'b');
    expect(() => b.take(1, 'a push’s window')).to.throw(ShardBusyError, /a push’s window needs 0\.00 MiB but the shard's requests already hold 0\.00 of its 0\.00 MiB \(--max-inflight-mib\)/);
    expect(b.heldBytes).to.equal(100);
    b.give(60);
    b.take(50, 'c');
    expect(b.heldBytes).to.equal(90);
    expect(() => new InflightBudget(0)).to.throw(RangeError);
  });

  it('a charge gives back piece by piece, never more than it took, and all of it at the end', () => {
    const b = new InflightBudget(100);
    const c = new BudgetCharge(b, 'a pull’s reply');
    c.take(30);
    c.take(30);
    c.give(30);
    expect(b.heldBytes).to.equal(30);
    c.give(1000);
    expect(b.heldBytes, 'no more than it held').to.equal(0);
    c.take(20);
    c.giveAll();
    c.giveAll();
    expect(b.heldBytes).to.equal(0);
  });

  it('the gradient pool takes every buffer it lends from the budget, pooled or new, and a refused one allocates nothing', () => {
    const pool = new GradientPool(1 << 20, new InflightBudget(4096 * 4 + 100));
    const a = pool.acquire(4096);
    expect(pool.budget.heldBytes).to.equal(4096 * 4);
    expect(() => pool.acquire(4096)).to.throw(ShardBusyError);
    pool.release(a);
    expect(pool.budget.heldBytes).to.equal(0);
    const again = pool.acquire(1000);
    expect(pool.budget.heldBytes, 'a pooled buffer counts whole').to.equal(4096 * 4);
    pool.release(again);
    expect(pool.budget.heldBytes).to.equal(0);
  });

  it('an encoded push takes memory as its bytes arrive (doubling from 64 KiB), and gives it all back', () => {
    const n = 1 << 20;
    const wire = encodedSlotBytes({ kind: 'int8' }, n);
    const budget = new InflightBudget(1 << 30);
    const push = new EncodedPush({ kind: 'int8' }, [n], wire, budget);
    expect(budget.heldBytes, 'nothing on the header').to.equal(0);
    push.write(new Uint8Array(10), 0);
    expect(budget.heldBytes).to.equal(64 << 10);
    push.write(new Uint8Array(100_000), 10);
    expect(budget.heldBytes).to.equal(128 << 10);
    push.write(new Uint8Array(wire - 100_010), 100_010);
    expect(budget.heldBytes, 'at most the size announced').to.equal(wire);
    push.release();
    expect(budget.heldBytes).to.equal(0);
    const small = new InflightBudget(100 << 10);
    const refused = new EncodedPush({ kind: 'int8' }, [n], wire, small);
    refused.write(new Uint8Array(10), 0);
    expect(() => refused.write(new Uint8Array(100_000), 10)).to.throw(ShardBusyError);
    refused.release();
    expect(small.heldBytes).to.equal(0);
  });
});
