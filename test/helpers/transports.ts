/** The two ways the typed client moves dense values (ClientOptions.transport). */
export const TRANSPORTS = ['bulk', 'grpc'] as const;
export type Transport = (typeof TRANSPORTS)[number];

/** Defines the suite `fn` once per transport, as `${title} over ${transport}`. */
export function forEachTransport(title: string, fn: (this: Mocha.Suite, transport: Transport) => void): void {
  for (const transport of TRANSPORTS) {
    describe(`${title} over ${transport}`, function () {
      fn.call(this, transport);
    });
  }
}
