// Errors: every failure the package reports is a TramontaneError with a stable code.

/** An Error with a stable `code`: WEBGPU_UNAVAILABLE, MODEL_FORMAT, UNSUPPORTED,
 * NETWORK (with `url` and `status`), WASM_LOAD (the engine's .wasm did not start;
 * `url` and `status`), ABORTED, CONTEXT_OVERFLOW, DEVICE_LOST,
 * OUT_OF_MEMORY, QUOTA, INVALID_REQUEST, INTERNAL. */
export class TramontaneError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'TramontaneError';
    this.code = code;
    Object.assign(this, extra);
  }
}

export function asError(e) {
  if (e instanceof TramontaneError) return e;
  if (e && typeof e === 'object' && typeof e.code === 'string') {
    return new TramontaneError(e.code, e.message, { url: e.url, status: e.status, ...(e.param ? { param: e.param } : {}) });
  }
  if (e && e.name === 'AbortError') return new TramontaneError('ABORTED', 'aborted');
  // A trap in the wasm module (it should never happen): say so plainly.
  const msg = e instanceof WebAssembly.RuntimeError ? `internal error in the engine (${e.message})` : String(e?.message ?? e);
  return new TramontaneError('INTERNAL', msg);
}

export function aborted() {
  return new TramontaneError('ABORTED', 'the request was aborted');
}
