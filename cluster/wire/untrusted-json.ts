/**
 * JSON.parse for text a caller sent (bulk headers, membership documents, a
 * move's payload). It drops properties named `toString` and `valueOf`: an
 * object whose `toString` is not a function cannot be converted to text or a
 * key (`${v}`, String(v), a lookup, a comparison all throw "Cannot convert
 * object to primitive value"), and checks and error messages convert what a
 * caller sent — a TypeError there was answered INTERNAL (found by the fuzz
 * test). No Tessera document has a field of either name.
 */
export function parseUntrustedJson(text: string): unknown {
  return JSON.parse(text, (key, value: unknown) => (key === 'toString' || key === 'valueOf' ? undefined : value));
}
