import { createLogger } from '../cluster/log.js';

/**
 * A process-wide heap of float32 arrays inside one WebAssembly memory, so the
 * SIMD kernels of simd-kernels.ts can work on a shard's slots and on pushed
 * gradients where they lie (a kernel sees only its own memory). Arrays from
 * here are ordinary Float32Arrays over a SharedArrayBuffer: every JavaScript
 * reader (pulls, checkpoints, tests) uses them as it would any other.
 *
 * Why shared: a shared WebAssembly memory grows without detaching the views
 * already handed out (an unshared one would empty every slot's array on
 * growth). It is reserved up to 4 GiB of address space and committed only as
 * it grows.
 *
 * Reclaiming: a block is freed explicitly ({@link FloatHeap.free}) by an owner
 * that knows it is idle (the gradient pool), or when the owner object passed to
 * {@link FloatHeap.alloc} is garbage-collected (a slot store): views of a
 * block must not be used after its owner is gone.
 *
 * When WebAssembly shared memory is unavailable, or the 4 GiB are used up,
 * `alloc` returns null and callers fall back to plain arrays (and the kernels
 * to their JavaScript versions).
 */

const log = createLogger('float-heap');

const PAGE_BYTES = 65_536;
/** wasm32's limit: 65 536 pages of 64 KiB. */
const MAX_PAGES = 65_536;
/** Blocks start on cache-line boundaries, which also suits 16-byte SIMD loads. */
const ALIGN_BYTES = 64;
/** Grow by at least this much (and by half the current size), so many small allocations grow rarely. */
const MIN_GROWTH_PAGES = 256;

interface Block {
  offset: number;
  bytes: number;
}

interface WasmMemory {
  readonly buffer: ArrayBufferLike;
  grow(pages: number): number;
}

interface WasmApi {
  Memory: new (d: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
}

export class FloatHeap {
  /** Free blocks, ordered by offset, never adjacent (merged on free). */
  private holes: Block[] = [];
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  private readonly blocks = new WeakMap<Float32Array, Block>();
  private readonly registry = new FinalizationRegistry<Block>((b) => this.release(b));
  private current: ArrayBufferLike;
  private pages: number;

  constructor(readonly memory: WasmMemory) {
    this.current = memory.buffer;
    this.buffers.add(this.current);
    this.pages = this.current.byteLength / PAGE_BYTES;
    // Offset 0 is never handed out, so no array starts at address 0.
    if (this.pages > 0) this.holes.push({ offset: ALIGN_BYTES, bytes: this.pages * PAGE_BYTES - ALIGN_BYTES });
  }

  /** Bytes of address space the heap has committed. */
  get committedBytes(): number {
    return this.pages * PAGE_BYTES;
  }

  /** Whether `a` lies in this heap (so the SIMD kernels can reach it). */
  holds(a: Float32Array): boolean {
    return this.buffers.has(a.buffer);
  }

  /**
   * A zero-filled array of `length` floats, reclaimed when `owner` is
   * garbage-collected (or by {@link free}); null when the heap cannot grow.
   */
  alloc(length: number, owner: object): Float32Array | null {
    const bytes = Math.max(ALIGN_BYTES, Math.ceil((length * 4) / ALIGN_BYTES) * ALIGN_BYTES);
    let i = this.holes.findIndex((b) => b.bytes >= bytes);
    if (i < 0) {
      if (!this.grow(bytes)) return null;
      i = this.holes.findIndex((b) => b.bytes >= bytes);
      if (i < 0) return null;
    }
    const hole = this.holes[i]!;
    const block = { offset: hole.offset, bytes };
    if (hole.bytes === bytes) this.holes.splice(i, 1);
    else this.holes[i] = { offset: hole.offset + bytes, bytes: hole.bytes - bytes };
    const array = new Float32Array(this.current, block.offset, length);
    array.fill(0);
    this.blocks.set(array, block);
    this.registry.register(owner, block, block);
    return array;
  }

  /** Frees an array from {@link alloc} now; its owner must not touch it (or any view of it) again. */
  free(array: Float32Array): void {
    const block = this.blocks.get(array);
    if (!block) return;
    this.blocks.delete(array);
    this.registry.unregister(block);
    this.release(block);
  }

  private release(block: Block): void {
    const list = this.holes;
    let i = 0;
    while (i < list.length && list[i]!.offset < block.offset) i++;
    list.splice(i, 0, { ...block });
    // Merge with the next and the previous hole.
    const next = list[i + 1];
    if (next && list[i]!.offset + list[i]!.bytes === next.offset) {
      list[i]!.bytes += next.bytes;
      list.splice(i + 1, 1);
    }
    const prev = list[i - 1];
    if (prev && prev.offset + prev.bytes === list[i]!.offset) {
      prev.bytes += list[i]!.bytes;
      list.splice(i, 1);
    }
  }

  private grow(bytes: number): boolean {
    const last = this.holes[this.holes.length - 1];
    const tail = last && last.offset + last.bytes === this.pages * PAGE_BYTES ? last.bytes : 0;
    const needed = Math.ceil((bytes - tail) / PAGE_BYTES);
    const want = Math.min(MAX_PAGES - this.pages, Math.max(needed, MIN_GROWTH_PAGES, this.pages >> 1));
    if (want < needed) return false;
    try {
      this.memory.grow(want);
    } catch (err) {
      log.debug(`cannot grow by ${want} pages: ${(err as Error).message}`);
      return false;
    }
    const start = this.pages * PAGE_BYTES;
    this.pages += want;
    this.current = this.memory.buffer;
    this.buffers.add(this.current);
    // The last bytes below 4 GiB are never handed out either: the kernels compute an
    // array's end address in 32 bits, and an end of exactly 2^32 would wrap to 0.
    const end = Math.min(this.pages * PAGE_BYTES, MAX_PAGES * PAGE_BYTES - ALIGN_BYTES);
    this.release({ offset: start, bytes: end - start });
    return true;
  }
}

let heap: FloatHeap | null | undefined;

/** The process's heap, created on first use; null where WebAssembly shared memory is unavailable. */
export function floatHeap(): FloatHeap | null {
  if (heap === undefined) {
    try {
      const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;
      heap = wasm ? new FloatHeap(new wasm.Memory({ initial: 1, maximum: MAX_PAGES, shared: true })) : null;
    } catch (err) {
      log.debug(`no WebAssembly shared memory (${(err as Error).message}): slots use plain arrays and JavaScript kernels`);
      heap = null;
    }
  }
  return heap;
}
