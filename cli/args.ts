/**
 * A small, strict argv parser: each verb declares its options once (name, type,
 * default, help) and gets back a typed object or a UsageError that says what
 * to type instead.
 */

export type OptionType = 'string' | 'int' | 'number' | 'boolean';

export interface OptionSpec {
  name: string;
  type: OptionType;
  description: string;
  default?: string | number | boolean;
  /** Allowed values, for strings. */
  choices?: readonly string[];
  /** Placeholder shown in help, e.g. HOST:PORT. */
  metavar?: string;
  /** Must be given. */
  required?: boolean;
  /** An option no longer taken: given, it is refused with this message (what to do instead); not shown in help. */
  retired?: string;
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export type ParsedOptions = Record<string, string | number | boolean | undefined>;

export function parseArgs(verb: string, specs: readonly OptionSpec[], argv: readonly string[]): ParsedOptions {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const out: ParsedOptions = {};
  for (const s of specs) if (s.default !== undefined) out[s.name] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument "${arg}" for \`tessera ${verb}\`; options start with --, see \`tessera ${verb} --help\``);
    const eq = arg.indexOf('=');
    const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    const spec = byName.get(name);
    if (!spec) throw new UsageError(`unknown option --${name} for \`tessera ${verb}\`; see \`tessera ${verb} --help\``);
    if (spec.retired) throw new UsageError(`--${name} is no longer taken by \`tessera ${verb}\`: ${spec.retired}`);
    let raw: string | undefined = eq >= 0 ? arg.slice(eq + 1) : undefined;
    if (spec.type === 'boolean') {
      if (raw !== undefined && raw !== 'true' && raw !== 'false') throw new UsageError(`--${name} takes no value (or =true/=false)`);
      out[name] = raw !== 'false';
      continue;
    }
    if (raw === undefined) {
      raw = argv[++i];
      if (raw === undefined) throw new UsageError(`--${name} needs a value${spec.metavar ? ` (${spec.metavar})` : ''}`);
    }
    out[name] = convert(spec, raw);
  }
  for (const s of specs) if (s.required && out[s.name] === undefined) throw new UsageError(`\`tessera ${verb}\` needs --${s.name}${s.metavar ? ` ${s.metavar}` : ''}: ${s.description}`);
  return out;
}

function convert(spec: OptionSpec, raw: string): string | number {
  switch (spec.type) {
    case 'string':
      if (spec.choices && !spec.choices.includes(raw)) throw new UsageError(`--${spec.name} must be one of ${spec.choices.join(', ')}; got "${raw}"`);
      return raw;
    case 'int': {
      const v = Number(raw);
      if (!Number.isInteger(v) || v < 0) throw new UsageError(`--${spec.name} must be a non-negative integer; got "${raw}"`);
      return v;
    }
    case 'number': {
      const v = Number(raw);
      if (!Number.isFinite(v)) throw new UsageError(`--${spec.name} must be a number; got "${raw}"`);
      return v;
    }
    default:
      return raw;
  }
}

export function helpText(verb: string, summary: string, specs: readonly OptionSpec[]): string {
  const rows = specs.filter((s) => !s.retired).map((s) => {
    const left = `--${s.name}${s.type === 'boolean' ? (s.default === true ? '[=false]' : '') : ` ${s.metavar ?? s.type.toUpperCase()}`}`;
    const extra = [s.choices ? `one of ${s.choices.join(', ')}` : '', s.default !== undefined && s.type !== 'boolean' ? `default ${s.default}` : '', s.required ? 'required' : '']
      .filter(Boolean)
      .join('; ');
    return `  ${left.padEnd(28)} ${s.description}${extra ? ` (${extra})` : ''}`;
  });
  return `Usage: tessera ${verb} [options]\n\n${summary}\n\nOptions:\n${rows.join('\n')}\n  ${'--help'.padEnd(28)} show this help\n`;
}
