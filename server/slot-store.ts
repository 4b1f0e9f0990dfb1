import { type ClusterConfig } from '../cluster/cluster-config.js';
import { initialValues, layout } from '../cluster/model-spec.js';
import { stateFloatsPerElement } from '../cluster/optimizer-config.js';
import { slotElements } from '../cluster/slots.js';
import { floatHeap } from './float-heap.js';
import { newState, type SlotState } from './optimizers.js';
import { PushDedup } from './push-dedup.js';

/** One slot's unit of storage: values, optimizer state and the pushes it applied, kept (and later moved) together. */
export interface Slot extends SlotState {
  /** First global element of the slot, and the first after it. */
  start: number;
  end: number;
  /**
   * The allocation the slot's arrays are part of (SlotState.block): slots
   * created together share it, their values (and each kind of state) side by
   * side in slot order.
   */
  block: object;
  dedup: PushDedup;
}

/**
 * The slots a shard holds, each with its own arrays so a slot can be
 * checkpointed or migrated alone. A slot is created, with the model's
 * deterministic initial values, the first time the shard owns it.
 *
 * Slots created together as a run ({@link ensureRange}) keep their values in
 * one allocation (and each kind of optimizer state in another), each slot a
 * view of its part: a pull over the run is then sent straight from that
 * memory, one view per chunk, with no copy to join slots (docs/benchmarks.md).
 * A slot added alone later gets its own arrays. Arrays come from the float
 * heap where there is one, so the optimizers' SIMD kernels reach them; they
 * are reclaimed once this store is garbage-collected.
 */
export class SlotStore {
  readonly elements: number;
  /** By slot number: a plain array, so a push's per-slot lookups stay cheap. */
  private readonly slots: (Slot | undefined)[];

  constructor(private readonly config: ClusterConfig) {
    this.elements = layout(config.model).elements;
    this.slots = new Array<Slot | undefined>(config.slots).fill(undefined);
  }

  get(s: number): Slot | undefined {
    return this.slots[s];
  }

  /** Forgets slot `s` (its memory goes once nothing refers to it). */
  drop(s: number): void {
    this.slots[s] = undefined;
  }

  /** The slots held, ascending. */
  held(): [number, Slot][] {
    const out: [number, Slot][] = [];
    this.slots.forEach((slot, s) => slot && out.push([s, slot]));
    return out;
  }

  /** Whether this shard holds slot `s` (created, restored or imported). */
  has(s: number): boolean {
    return this.slots[s] !== undefined;
  }

  /** The slot, created with its initial values if this shard never held it. */
  ensure(s: number): Slot {
    return this.slots[s] ?? this.ensureRange(s, s + 1)[0]!;
  }

  /**
   * Slots [begin, end), each created with its initial values if this shard
   * never held it; the values of each run of new slots share one allocation.
   */
  ensureRange(begin: number, end: number): Slot[] {
    const out: Slot[] = [];
    let s = begin;
    while (s < end) {
      const held = this.slots[s];
      if (held) {
        out.push(held);
        s++;
        continue;
      }
      let runEnd = s + 1;
      while (runEnd < end && !this.slots[runEnd]) runEnd++;
      const first = slotElements(s, this.elements, this.config.slots).start;
      const length = slotElements(runEnd - 1, this.elements, this.config.slots).end - first;
      const all = this.allocate(length);
      initialValues(this.config.model, first, all);
      // Each kind of state (first, second) is one array for the run too, handed out slot by slot.
      const states: Float32Array[] = [];
      for (; s < runEnd; s++) {
        const { start, end: stop } = slotElements(s, this.elements, this.config.slots);
        let kind = 0;
        const part = () => {
          const block = (states[kind] ??= this.allocate(length));
          kind++;
          return block.subarray(start - first, stop - first);
        };
        const state = newState(all.subarray(start - first, stop - first), this.config.optimizer, part);
        // A literal of fixed shape (not a spread of `state`): every slot then shares one hidden class, and the
        // per-slot work of a push reads its fields at full speed (spread copies gave each slot a map of its own).
        const slot: Slot = { values: state.values, s1: state.s1, s2: state.s2, step: state.step, start, end: stop, block: all, dedup: new PushDedup() };
        this.slots[s] = slot;
        out.push(slot);
      }
    }
    return out;
  }

  /** A zero-filled array, from the float heap where possible. */
  private allocate(length: number): Float32Array {
    return floatHeap()?.alloc(length, this) ?? new Float32Array(length);
  }

  /** Elements held. */
  heldElements(): number {
    let n = 0;
    for (const slot of this.slots) if (slot) n += slot.values.length;
    return n;
  }

  /** Bytes held by values and optimizer state. */
  heldBytes(): number {
    return this.heldElements() * 4 * (1 + stateFloatsPerElement(this.config.optimizer.name));
  }
}
