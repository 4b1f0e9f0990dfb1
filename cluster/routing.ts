import { type ShardMap } from './shard-map.js';
import { type SlotRange, slotStart } from './slots.js';

/** One piece of a routed request: a run of slots and where its elements sit in the caller's vector. */
export interface RoutedRange extends SlotRange {
  /** Element offset of this run within the caller's vector. */
  offset: number;
  /** Elements in this run. */
  length: number;
}

/** Everything one shard is asked for, in slot order. */
export interface ShardBatch {
  shardId: string;
  address: string;
  ranges: RoutedRange[];
  /** Total elements of the batch. */
  length: number;
}

/**
 * Splits a request for `ranges` (ordered, disjoint runs of slots whose elements
 * the caller holds concatenated) into one batch per owning shard. Pure: no
 * network, no clock.
 */
export function route(ranges: readonly SlotRange[], map: ShardMap, elements: number): ShardBatch[] {
  const batches = new Map<string, ShardBatch>();
  let offset = 0;
  for (const r of ranges) {
    let s = r.begin;
    while (s < r.end) {
      const owner = map.owners[s]!;
      let e = s + 1;
      while (e < r.end && map.owners[e] === owner) e++;
      const start = slotStart(s, elements, map.slots);
      const length = slotStart(e, elements, map.slots) - start;
      let batch = batches.get(owner);
      if (!batch) {
        batch = { shardId: owner, address: map.addresses[owner]!, ranges: [], length: 0 };
        batches.set(owner, batch);
      }
      batch.ranges.push({ begin: s, end: e, offset, length });
      batch.length += length;
      offset += length;
      s = e;
    }
  }
  return [...batches.values()];
}

/** The whole key space as one range. */
export function allSlots(map: ShardMap): SlotRange[] {
  return [{ begin: 0, end: map.slots }];
}
