// createEngine: a local engine when the device can run the model, else a server.
import { TramontaneError, asError } from './errors.js';
import { Engine } from './engine.js';
import { WorkerEngine } from './worker-engine.js';
import { RemoteEngine } from './remote-engine.js';

/** The reason a failed local load sends the choice to the server. */
const DOES_NOT_FIT = new Set(['WEBGPU_UNAVAILABLE', 'UNSUPPORTED', 'OUT_OF_MEMORY']);

/** A local engine when this device can run the model, else the server in
 * `options.remote` (a base URL, or `{ baseUrl, apiKey, model, headers, fetch }`).
 * The rule, decided without downloading anything first: no `navigator.gpu` or
 * no adapter → remote; else the model is loaded locally (with `maxGpuBytes` set
 * to `localMaxGpuBytes` when given, which the engine checks before any weight
 * is downloaded; a failing adapter self-test stops the download where it is)
 * and a load failing with WEBGPU_UNAVAILABLE, UNSUPPORTED or
 * OUT_OF_MEMORY → remote. Without `remote`, local or its error. `useWorker`:
 * the local engine is a WorkerEngine. The engine returned has `kind` ('local' |
 * 'remote') and `reason` (a sentence saying why). */
export async function createEngine(source, options = {}) {
  const { remote, localMaxGpuBytes, useWorker, ...loadOptions } = options ?? {};
  const r = remote == null ? null : typeof remote === 'string' || remote instanceof URL ? { baseUrl: remote } : remote;
  if (r && typeof r !== 'object') throw new TramontaneError('INVALID_REQUEST', 'remote must be a base URL or { baseUrl, apiKey, model, headers }');
  if (localMaxGpuBytes != null && !(Number.isSafeInteger(localMaxGpuBytes) && localMaxGpuBytes >= 1)) {
    throw new TramontaneError('INVALID_REQUEST', `localMaxGpuBytes must be an integer from 1 to ${Number.MAX_SAFE_INTEGER}`);
  }
  const useRemote = async (why, localError = null) => {
    let e;
    try {
      e = await RemoteEngine.connect(r.baseUrl, { ...r, signal: r.signal ?? loadOptions.signal });
    } catch (err) {
      if (localError) err.localError = localError;
      throw err;
    }
    e.reason = `${why}: using the server at ${e.baseUrl} (model ${e.model})`;
    return e;
  };
  if (r && (source == null || source === '')) return useRemote('no local model given');
  let adapterName = '';
  if (r) {
    if (!globalThis.navigator?.gpu) return useRemote('WebGPU unavailable in this browser');
    let adapter = null;
    try { adapter = await navigator.gpu.requestAdapter(); } catch { /* none */ }
    if (!adapter) return useRemote('WebGPU unavailable (no GPU adapter found)');
    const i = adapter.info ?? {};
    adapterName = i.description || [i.vendor, i.architecture].filter(Boolean).join(' ');
  }
  const opts = localMaxGpuBytes != null ? { ...loadOptions, maxGpuBytes: localMaxGpuBytes } : loadOptions;
  let e;
  try {
    e = useWorker ? await WorkerEngine.load(source, opts) : await Engine.load(source, opts);
  } catch (err) {
    const x = asError(err);
    if (!r || !DOES_NOT_FIT.has(x.code)) throw x;
    return useRemote(`the model does not fit this device (${x.code}: ${x.message})`, x);
  }
  const mb = (b) => `${(b / 1e6).toFixed(0)} MB`;
  const gpu = e.info?.gpuBytes ? `${mb(e.info.gpuBytes)} of GPU memory` : 'GPU memory';
  e.kind = 'local';
  e.reason = r
    ? `the model fits this device (${gpu}${localMaxGpuBytes != null ? ` within the ${mb(localMaxGpuBytes)} allowed` : ''}${adapterName ? `, ${adapterName}` : ''}): running it here`
    : `running on this device (${gpu}; no server given)`;
  return e;
}
