import { InvalidArgumentError } from '../../cluster/errors.js';
import { type RoutedRange } from '../../cluster/routing.js';
import { copyBytes } from '../../cluster/wire/dense-values.js';

/**
 * Where a reply's bytes go: a reply holds the values of a batch's ranges one
 * after the other; each range's values belong at its own `offset` of the
 * caller's vector. The returned function copies the bytes found at `offset`
 * of the reply into place (pieces may span ranges).
 */
export function scatterer(ranges: readonly RoutedRange[], out: Float32Array): (offset: number, bytes: Uint8Array) => void {
  const target = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  const starts: number[] = [];
  let acc = 0;
  for (const r of ranges) {
    starts.push(acc);
    acc += r.length * 4;
  }
  return (offset, bytes) => {
    let i = 0;
    while (i + 1 < ranges.length && starts[i + 1]! <= offset) i++;
    let src = 0;
    while (src < bytes.length) {
      const r = ranges[i];
      const within = offset + src - (starts[i] ?? 0);
      const take = r ? Math.min(bytes.length - src, r.length * 4 - within) : 0;
      if (take <= 0) throw new InvalidArgumentError(`reply at byte ${offset} overruns the requested slots`);
      const at = r!.offset * 4 + within;
      copyBytes(bytes.subarray(src, src + take), target.subarray(at, at + take));
      src += take;
      i++;
    }
  };
}
