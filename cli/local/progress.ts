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

  update(p: { steps: number; epoch: number; epochs: number; loss: number; samplesPerSec: number; elapsedS: number }, force = false): void {
    if (!this.live) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const width = 24;
    const frac = Math.min(1, p.steps / Math.max(1, this.totalSteps));
    const filled = Math.round(frac * width);
    const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
    const line = `${bar} ${(frac * 100).toFixed(0).padStart(3)}%  step ${p.steps}/${this.totalSteps}  epoch ${Math.min(p.epoch + 1, p.epochs)}/${p.epochs}  loss ${p.loss.toFixed(4)}  ${Math.round(p.samplesPerSec).toLocaleString('en-US')} samples/s  ${p.elapsedS.toFixed(1)} s`;
    this.stream.write(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  /** Leaves the line as it is and moves to the next. */
  done(): void {
    if (this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
