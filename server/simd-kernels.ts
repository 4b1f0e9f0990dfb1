import { createLogger } from '../cluster/log.js';
import { type FloatHeap, floatHeap } from './float-heap.js';

/**
 * The optimizer update rules and the non-finite check as WebAssembly SIMD
 * kernels over the float heap (float-heap.ts): V8 does not vectorise
 * JavaScript loops, but it compiles WebAssembly's 128-bit operations to SSE.
 *
 * The arithmetic is exactly that of the JavaScript kernels in optimizers.ts,
 * two elements at a time: each float32 is widened to float64
 * (`f64x2.promote_low_f32x4`), every operation is the same IEEE float64
 * operation in the same order (WebAssembly, like JavaScript, never fuses a
 * multiply and an add), and each stored value is rounded to float32 once
 * (`f32x4.demote_f64x2_zero`). The results are bit-identical to the
 * JavaScript kernels, which remain the reference and the fallback.
 *
 * The module is assembled here, byte by byte (a few dozen instructions), so
 * the build needs no WebAssembly toolchain. Each kernel handles a multiple of
 * 4 elements (the check: of 8); callers finish the rest in JavaScript.
 */

const log = createLogger('simd');

// --- A minimal WebAssembly binary writer -------------------------------------

const u32 = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
};
const s32 = (n: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) return [...out, b];
    out.push(b | 0x80);
  }
};
const vec = (items: number[][]): number[] => [...u32(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...u32(body.length), ...body];
const name = (s: string): number[] => [...u32(s.length), ...Buffer.from(s, 'utf8')];

const I32 = 0x7f;
const F64 = 0x7c;
const V128 = 0x7b;

const get = (i: number) => [0x20, ...u32(i)];
const set = (i: number) => [0x21, ...u32(i)];
const i32const = (v: number) => [0x41, ...s32(v)];
const I32_ADD = [0x6a];
const I32_SHL = [0x74];
const I32_LT_U = [0x49];
const I32_GE_U = [0x4f];
const END = [0x0b];
const simd = (op: number, ...imm: number[]) => [0xfd, ...u32(op), ...imm];
const memarg = (alignLog2: number, offset: number) => [...u32(alignLog2), ...u32(offset)];
/** Two float32 at [local + off] widened to float64x2. */
const load2 = (local: number, off: number) => [...get(local), ...simd(0x5d, ...memarg(3, off)), ...simd(0x5f)]; // v128.load64_zero, f64x2.promote_low_f32x4
/** Rounds the float64x2 on the stack to float32 and stores both at [local + off]; the address must be pushed first. */
const store2 = (off: number) => [...simd(0x5e), ...simd(0x5b, ...memarg(3, off), 0)]; // f32x4.demote_f64x2_zero, v128.store64_lane 0
const F64X2_SPLAT = simd(0x14);
const F64X2_SQRT = simd(0xef);
const F64X2_ADD = simd(0xf0);
const F64X2_SUB = simd(0xf1);
const F64X2_MUL = simd(0xf2);
const F64X2_DIV = simd(0xf3);

interface KernelSpec {
  name: string;
  /** Pointer parameters (byte addresses), then the element count, then float64 scalars. */
  pointers: number;
  scalars: number;
  /** Code for two elements at byte offset `off` from every pointer. Locals: pointers 0…p−1, n = p, scalars p+1…, splats after the parameters. */
  step(off: number, p: number[], s: number[]): number[];
}

/** A kernel: splat the scalars, then a loop of 2 × `step` (4 elements) advancing every pointer by 16 bytes until the first reaches its end. */
function kernel(spec: KernelSpec): { type: number[]; body: number[] } {
  const p = Array.from({ length: spec.pointers }, (_, i) => i);
  const n = spec.pointers;
  const scalarParams = Array.from({ length: spec.scalars }, (_, i) => n + 1 + i);
  const splats = scalarParams.map((_, i) => n + 1 + spec.scalars + i);
  const end = n + 1 + 2 * spec.scalars;
  const code = [
    ...scalarParams.flatMap((s, i) => [...get(s), ...F64X2_SPLAT, ...set(splats[i]!)]),
    ...get(p[0]!), ...get(n), ...i32const(2), ...I32_SHL, ...I32_ADD, ...set(end),
    0x02, 0x40, // block
    ...get(p[0]!), ...get(end), ...I32_GE_U, 0x0d, 0, // br_if 0: nothing to do
    0x03, 0x40, // loop
    ...spec.step(0, p, splats),
    ...spec.step(8, p, splats),
    ...p.flatMap((q) => [...get(q), ...i32const(16), ...I32_ADD, ...set(q)]),
    ...get(p[0]!), ...get(end), ...I32_LT_U, 0x0d, 0, // br_if 0: next iteration
    ...END, ...END, ...END,
  ];
  const locals = vec([[...u32(spec.scalars), V128], [...u32(1), I32]]);
  const params = [...p.map(() => [I32]), [I32], ...scalarParams.map(() => [F64])];
  return { type: [0x60, ...vec(params), ...vec([])], body: [...locals, ...code] };
}

const KERNELS: KernelSpec[] = [
  {
    // w ← w − lr·g
    name: 'sgd',
    pointers: 2,
    scalars: 1,
    step: (off, [w, g], [lr]) => [...get(w!), ...load2(w!, off), ...get(lr!), ...load2(g!, off), ...F64X2_MUL, ...F64X2_SUB, ...store2(off)],
  },
  {
    // v ← μ·v + g (stored as float32); w ← w − lr·v
    name: 'momentum',
    pointers: 3,
    scalars: 2,
    step: (off, [w, v, g], [lr, mu]) => [
      ...get(v!), ...get(mu!), ...load2(v!, off), ...F64X2_MUL, ...load2(g!, off), ...F64X2_ADD, ...store2(off),
      ...get(w!), ...load2(w!, off), ...get(lr!), ...load2(v!, off), ...F64X2_MUL, ...F64X2_SUB, ...store2(off),
    ],
  },
  {
    // a ← a + g² (stored as float32); w ← w − lr·g / (√a + ε)
    name: 'adagrad',
    pointers: 3,
    scalars: 2,
    step: (off, [w, a, g], [lr, eps]) => [
      ...get(a!), ...load2(a!, off), ...load2(g!, off), ...load2(g!, off), ...F64X2_MUL, ...F64X2_ADD, ...store2(off),
      ...get(w!), ...load2(w!, off), ...get(lr!), ...load2(g!, off), ...F64X2_MUL, ...load2(a!, off), ...F64X2_SQRT, ...get(eps!), ...F64X2_ADD, ...F64X2_DIV, ...F64X2_SUB, ...store2(off),
    ],
  },
  {
    // m ← β₁m + k₁g; v ← β₂v + (k₂g)g (both stored as float32); w ← w − lr·(m/c₁) / (√(v/c₂) + ε)
    name: 'adam',
    pointers: 4,
    scalars: 8,
    step: (off, [w, m, v, g], [b1, k1, b2, k2, lr, c1, c2, eps]) => [
      ...get(m!), ...get(b1!), ...load2(m!, off), ...F64X2_MUL, ...get(k1!), ...load2(g!, off), ...F64X2_MUL, ...F64X2_ADD, ...store2(off),
      ...get(v!), ...get(b2!), ...load2(v!, off), ...F64X2_MUL, ...get(k2!), ...load2(g!, off), ...F64X2_MUL, ...load2(g!, off), ...F64X2_MUL, ...F64X2_ADD, ...store2(off),
      ...get(w!), ...load2(w!, off),
      ...get(lr!), ...load2(m!, off), ...get(c1!), ...F64X2_DIV, ...F64X2_MUL,
      ...load2(v!, off), ...get(c2!), ...F64X2_DIV, ...F64X2_SQRT, ...get(eps!), ...F64X2_ADD,
      ...F64X2_DIV, ...F64X2_SUB, ...store2(off),
    ],
  },
];

/** nonfinite(p, n) → 1 if any of the n floats at p (n a multiple of 8) has an all-ones exponent (NaN or ±Inf), else 0. */
function nonFiniteKernel(): { type: number[]; body: number[] } {
  const [p, n, mask, acc, end] = [0, 1, 2, 3, 4];
  const check = (off: number) => [
    ...get(acc), ...get(p), ...simd(0x00, ...memarg(4, off)), ...get(mask), ...simd(0x4e), ...get(mask), ...simd(0x37), ...simd(0x50), ...set(acc), // acc |= (x & mask) == mask
  ];
  const code = [
    ...i32const(0x7f800000), ...simd(0x11), ...set(mask), // i32x4.splat
    ...get(p), ...get(n), ...i32const(2), ...I32_SHL, ...I32_ADD, ...set(end),
    0x02, 0x40,
    ...get(p), ...get(end), ...I32_GE_U, 0x0d, 0,
    0x03, 0x40,
    ...check(0), ...check(16),
    ...get(p), ...i32const(32), ...I32_ADD, ...set(p),
    ...get(p), ...get(end), ...I32_LT_U, 0x0d, 0,
    ...END, ...END,
    ...get(acc), ...simd(0x53), // v128.any_true
    ...END,
  ];
  return { type: [0x60, ...vec([[I32], [I32]]), ...vec([[I32]])], body: [...vec([[...u32(2), V128], [...u32(1), I32]]), ...code] };
}

function moduleBytes(): Uint8Array {
  const fns = [...KERNELS.map(kernel), nonFiniteKernel()];
  const names = [...KERNELS.map((k) => k.name), 'nonfinite'];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(fns.map((f) => f.type))),
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, 0x03, ...u32(1), ...u32(65_536)]])), // shared memory, 1…65 536 pages
    ...section(3, vec(fns.map((_, i) => u32(i)))),
    ...section(7, vec(names.map((n, i) => [...name(n), 0x00, ...u32(i)]))),
    ...section(10, vec(fns.map((f) => [...u32(f.body.length), ...f.body]))),
  ]);
}

