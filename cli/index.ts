#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setLogLevel, type LogLevel } from '../cluster/log.js';
import { helpText, parseArgs, UsageError } from './args.js';
import { type Command } from './command.js';
import { EXIT, handleError } from './handle-error.js';
import { certsInitCommand, certsIssueCommand } from './commands/certs.js';
import { checkpointCommand } from './commands/checkpoint.js';
import { evalCommand } from './commands/eval.js';
import { resetSlotsCommand } from './commands/reset-slots.js';
import { exportCommand } from './commands/export.js';
import { serveCommand } from './commands/serve.js';
import { rebalanceCommand } from './commands/rebalance.js';
import { initCommand } from './commands/init.js';
import { localCommand } from './commands/local.js';
import { shardCommand } from './commands/shard.js';
import { statusCommand } from './commands/status.js';
import { dashboardCommand } from './commands/dashboard.js';
import { workerCommand } from './commands/worker.js';
import { stopWithParent } from './parent-watch.js';

/** Registers the verbs; each lives in its own file under commands/. */
const COMMANDS: Command[] = [localCommand, initCommand, shardCommand, workerCommand, statusCommand, dashboardCommand, evalCommand, checkpointCommand, resetSlotsCommand, rebalanceCommand, exportCommand, serveCommand, certsInitCommand, certsIssueCommand];

function usage(): string {
  const rows = COMMANDS.map((c) => `  ${c.name.padEnd(12)} ${c.summary}`).join('\n');
  return `Usage: tessera <command> [options]\n\nCommands:\n${rows}\n\nRun \`tessera <command> --help\` for a command's options; \`tessera --version\` for the version.\nEnvironment: TESSERA_LOG_LEVEL=debug|info|warn|error|silent (default info; logs go to stderr);
TESSERA_REDIS_URL stands for --redis; TESSERA_TLS_DIR for --tls-dir.\n`;
}

export async function main(argv: string[]): Promise<number> {
  try {
    setLogLevel((process.env['TESSERA_LOG_LEVEL'] as LogLevel | undefined) ?? 'info');
    const [verb, ...rest] = argv;
    if (!verb || verb === '--help' || verb === '-h' || verb === 'help') {
      process.stdout.write(usage());
      return verb ? EXIT.ok : EXIT.usage;
    }
    if (verb === '--version' || verb === '-V' || verb === 'version') {
      process.stdout.write(`tessera ${version()}\n`);
      return EXIT.ok;
    }
    const command = findCommand(verb, rest);
    stopWithParent();
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(helpText(command.name, command.summary, command.options));
      return EXIT.ok;
    }
    return await command.run(parseArgs(command.name, command.options, rest));
  } catch (err) {
    return handleError(err);
  }
}

/**
 * The command `verb` names, or for a two-word verb (`certs init`) the one
 * `verb` and the next word name, that word then taken off `rest`.
 * @throws UsageError for an unknown verb, or a group named without one of its subcommands.
 */
function findCommand(verb: string, rest: string[]): Command {
  const command = COMMANDS.find((c) => c.name === verb);
  if (command) return command;
  const sub = COMMANDS.find((c) => c.name === `${verb} ${rest[0]}`);
  if (sub) {
    rest.shift();
    return sub;
  }
  const group = COMMANDS.filter((c) => c.name.startsWith(`${verb} `)).map((c) => c.name.slice(verb.length + 1));
  if (group.length === 0) throw new UsageError(`unknown command "${verb}"; run \`tessera --help\` for the list`);
  const said = rest[0] === undefined || rest[0].startsWith('-') ? 'needs a subcommand' : `has no subcommand "${rest[0]}"`;
  throw new UsageError(`\`tessera ${verb}\` ${said}: ${group.map((g) => `\`tessera ${verb} ${g}\``).join(' or ')}; add --help to one for its options`);
}

/** This package's version, from its package.json (two folders above this file, compiled or not). */
function version(): string {
  const file = fileURLToPath(new URL('../../package.json', import.meta.url));
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
