import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { expect } from 'chai';
import { FloatHeap, floatHeap } from '../../../server/float-heap.js';
import { randInt, rng } from '../../helpers/random.js';

/*
 * The float heap (server/float-heap.ts), each test on a heap of its own over
 * a fresh shared WebAssembly memory, so offsets and growth are predictable.
 */

const PAGE = 65_536;
const ALIGN = 64;
/** The heap's smallest growth, in pages. */
const MIN_GROWTH_PAGES = 256;

interface WasmMemory {
  readonly buffer: ArrayBufferLike;
  grow(pages: number): number;
}
const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number; shared: boolean }) => WasmMemory } }).WebAssembly;

function memory(initial = 1, maximum = 2048): WasmMemory {
  return new wasm.Memory({ initial, maximum, shared: true });
}

/** Bytes a block of `length` floats takes: whole 64-byte lines, at least one. */
function blockBytes(length: number): number {
  return Math.max(ALIGN, Math.ceil((4 * length) / ALIGN) * ALIGN);
}

/** Non-null, or a failure. */
function must(a: Float32Array | null, what = 'allocation'): Float32Array {
  if (!a) expect.fail(`${what} returned null`);
  return a;
}

/** Fills `a` with a bit pattern unique to `id` (as int32 words, so any id and length stay exact), and checks it later. */
function words(a: Float32Array): Int32Array {
  return new Int32Array(a.buffer, a.byteOffset, a.length);
}
function stamp(a: Float32Array, id: number): void {
  const w = words(a);
  for (let i = 0; i < w.length; i++) w[i] = id * 100_000 + i;
}
function expectStamp(a: Float32Array, id: number, what: string): void {
  const w = words(a);
  for (let i = 0; i < w.length; i++) if (w[i] !== id * 100_000 + i) expect.fail(`${what}: array ${id} word ${i} is ${w[i]}, was written as ${id * 100_000 + i}`);
}

