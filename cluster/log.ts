/**
 * Logging: one logger per component, lines to stderr as
 * `<ISO time> <level> <component>: <message>`. `TESSERA_LOG_LEVEL` (read by
 * the CLI and passed to {@link setLogLevel}) picks the least severe level shown:
 * debug, info (default), warn, error, silent. stdout stays free for a command's
 * own output (tables, JSON).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };
let threshold = RANK.info;

export function setLogLevel(level: LogLevel): void {
  if (!(level in RANK)) throw new Error(`unknown log level "${level}"; use debug, info, warn, error or silent`);
  threshold = RANK[level];
}

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export function createLogger(component: string): Logger {
  const emit = (level: Exclude<LogLevel, 'silent'>, msg: string) => {
    if (RANK[level] < threshold) return;
    process.stderr.write(`${new Date().toISOString()} ${level} ${component}: ${msg}\n`);
  };
  return {
    debug: (m) => emit('debug', m),
    info: (m) => emit('info', m),
    warn: (m) => emit('warn', m),
    error: (m) => emit('error', m),
  };
}
