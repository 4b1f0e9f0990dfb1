/**
 * What `tessera worker --json` prints on stdout, one JSON object a line, and
 * `tessera local` reads to show progress and sum up.
 */
export type WorkerEvent =
  | { event: 'ready'; id: string; backend: string; examples: number; epochs: number; blockSize: number; blocksPerEpoch: number }
  /** A block of work trained on in full (`counted`: the cluster still had it as this worker's). */
  | { event: 'block'; id: string; item: number; epoch: number; block: number; examples: number; counted: boolean }
  /** Held-out metrics after `epoch` epochs (with --eval); `final`: of the model at the end of the run. */
  | { event: 'eval'; id: string; epoch: number; metrics: Record<string, number>; final?: boolean }
  | { event: 'step'; id: string; step: number; epoch: number; loss: number; samples: number }
  | { event: 'done'; id: string; steps: number; samples: number; wallMs: number; lastLoss: number; backend: string; pushRawBytes?: number; pushWireBytes?: number };

export function parseWorkerEvent(line: string): WorkerEvent | null {
  if (!line.startsWith('{')) return null;
  try {
    const e = JSON.parse(line) as WorkerEvent;
    return typeof e.event === 'string' ? e : null;
  } catch {
    return null;
  }
}
