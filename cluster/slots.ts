/**
 * The key space: a fixed number of slots S. The dense tensors, flattened and
 * concatenated in declared order, form one vector of length D; slot s holds the
 * elements [⌊s·D/S⌋, ⌊(s+1)·D/S⌋), so a run of slots is a contiguous slice.
 */

/** Slots in a cluster unless `tessera init --slots` says otherwise. */
export const DEFAULT_SLOTS = 1024;

/** Slots [begin, end). */
export interface SlotRange {
  begin: number;
  end: number;
}

/** First element of slot `s` (also the end of slot s-1). */
export function slotStart(s: number, elements: number, slots: number): number {
  // Exact for D·S < 2^53, which holds for any model that fits in memory.
  return Math.floor((s * elements) / slots);
}

/** Elements [start, end) held by slot `s`. */
export function slotElements(s: number, elements: number, slots: number): { start: number; end: number } {
  return { start: slotStart(s, elements, slots), end: slotStart(s + 1, elements, slots) };
}

/** Elements [start, end) held by a run of slots. */
export function rangeElements(r: SlotRange, elements: number, slots: number): { start: number; end: number } {
  return { start: slotStart(r.begin, elements, slots), end: slotStart(r.end, elements, slots) };
}

/** Number of elements in a list of slot ranges. */
export function rangesLength(ranges: readonly SlotRange[], elements: number, slots: number): number {
  let n = 0;
  for (const r of ranges) n += slotStart(r.end, elements, slots) - slotStart(r.begin, elements, slots);
  return n;
}

/** Sorts ranges and merges the ones that touch: [0,3),[3,5) → [0,5). */
export function normalizeRanges(ranges: readonly SlotRange[]): SlotRange[] {
  const sorted = ranges.filter((r) => r.end > r.begin).map((r) => ({ ...r })).sort((a, b) => a.begin - b.begin);
  const out: SlotRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.begin <= last.end) last.end = Math.max(last.end, r.end);
    else out.push(r);
  }
  return out;
}

/** The runs of consecutive slots among `slots` (any order, repeats allowed), sorted: [5, 0, 1, 2] → [0,3),[5,6). */
export function rangesOf(slots: Iterable<number>): SlotRange[] {
  return normalizeRanges([...slots].map((s) => ({ begin: s, end: s + 1 })));
}

/** Checks ranges are within [0, slots), non-empty, ordered and disjoint; returns a reason or null. */
export function checkRanges(ranges: readonly SlotRange[], slots: number): string | null {
  if (ranges.length === 0) return 'no slot ranges given';
  let prevEnd = 0;
  for (const r of ranges) {
    // Ranges from JSON (the bulk port's headers) may hold anything.
    if (typeof r !== 'object' || r === null) return `a slot range must be {begin, end}, got ${JSON.stringify(r)?.slice(0, 40)}`;
    if (!Number.isInteger(r.begin) || !Number.isInteger(r.end)) return `slot range [${r.begin}, ${r.end}) is not integral`;
    if (r.begin < 0) return `slot range [${r.begin}, ${r.end}) starts below slot 0`;
    if (r.begin >= r.end) return `slot range [${r.begin}, ${r.end}) is empty`;
    if (r.end > slots) return `slot range [${r.begin}, ${r.end}) exceeds the ${slots} slots of this cluster`;
    if (r.begin < prevEnd) return `slot ranges overlap or are out of order at [${r.begin}, ${r.end})`;
    prevEnd = r.end;
  }
  return null;
}

/** Formats ranges for people: "0-511,768-1023". */
export function formatRanges(ranges: readonly SlotRange[]): string {
  return ranges.map((r) => (r.end - r.begin === 1 ? `${r.begin}` : `${r.begin}-${r.end - 1}`)).join(',');
}
