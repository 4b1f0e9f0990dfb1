import { expect } from 'chai';
import { type TesseraError } from '../../cluster/errors.js';

/** `f()` throws an InvalidArgumentError whose message matches `message`. */
export function expectInvalid(f: () => unknown, message: RegExp): void {
  let err: Error | null = null;
  try {
    f();
  } catch (e) {
    err = e as Error;
  }
  expect(err, `expected an error matching ${message}`).to.be.instanceOf(Error);
  expect(err!.name).to.equal('InvalidArgumentError');
  expect(err!.message).to.match(message);
}

/** `p` rejects with an InvalidArgumentError whose message matches `message`. */
export async function expectRejection(p: Promise<unknown>, message: RegExp): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e as Error,
  );
  expect(err, `expected a rejection matching ${message}`).to.be.instanceOf(Error);
  expect(err!.name).to.equal('InvalidArgumentError');
  expect(err!.message).to.match(message);
}

/** The error `p` rejects with; fails the test if it resolves. */
export async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

/** The typed error `f()` throws; fails the test if it returns. */
export function thrown(f: () => unknown): TesseraError {
  try {
    f();
  } catch (err) {
    return err as TesseraError;
  }
  return expect.fail('expected an error');
}
