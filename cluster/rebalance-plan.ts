import { type ShardMap, backupsOf } from './shard-map.js';

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
 * A shard is given slots it does not back up before ones it does, so that a
 * slot's primary and backup stay on two shards (a move to a slot's backup
 * makes the slot one backup short until its primary copies it again), and,
 * with `topology` (shard → failure domain, `--topology`), slots whose backups
 * are in other domains before ones with a backup in its own.
 * Pure; `[]` when the map is already even.
 */
export function rebalancePlan(map: ShardMap, shards: readonly string[], perMove = 64, topology: ReadonlyMap<string, string> = new Map()): SlotMove[] {
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
  const taken = new Set<number>();
  for (const id of order) {
    let need = share.get(id)! - Math.min(owned.get(id)!.length, share.get(id)!);
    while (need > 0 && taken.size < surplus.length) {
      const apart = (slot: number, strict: boolean) => !backupsOf(map, slot).some((b) => b === id || (strict && topology.get(b) !== undefined && topology.get(b) === topology.get(id)));
      let k = surplus.findIndex((e, i) => !taken.has(i) && apart(e.slot, true));
      if (k < 0) k = surplus.findIndex((e, i) => !taken.has(i) && apart(e.slot, false));
      if (k < 0) k = surplus.findIndex((_, i) => !taken.has(i));
      taken.add(k);
      const { from, slot } = surplus[k]!;
      need--;
      const last = moves[moves.length - 1];
      if (last && last.from === from && last.to === id && last.slots.length < perMove) last.slots.push(slot);
      else moves.push({ from, to: id, slots: [slot] });
    }
  }
  return moves;
}

/** A load-aware plan: the moves, and each shard's load (bytes/s) before and after them. */
export interface LoadPlan {
  moves: SlotMove[];
  before: Record<string, number>;
  after: Record<string, number>;
  /** The mean load per shard, and the margin the plan was asked to bring every shard within. */
  mean: number;
  margin: number;
}

/**
 * The moves that bring each shard's load within `margin` of the mean (the
 * most loaded at most mean × (1 + margin)), moving as few slots as it can:
 * again and again, from the most loaded shard to the least, the slot whose
 * load best evens the two (the largest that does not overshoot), until every
 * shard is within the margin or no move improves the most loaded one. A
 * shard not in `shards` gives away everything first, each slot to the least
 * loaded shard. `load` is bytes/s per slot (slots missing carry none). Pure.
 */
export function loadPlan(map: ShardMap, shards: readonly string[], load: ReadonlyMap<number, number>, margin = 0.1, perMove = 64): LoadPlan {
  const slotLoad = (s: number) => load.get(s) ?? 0;
  const owned = new Map<string, number[]>(shards.map((id) => [id, []]));
  const before: Record<string, number> = {};
  const assigned: { from: string; to: string; slot: number }[] = [];
  const total = new Map<string, number>(shards.map((id) => [id, 0]));
  const leaving: { from: string; slot: number }[] = [];
  map.owners.forEach((owner, slot) => {
    before[owner] = (before[owner] ?? 0) + slotLoad(slot);
    const mine = owned.get(owner);
    if (mine) {
      mine.push(slot);
      total.set(owner, total.get(owner)! + slotLoad(slot));
    } else leaving.push({ from: owner, slot });
  });
  for (const id of shards) before[id] ??= 0;
  const least = () => [...total].sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]))[0]![0];
  // Drained shards first: their slots, heaviest first, each to the least loaded shard.
  for (const { from, slot } of leaving.sort((a, b) => slotLoad(b.slot) - slotLoad(a.slot) || a.slot - b.slot)) {
    const to = least();
    assigned.push({ from, to, slot });
    owned.get(to)!.push(slot);
    total.set(to, total.get(to)! + slotLoad(slot));
  }
  const sum = [...total.values()].reduce((a, b) => a + b, 0);
  const mean = shards.length > 0 ? sum / shards.length : 0;
  for (let guard = 0; guard < map.slots && shards.length > 1; guard++) {
    const sorted = [...total].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const [hot, hotLoad] = sorted[0]!;
    const [cold, coldLoad] = sorted[sorted.length - 1]!;
    if (hotLoad <= mean * (1 + margin)) break;
    // The slot that best evens hot and cold: the largest not above half their gap (else the smallest that still helps).
    const gap = hotLoad - coldLoad;
    // Slots the cold shard backs up stay where they are when others can go (their primary and backup on two shards).
    const movable = owned.get(hot)!.filter((s) => slotLoad(s) > 0 && slotLoad(s) < gap);
    const apart = movable.filter((s) => !backupsOf(map, s).includes(cold));
    const candidates = apart.length > 0 ? apart : movable;
    if (candidates.length === 0) break;
    const fits = candidates.filter((s) => slotLoad(s) <= gap / 2);
    const slot = fits.length > 0 ? fits.reduce((a, b) => (slotLoad(b) > slotLoad(a) ? b : a)) : candidates.reduce((a, b) => (slotLoad(b) < slotLoad(a) ? b : a));
    owned.set(hot, owned.get(hot)!.filter((s) => s !== slot));
    owned.get(cold)!.push(slot);
    total.set(hot, hotLoad - slotLoad(slot));
    total.set(cold, coldLoad + slotLoad(slot));
    // A slot moved twice goes straight from its first owner to its last.
    const earlier = assigned.find((m) => m.slot === slot);
    if (earlier) earlier.to = cold;
    else assigned.push({ from: hot, to: cold, slot });
  }
  const moves: SlotMove[] = [];
  for (const { from, to, slot } of assigned.filter((m) => m.from !== m.to).sort((a, b) => a.from.localeCompare(b.from) || a.to.localeCompare(b.to) || a.slot - b.slot)) {
    const last = moves[moves.length - 1];
    if (last && last.from === from && last.to === to && last.slots.length < perMove) last.slots.push(slot);
    else moves.push({ from, to, slots: [slot] });
  }
  return { moves, before, after: Object.fromEntries(total), mean, margin };
}