// --- The kernels as the server calls them ------------------------------------

interface Exports {
  sgd(w: number, g: number, n: number, lr: number): void;
  momentum(w: number, v: number, g: number, n: number, lr: number, mu: number): void;
  adagrad(w: number, a: number, g: number, n: number, lr: number, eps: number): void;
  adam(w: number, m: number, v: number, g: number, n: number, b1: number, k1: number, b2: number, k2: number, lr: number, c1: number, c2: number, eps: number): void;
  nonfinite(p: number, n: number): number;
}

interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}

export interface SimdKernels {
  readonly heap: FloatHeap;
  readonly fn: Exports;
}

let kernels: SimdKernels | null | undefined;

/** The kernels over the process's float heap, compiled on first use; null where WebAssembly SIMD or shared memory is unavailable. */
export function simdKernels(): SimdKernels | null {
  if (kernels === undefined) {
    kernels = null;
    const heap = floatHeap();
    const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;
    if (heap && wasm) {
      try {
        const instance = new wasm.Instance(new wasm.Module(moduleBytes()), { env: { memory: heap.memory } });
        kernels = { heap, fn: instance.exports as Exports };
      } catch (err) {
        log.debug(`no WebAssembly SIMD (${(err as Error).message}): optimizers run their JavaScript loops`);
      }
    }
  }
  return kernels;
}

/** Byte address of element `i` of a heap array. */
export function addressOf(a: Float32Array, i = 0): number {
  return a.byteOffset + 4 * i;
}
