/**
 * When `tessera` runs under a wrapper that does not pass signals on — npm's
 * `npx tessera …` and `npm start` — stopping the wrapper (`kill $!` on
 * `npx tessera shard … &`) left this process running, orphaned. Under such a
 * wrapper (npm sets `npm_execpath` for what it runs), this process watches its
 * parent and, once the parent is gone, stops itself as SIGTERM would: the
 * verb's own clean shutdown runs (a shard answers what it has, writes its
 * last checkpoint, drops its lease).
 */

/** How often the parent is looked at. */
const WATCH_EVERY_MS = 500;

/** Starts watching when run under npm (or when `force`); returns a function that stops watching. */
export function stopWithParent(force = false): () => void {
  if (!force && !process.env['npm_execpath']) return () => undefined;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent && alive(parent)) return;
    clearInterval(timer);
    process.kill(process.pid, 'SIGTERM');
  }, WATCH_EVERY_MS);
  timer.unref();
  return () => clearInterval(timer);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
