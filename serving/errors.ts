import { status } from '@grpc/grpc-js';
import { TesseraError, registerError } from '../cluster/errors.js';

/**
 * Errors of exporting and serving models. Each carries the gRPC status it
 * becomes at the serving edge (the HTTP edge maps the same codes to 400, 404,
 * 413, 503) and a message that says what was expected.
 */

/** The files of a model version cannot be loaded: missing, damaged, of another format, or not what its manifest says. */
export class ModelLoadError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'model-load';
}

/** A manifest's digests or signature do not check out (`tessera export --verify`, `tessera serve --public-key`). */
export class VerificationError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'verification';
}

/** No model, or no version, of the name asked for is being served. */
export class ModelNotFoundError extends TesseraError {
  readonly code = status.NOT_FOUND;
  readonly reason = 'model-not-found';
}

/** The model's graph cannot be written in the format asked for, or the model declares no inference graph. */
export class ExportError extends TesseraError {
  readonly code = status.FAILED_PRECONDITION;
  readonly reason = 'export';
}

registerError('model-load', { decode: (d) => new ModelLoadError(d), recovery: 'fail' });
registerError('verification', { decode: (d) => new VerificationError(d), recovery: 'fail' });
registerError('model-not-found', { decode: (d) => new ModelNotFoundError(d), recovery: 'fail' });
registerError('export', { decode: (d) => new ExportError(d), recovery: 'fail' });
