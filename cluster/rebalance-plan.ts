import { type ShardMap } from './shard-map.js';

/** Slots to hand from one shard to another, in one move. */
export interface SlotMove {
  from: string;
  to: string;
  slots: number[];
}

/**
 * The moves that spread the map's slots evenly over `shards` (each ends with
 * ⌊S/n⌋ or ⌈S/n⌉ slots), moving as few slots as it can: a shard keeps what it
 * holds up to its share, a shard not in `shards` gives away everything (it is
 * being drained), and a shard over its share gives away its highest slots.
 * Moves carry at most `perMove` slots each, and keep runs of slots together.
 * Pure; `[]` when the map is already even.
 */
export function rebalancePlan(map: ShardMap, shards: readonly string[], perMove = 64): SlotMove[] {
  if (shards.length === 0) return [];
  const owned = new Map<string, number[]>(shards.map((id) => [id, []]));
  const leaving: { from: string; slot: number }[] = [];
  map.owners.forEach((owner, slot) => {
    const mine = owned.get(owner);
    if (mine) mine.push(slot);
    else leaving.push({ from: owner, slot });
  });
  // Shares: ⌈S/n⌉ for the shards that hold most now (they then move least), ⌊S/n⌋ for the rest.
  const base = Math.floor(map.slots / shards.length);
  let extra = map.slots % shards.length;
  const order = [...shards].sort((a, b) => owned.get(b)!.length - owned.get(a)!.length || a.localeCompare(b));
  const share = new Map(order.map((id) => [id, base + (extra-- > 0 ? 1 : 0)]));
  const surplus = [...leaving];
  for (const id of order) {
    const mine = owned.get(id)!;
    for (const slot of mine.slice(share.get(id)!)) surplus.push({ from: id, slot });
  }
  surplus.sort((a, b) => a.slot - b.slot);
  const moves: SlotMove[] = [];
  let next = 0;
  for (const id of order) {
    let need = share.get(id)! - Math.min(owned.get(id)!.length, share.get(id)!);
    while (need > 0 && next < surplus.length) {
      const { from, slot } = surplus[next++]!;
      need--;
      const last = moves[moves.length - 1];
      if (last && last.from === from && last.to === id && last.slots.length < perMove) last.slots.push(slot);
      else moves.push({ from, to: id, slots: [slot] });
    }
  }
  return moves;
}
