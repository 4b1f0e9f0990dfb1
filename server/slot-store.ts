import { type ClusterConfig } from '../cluster/cluster-config.js';
import { initialValues, layout } from '../cluster/model-spec.js';
import { stateFloatsPerElement } from '../cluster/optimizer-config.js';
import { slotElements } from '../cluster/slots.js';
import { newState, type SlotState } from './optimizers.js';
import { PushDedup } from './push-dedup.js';

/** One slot's unit of storage: values, optimizer state and the pushes it applied, kept (and later moved) together. */
export interface Slot extends SlotState {
  /** First global element of the slot. */
  start: number;
  dedup: PushDedup;
}

/**
 * The slots a shard holds, each in its own arrays so a slot can be
 * checkpointed or migrated alone. A slot is created, with the model's
 * deterministic initial values, the first time the shard owns it.
 */
export class SlotStore {
  readonly elements: number;
  private readonly slots = new Map<number, Slot>();

  constructor(private readonly config: ClusterConfig) {
    this.elements = layout(config.model).elements;
  }

  get(s: number): Slot | undefined {
    return this.slots.get(s);
  }

  /** The slot, created with its initial values if this shard never held it. */
  ensure(s: number): Slot {
    let slot = this.slots.get(s);
    if (!slot) {
      const { start, end } = slotElements(s, this.elements, this.config.slots);
      const values = new Float32Array(end - start);
      initialValues(this.config.model, start, values);
      slot = { ...newState(values, this.config.optimizer), start, dedup: new PushDedup() };
      this.slots.set(s, slot);
    }
    return slot;
  }

  /** Elements held. */
  heldElements(): number {
    let n = 0;
    for (const slot of this.slots.values()) n += slot.values.length;
    return n;
  }

  /** Bytes held by values and optimizer state. */
  heldBytes(): number {
    return this.heldElements() * 4 * (1 + stateFloatsPerElement(this.config.optimizer.name));
  }
}
