/**
 * `host:port` → its parts; an IPv6 host may be bracketed (`[::1]:7001`), and
 * comes back without the brackets.
 */
export function splitHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(address.slice(i + 1)) };
}

/** Whether `host` (unbracketed) is a wildcard: every interface. */
export function isWildcardHost(host: string): boolean {
  return host === '' || host === '0.0.0.0' || host === '::';
}