describe('server/float-heap', () => {
  const owner = {};

  it('hands out zero-filled arrays of the asked length, on 64-byte boundaries, never at address 0', () => {
    const heap = new FloatHeap(memory());
    for (const n of [0, 1, 3, 15, 16, 17, 100, 1000, 16_383, 40_000]) {
      const a = must(heap.alloc(n, owner));
      expect(a.length, `length ${n}`).to.equal(n);
      expect(a.byteOffset % ALIGN, `n = ${n}: byte offset ${a.byteOffset}`).to.equal(0);
      expect(a.byteOffset, `n = ${n}`).to.be.above(0);
      expect(a.buffer).to.be.instanceOf(SharedArrayBuffer);
      expect(Array.from(a).every((x) => Object.is(x, 0)), `n = ${n}: zero-filled`).to.equal(true);
    }
  });

  it('blocks are disjoint: writing each array changes no other, through growth and frees', () => {
    const heap = new FloatHeap(memory());
    const next = rng(51);
    const live = new Map<number, Float32Array>();
    let id = 0;
    for (let round = 0; round < 400; round++) {
      if (live.size > 0 && next() < 0.3) {
        const ids = [...live.keys()];
        const victim = ids[randInt(next, 0, ids.length - 1)]!;
        heap.free(live.get(victim)!);
        live.delete(victim);
      } else {
        const a = must(heap.alloc(randInt(next, 0, next() < 0.1 ? 30_000 : 300), owner));
        stamp(a, ++id);
        live.set(id, a);
      }
    }
    expect(heap.committedBytes, 'the heap grew on the way').to.be.above(PAGE);
    for (const [k, a] of live) expectStamp(a, k, 'after 400 allocations and frees');
    // And the byte ranges themselves do not overlap.
    const spans = [...live.values()].map((a) => [a.byteOffset, a.byteOffset + blockBytes(a.length)] as const).sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < spans.length; i++) expect(spans[i]![0], `block at ${spans[i]![0]} overlaps the one before it`).to.be.at.least(spans[i - 1]![1]);
  });

  it('a freed block is reused, zero-filled again', () => {
    const heap = new FloatHeap(memory());
    const a = must(heap.alloc(100, owner));
    const b = must(heap.alloc(100, owner));
    stamp(a, 1);
    stamp(b, 2);
    const at = a.byteOffset;
    heap.free(a);
    const c = must(heap.alloc(100, owner));
    expect(c.byteOffset, 'the freed block is handed out again').to.equal(at);
    expect(Array.from(c).every((x) => x === 0), 'zero-filled, not the freed array’s values').to.equal(true);
    expectStamp(b, 2, 'neighbour of the reused block');
    // A smaller request fits in a freed block too; a larger one does not.
    heap.free(c);
    const big = must(heap.alloc(200, owner));
    expect(big.byteOffset, 'a larger request skips the 448-byte hole').to.not.equal(at);
    const small = must(heap.alloc(10, owner));
    expect(small.byteOffset, 'a smaller request takes it').to.equal(at);
  });

  it('freed neighbours merge into one block, in either order, with the heap’s free tail too', () => {
    const heap = new FloatHeap(memory());
    const [a, b, c, d] = [0, 1, 2, 3].map(() => must(heap.alloc(16, owner))); // 64 bytes each, side by side
    expect([b!.byteOffset - a!.byteOffset, c!.byteOffset - b!.byteOffset, d!.byteOffset - c!.byteOffset]).to.deep.equal([64, 64, 64]);
    heap.free(a!);
    heap.free(b!); // merges with the previous hole
    const ab = must(heap.alloc(32, owner));
    expect(ab.byteOffset, 'a and b merged (freed in order)').to.equal(a!.byteOffset);
    heap.free(c!);
    heap.free(ab); // merges with the next hole
    const abc = must(heap.alloc(48, owner));
    expect(abc.byteOffset, 'a, b and c merged (freed in reverse)').to.equal(a!.byteOffset);
    // Free both sides first, then the middle: one hole of three.
    const [x, y, z, fence] = [0, 1, 2, 3].map(() => must(heap.alloc(16, owner)));
    heap.free(x!);
    heap.free(z!);
    heap.free(y!);
    const xyz = must(heap.alloc(48, owner));
    expect(xyz.byteOffset, 'x, y and z merged').to.equal(x!.byteOffset);
    // The last block before the free tail: freed, it merges with the tail, so the whole rest of the page is one hole.
    heap.free(fence!);
    const rest = PAGE - fence!.byteOffset;
    const tail = must(heap.alloc(rest / 4, owner));
    expect(tail.byteOffset, 'the freed block and the tail merged').to.equal(fence!.byteOffset);
    expect(heap.committedBytes, 'and the heap did not grow for it').to.equal(PAGE);
  });

  it('freeing twice, freeing a subarray or a foreign array changes nothing', () => {
    const heap = new FloatHeap(memory());
    const a = must(heap.alloc(64, owner));
    heap.free(a);
    heap.free(a);
    const b = must(heap.alloc(64, owner));
    const c = must(heap.alloc(64, owner));
    expect(c.byteOffset, 'a double free must not hand one block out twice').to.not.equal(b.byteOffset);
    stamp(b, 1);
    stamp(c, 2);
    heap.free(b.subarray(0, 64)); // a view, not the array alloc returned
    heap.free(new Float32Array(64));
    heap.free(must(new FloatHeap(memory()).alloc(64, owner)));
    const d = must(heap.alloc(64, owner));
    for (const [k, x] of [b, c].entries()) expect(d.byteOffset, `d reuses live block ${k}`).to.not.equal(x.byteOffset);
    expectStamp(b, 1, 'b');
    expectStamp(c, 2, 'c');
  });

  it('grows the memory when needed, by at least 256 pages; arrays handed out before stay valid and writable', () => {
    const mem = memory(1);
    const heap = new FloatHeap(mem);
    expect(heap.committedBytes).to.equal(PAGE);
    const early = must(heap.alloc(100, owner));
    stamp(early, 1);
    const oldBuffer = early.buffer;
    // More than the page holds: the heap grows, and the block spans the old free tail and the new pages.
    const big = must(heap.alloc(20_000, owner));
    expect(heap.committedBytes, 'grown by the minimum growth').to.equal((1 + MIN_GROWTH_PAGES) * PAGE);
    expect(mem.buffer.byteLength).to.equal(heap.committedBytes);
    expect(big.byteOffset, 'the new pages merged with the free tail').to.equal(early.byteOffset + blockBytes(100));
    expect(big.buffer, 'new arrays view the grown memory').to.equal(mem.buffer);
    expect(big.buffer).to.not.equal(oldBuffer);
    // The early array is not detached: same length, same values, and it still aliases the memory.
    expect(early.length).to.equal(100);
    expectStamp(early, 1, 'after growth');
    early[7] = -1.5;
    expect(new Float32Array(mem.buffer, early.byteOffset, 100)[7], 'old view and grown memory are the same bytes').to.equal(-1.5);
    stamp(early, 1);
    stamp(big, 2);
    expectStamp(early, 1, 'untouched by the new block');
    // A request larger than any growth step grows by what it needs.
    const huge = must(heap.alloc(600 * (PAGE / 4), owner));
    expect(heap.committedBytes, 'grown enough for 600 more pages').to.be.at.least(huge.byteOffset + huge.byteLength);
    expect(mem.buffer.byteLength).to.equal(heap.committedBytes);
    expect(heap.holds(early) && heap.holds(big) && heap.holds(huge), 'arrays of every generation of the buffer').to.equal(true);
  });

  it('returns null when the memory cannot grow, and keeps serving what fits', () => {
    const heap = new FloatHeap(memory(1, 2));
    const small = must(heap.alloc(1000, owner));
    expect(heap.alloc(PAGE, owner), 'a request beyond the memory’s maximum').to.equal(null);
    expect(heap.committedBytes).to.equal(PAGE);
    stamp(small, 3);
    const more = must(heap.alloc(1000, owner), 'a request that fits after a failed growth');
    expectStamp(small, 3, 'after a failed growth');
    expect(more.byteOffset).to.equal(small.byteOffset + blockBytes(1000));
  });

  it('never asks for more than wasm32’s 4 GiB: a request beyond it is refused without growing', () => {
    const grows: number[] = [];
    const fake = {
      buffer: new SharedArrayBuffer(PAGE),
      grow(pages: number): number {
        grows.push(pages);
        throw new RangeError('refused by the test');
      },
    };
    const heap = new FloatHeap(fake);
    expect(heap.alloc(2 ** 30, owner), '4 GiB of floats').to.equal(null);
    expect(grows, 'no growth attempted for an impossible request').to.deep.equal([]);
    expect(heap.alloc(PAGE, owner), 'growth refused by the memory').to.equal(null);
    expect(grows, 'one growth attempt, of at least 256 pages').to.have.length(1);
    expect(grows[0]).to.be.at.least(MIN_GROWTH_PAGES);
    expect(must(heap.alloc(10, owner)).byteOffset).to.equal(ALIGN);
  });

  it('holds() tells its arrays (views of them included) from every other', () => {
    const mem = memory();
    const heap = new FloatHeap(mem);
    const a = must(heap.alloc(100, owner));
    expect(heap.holds(a)).to.equal(true);
    expect(heap.holds(a.subarray(3, 50)), 'a subarray').to.equal(true);
    expect(heap.holds(new Float32Array(mem.buffer, 0, 4)), 'any view of the memory').to.equal(true);
    expect(heap.holds(new Float32Array(100)), 'a plain array').to.equal(false);
    expect(heap.holds(new Float32Array(new SharedArrayBuffer(400))), 'another shared buffer').to.equal(false);
    expect(heap.holds(must(new FloatHeap(memory()).alloc(100, owner))), 'another heap’s array').to.equal(false);
    must(heap.alloc(50_000, owner)); // grows: a new buffer object
    expect(heap.holds(a), 'an array from before growth').to.equal(true);
    expect(heap.holds(new Float32Array(mem.buffer, 64, 4)), 'a view of the grown memory').to.equal(true);
  });

  it('the process heap is one, shared and lazily created; its arrays are shared memory', () => {
    const heap = floatHeap();
    if (!heap) expect.fail('no float heap in this Node: shards would run without the SIMD kernels');
    expect(floatHeap()).to.equal(heap);
    const a = must(heap.alloc(10, owner));
    expect(a.buffer).to.be.instanceOf(SharedArrayBuffer);
    expect(heap.holds(a)).to.equal(true);
    heap.free(a);
  });

  describe('reclaiming by owner (FinalizationRegistry)', () => {
    /** V8's gc(), exposed at run time (mocha runs without --expose-gc). */
    let gc: () => void;
    before(function () {
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as () => void;
      if (typeof gc !== 'function') this.skip();
    });

    /** Collects until a fresh sentinel's finalizer has run (so a collection and its cleanup happened), then lets other cleanups run. */
    async function collect(): Promise<boolean> {
      let done = false;
      const sentinel = new FinalizationRegistry(() => (done = true));
      (() => sentinel.register({}, 0))();
      for (let i = 0; i < 50 && !done; i++) {
        gc();
        await new Promise((r) => setTimeout(r, 1));
      }
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      return done;
    }

    /** Allocates from `heap` for an owner no one keeps. */
    function allocForGhost(heap: FloatHeap, length: number): number {
      return must(heap.alloc(length, {})).byteOffset;
    }

    it('a block is reclaimed once its owner is garbage-collected, not before', async function () {
      const heap = new FloatHeap(memory());
      const live = {};
      const kept = must(heap.alloc(256, live));
      const ghost = allocForGhost(heap, 256);
      stamp(kept, 5);
      if (!(await collect())) this.skip();
      const again = must(heap.alloc(256, live));
      expect(again.byteOffset, 'the collected owner’s block is handed out again').to.equal(ghost);
      expect(must(heap.alloc(256, live)).byteOffset, 'the live owner’s block is not').to.not.equal(kept.byteOffset);
      expectStamp(kept, 5, 'the live owner’s array');
    });

    it('a block freed explicitly is not released again when its owner is collected later', async function () {
      const heap = new FloatHeap(memory());
      let owner1: object | null = {};
      const a = must(heap.alloc(256, owner1));
      const at = a.byteOffset;
      heap.free(a);
      const live = {};
      const b = must(heap.alloc(256, live)); // takes a's old block
      expect(b.byteOffset).to.equal(at);
      owner1 = null;
      if (!(await collect())) this.skip();
      const c = must(heap.alloc(256, live));
      expect(c.byteOffset, 'a stale release would hand b’s block out twice').to.not.equal(at);
      stamp(b, 1);
      stamp(c, 2);
      expectStamp(b, 1, 'b');
    });
  });
});
