/**
 * What every benchmark reports: named figures, each the median of repeated
 * runs, and — where it is held against a limit measured in the same run — the
 * limit's name and the ratio to it.
 */
export interface Figure {
  name: string;
  /** Median over `runs` repetitions. */
  value: number;
  unit: string;
  /** Name of the figure (or bound derived from one) this is held against. */
  limit?: string;
  /** value / limit, in the limit's own terms (see `docs/benchmarks.md`). */
  ratio?: number;
  /** Repetitions the median was taken over. */
  runs?: number;
  /** Smallest and largest of the runs. */
  min?: number;
  max?: number;
  /** Secondary numbers of the same measurement (e.g. params/s beside MB/s). */
  detail?: Record<string, number | string>;
}

export const MB = 1e6;

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A figure from per-run rates: the median, with min and max. */
export function rateFigure(name: string, unit: string, rates: readonly number[], extra: Partial<Figure> = {}): Figure {
  return { name, value: median(rates), unit, runs: rates.length, min: Math.min(...rates), max: Math.max(...rates), ...extra };
}

/** Rounds to `digits` significant digits for printing and JSON. */
export function sig(v: number, digits = 4): number {
  if (!Number.isFinite(v) || v === 0) return v;
  return Number(v.toPrecision(digits));
}

export function roundFigure(f: Figure): Figure {
  const out: Figure = { ...f, value: sig(f.value) };
  if (f.ratio !== undefined) out.ratio = sig(f.ratio, 3);
  if (f.min !== undefined) out.min = sig(f.min);
  if (f.max !== undefined) out.max = sig(f.max);
  if (f.detail) out.detail = Object.fromEntries(Object.entries(f.detail).map(([k, v]) => [k, typeof v === 'number' ? sig(v) : v]));
  return out;
}

/** The human table: one row per figure. */
export function formatTable(figures: readonly Figure[]): string {
  const rows = figures.map((f) => [
    f.name,
    formatValue(f.value),
    f.unit,
    f.min !== undefined && f.max !== undefined ? `${formatValue(f.min)}–${formatValue(f.max)}` : '',
    f.limit ?? '',
    f.ratio !== undefined ? `${(f.ratio * 100).toFixed(1)} %` : '',
    f.detail ? Object.entries(f.detail).map(([k, v]) => `${k} ${typeof v === 'number' ? formatValue(v) : v}`).join(', ') : '',
  ]);
  const head = ['figure', 'median', 'unit', 'range', 'limit', 'ratio', 'detail'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 1 || i === 5 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n') + '\n';
}

function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  return a >= 100 ? v.toFixed(0) : v.toFixed(a >= 1 ? 2 : 3);
}
