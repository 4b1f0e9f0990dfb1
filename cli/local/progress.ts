/** Where a run stands, as the progress line shows it. */
export interface Progress {
  steps: number;
  epoch: number;
  epochs: number;
  loss: number;
  samplesPerSec: number;
  elapsedS: number;
}

/**
 * The progress line's text: a bar, the share of steps done, step, epoch,
 * loss, throughput, time so far and, once 2 % is done, the time left at the
 * pace so far (ETA).
 */
export function progressText(p: Progress, totalSteps: number): string {
  const width = 24;
  const frac = Math.min(1, p.steps / Math.max(1, totalSteps));
  const filled = Math.round(frac * width);
  const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
  const eta = frac >= 0.02 && frac < 1 ? `  ETA ${formatSeconds((p.elapsedS * (1 - frac)) / frac)}` : '';
  return `${bar} ${(frac * 100).toFixed(0).padStart(3)}%  step ${p.steps}/${totalSteps}  epoch ${Math.min(p.epoch + 1, p.epochs)}/${p.epochs}  loss ${p.loss.toFixed(4)}  ${Math.round(p.samplesPerSec).toLocaleString('en-US')} samples/s  ${p.elapsedS.toFixed(1)} s${eta}`;
}

/** 42 s, 3 min 05 s, 1 h 02 min. */
function formatSeconds(s: number): string {
  const t = Math.round(s);
  if (t < 60) return `${t} s`;
  if (t < 3600) return `${Math.floor(t / 60)} min ${String(t % 60).padStart(2, '0')} s`;
  return `${Math.floor(t / 3600)} h ${String(Math.floor((t % 3600) / 60)).padStart(2, '0')} min`;
}

/**
 * The live progress line of `tessera local` on a terminal: a bar, step, epoch,
 * loss and throughput, redrawn in place on stderr at most 10 times a second.
 * Off a terminal it prints nothing until the summary.
 */
export class ProgressLine {
  private lastDraw = 0;
  private drawn = false;

  /** Steps expected in all; may grow as workers report their share. */
  totalSteps = 0;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  get live(): boolean {
    return Boolean(this.stream.isTTY);
  }

  update(p: Progress, force = false): void {
    if (!this.live) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    this.stream.write(`\r\x1b[2K${progressText(p, this.totalSteps)}`);
    this.drawn = true;
  }

  /** Leaves the line as it is and moves to the next. */
  done(): void {
    if (this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
