import { type SlotRange, slotStart } from '../cluster/slots.js';

/**
 * Slot ranges that the shards' load metrics count by
 * (`tessera_shard_slot_requests_total{slot_range}`, docs/operations.md): the
 * key space cut into at most this many runs of equal width, so the label's
 * cardinality stays bounded whatever the slot count (the default 1024 slots:
 * ranges of 16). A range's series exist only on the shard serving it, so a
 * whole cluster has at most this many per metric and operation.
 */
export const MAX_SLOT_RANGES = 64;

/** Slots per counted range in a cluster of `slots` slots. */
export function slotRangeWidth(slots: number): number {
  return Math.max(1, Math.ceil(slots / MAX_SLOT_RANGES));
}

/** The label of counted range `index`: its first and last slot, "0-15" (inclusive, as `tessera status` prints ranges). */
export function slotRangeLabel(index: number, width: number, slots: number): string {
  const first = index * width;
  const last = Math.min(slots, first + width) - 1;
  return first === last ? `${first}` : `${first}-${last}`;
}

/**
 * Splits one request over the counted ranges it touches: `visit(index,
 * bytes)` once per range, in order, with that range's share of `bytes` in
 * proportion to the values of the request that lie in it. The shares are
 * whole and add up to `bytes` exactly (each is the difference of two rounded
 * cumulative shares). `ranges` must be checked (ordered, disjoint, within the
 * slots), as every request answered OK is.
 */
export function splitOverSlotRanges(ranges: readonly SlotRange[], bytes: number, elements: number, slots: number, width: number, visit: (index: number, bytes: number) => void): void {
  let total = 0;
  for (const r of ranges) total += slotStart(r.end, elements, slots) - slotStart(r.begin, elements, slots);
  let seen = 0;
  let given = 0;
  let index = -1;
  let share = 0;
  for (const r of ranges) {
    for (let b = Math.floor(r.begin / width); b * width < r.end; b++) {
      const lo = Math.max(r.begin, b * width);
      const hi = Math.min(r.end, (b + 1) * width);
      seen += slotStart(hi, elements, slots) - slotStart(lo, elements, slots);
      const upTo = total > 0 ? Math.floor(bytes * (seen / total)) : 0;
      // Two ranges of a request in one counted range count as one visit.
      if (b !== index) {
        if (index >= 0) visit(index, share);
        index = b;
        share = 0;
      }
      share += upTo - given;
      given = upTo;
    }
  }
  if (index >= 0) visit(index, share);
}
