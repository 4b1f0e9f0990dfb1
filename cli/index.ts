#!/usr/bin/env node
import { setLogLevel, type LogLevel } from '../cluster/log.js';
import { helpText, parseArgs, UsageError } from './args.js';
import { type Command } from './command.js';
import { EXIT, handleError } from './handle-error.js';
import { checkpointCommand } from './commands/checkpoint.js';
import { exportCommand } from './commands/export.js';
import { serveCommand } from './commands/serve.js';
import { rebalanceCommand } from './commands/rebalance.js';
import { initCommand } from './commands/init.js';
import { localCommand } from './commands/local.js';
import { shardCommand } from './commands/shard.js';
import { statusCommand } from './commands/status.js';
import { workerCommand } from './commands/worker.js';

/** Registers the verbs; each lives in its own file under commands/. */
const COMMANDS: Command[] = [localCommand, initCommand, shardCommand, workerCommand, statusCommand, checkpointCommand, rebalanceCommand, exportCommand, serveCommand];

function usage(): string {
  const rows = COMMANDS.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`).join('\n');
  return `Usage: tessera <command> [options]\n\nCommands:\n${rows}\n\nRun \`tessera <command> --help\` for a command's options.\nEnvironment: TESSERA_LOG_LEVEL=debug|info|warn|error|silent (default info; logs go to stderr);
TESSERA_REDIS_URL stands for --redis.\n`;
}

export async function main(argv: string[]): Promise<number> {
  try {
    setLogLevel((process.env['TESSERA_LOG_LEVEL'] as LogLevel | undefined) ?? 'info');
    const [verb, ...rest] = argv;
    if (!verb || verb === '--help' || verb === '-h' || verb === 'help') {
      process.stdout.write(usage());
      return verb ? EXIT.ok : EXIT.usage;
    }
    const command = COMMANDS.find((c) => c.name === verb);
    if (!command) throw new UsageError(`unknown command "${verb}"; run \`tessera --help\` for the list`);
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(helpText(command.name, command.summary, command.options));
      return EXIT.ok;
    }
    return await command.run(parseArgs(command.name, command.options, rest));
  } catch (err) {
    return handleError(err);
  }
}
