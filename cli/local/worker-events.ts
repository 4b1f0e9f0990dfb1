/**
 * What `tessera worker --json` prints on stdout, one JSON object a line, and
 * `tessera local` reads to show progress and sum up.
 */
export type WorkerEvent =
  | { event: 'ready'; id: string; backend: string; examples: number }
  | { event: 'step'; id: string; step: number; epoch: number; loss: number; samples: number }
  | { event: 'done'; id: string; steps: number; samples: number; wallMs: number; lastLoss: number; backend: string };

export function parseWorkerEvent(line: string): WorkerEvent | null {
  if (!line.startsWith('{')) return null;
  try {
    const e = JSON.parse(line) as WorkerEvent;
    return typeof e.event === 'string' ? e : null;
  } catch {
    return null;
  }
}
