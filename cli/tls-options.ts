import { PLAINTEXT, type TransportSecurity, mutualTls, setProcessSecurity } from '../cluster/tls/transport-security.js';
import { type OptionSpec, type ParsedOptions } from './args.js';

/**
 * How a verb that joins a cluster secures its connections: `--tls-dir DIR`
 * (or TESSERA_TLS_DIR) holding `ca.crt`, `tls.crt` and `tls.key` — mutual TLS
 * for every listener and every connection of the process — else plaintext.
 * docs/security.md.
 */
export const TLS_OPTIONS: readonly OptionSpec[] = [
  { name: 'tls-dir', type: 'string', metavar: 'DIR', description: 'mutual TLS: DIR holds ca.crt, tls.crt and tls.key (from `tessera certs issue`; reloaded when they change). Or set TESSERA_TLS_DIR' },
];

/**
 * Sets the process's transport security from the options, once, before
 * anything connects; returns it.
 * @throws InvalidArgumentError naming the file of the directory that is missing or wrong.
 */
export function applyTlsOptions(o: ParsedOptions): TransportSecurity {
  const dir = (o['tls-dir'] as string | undefined) ?? process.env['TESSERA_TLS_DIR'] ?? undefined;
  const security = dir ? mutualTls(dir) : PLAINTEXT;
  setProcessSecurity(security);
  return security;
}
