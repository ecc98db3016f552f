// WorkerEngine: Engine's API with the engine in a Web Worker (worker.js).
import { TramontaneError, aborted } from './errors.js';
import { modelHeaders } from './source.js';
import { chatApi, ChunkStream } from './protocol.js';
import { installedFile } from './package-files.js';
import { transferable } from './images.js';

/** The same API with the engine in a Web Worker, so the page stays responsive. */
export class WorkerEngine {
  constructor(worker) {
    this._worker = worker;
    this._calls = new Map();
    this._info = null;
    this._next = 0;
    this._heard = false;
    worker.onmessage = (ev) => { this._heard = true; this._onMessage(ev.data); };
    worker.onerror = (ev) => {
      // An error before the worker ever answered: its script did not start.
      const err = this._heard
        ? new TramontaneError('INTERNAL', `worker error: ${ev.message ?? ev}`)
        : new TramontaneError('WASM_LOAD', `the engine's worker (worker.js${worker.url ? ` at ${worker.url}` : ''}) did not start${ev.message ? `: ${ev.message}` : ''}. If a bundler moved this package, exclude it from pre-bundling (Vite: optimizeDeps.exclude: ['tramontane']) or pass your own Worker as the worker option.`, { url: worker.url });
      for (const c of this._calls.values()) c.reject(err);
      this._calls.clear();
    };
    this.chat = chatApi((req) => this._create('chat', req));
    this.completions = { create: (req) => this._create('text', req) };
  }

  static async load(source, options = {}) {
    if (options.worker) return new WorkerEngine(options.worker).load(source, options);
    // The literal `new Worker(new URL(…, import.meta.url))` is what bundlers look
    // for to copy worker.js; Vite 7's dev server does not (package-files.js),
    // and there the installed package's worker.js is tried next.
    const spawn = [() => new Worker(new URL('./worker.js', import.meta.url), { type: 'module' })];
    const installed = installedFile('worker.js', import.meta.url);
    if (installed) spawn.push(() => Object.assign(new Worker(installed, { type: 'module' }), { url: installed }));
    for (let i = 0; ; i++) {
      const worker = spawn[i]();
      const e = new WorkerEngine(worker);
      try {
        return await e.load(source, options);
      } catch (err) {
        worker.terminate(); // ours: do not leave it running
        if (!(err.code === 'WASM_LOAD' && !e._heard && i + 1 < spawn.length)) throw err;
      }
    }
  }

  _onMessage(m) {
    const c = this._calls.get(m.id);
    if (!c) return;
    if (m.progress) { c.onProgress?.(m.progress); return; }
    if (m.chunk) { c.chunks?.push(m.chunk); return; }
    this._calls.delete(m.id);
    if (m.error) {
      const err = new TramontaneError(m.error.code ?? 'INTERNAL', m.error.message, { url: m.error.url, status: m.error.status, ...(m.error.param ? { param: m.error.param } : {}) });
      if (err.code === 'DEVICE_LOST') this._info = null; // as Engine: load() again
      c.chunks?.end(err);
      c.reject(err);
    } else {
      c.chunks?.end();
      c.resolve(m.result);
    }
  }

  _call(method, args, extra = {}) {
    // An already-aborted request never reaches the worker (an abort message
    // sent first would name an id the worker does not know yet).
    if (extra.signal?.aborted) {
      const err = aborted();
      extra.chunks?.end(err);
      return Promise.reject(err);
    }
    const id = this._next++;
    const p = new Promise((resolve, reject) => this._calls.set(id, { resolve, reject, ...extra }));
    const signal = extra.signal;
    if (signal) {
      if (signal.aborted) this._worker.postMessage({ abort: id });
      else signal.addEventListener('abort', () => this._worker.postMessage({ abort: id }), { once: true });
    }
    try {
      this._worker.postMessage({ id, method, args });
    } catch (e) {
      // Something in the request cannot be posted (structured clone).
      this._calls.delete(id);
      const err = new TramontaneError('INVALID_REQUEST', `the request cannot be sent to the worker (${e?.message ?? e})`);
      extra.chunks?.end(err);
      return Promise.reject(err);
    }
    return p;
  }

  async load(source, options = {}) {
    const { onProgress, signal, worker, ...rest } = options;
    // A Headers object cannot be posted to the worker: send a plain one.
    if (rest.headers != null) rest.headers = modelHeaders({ headers: rest.headers });
    // Relative to the page, as for Engine (the worker would resolve it against worker.js).
    if (rest.wasmUrl != null && globalThis.location) rest.wasmUrl = String(new URL(rest.wasmUrl, location.href));
    this._info = null; // the previous model is freed as the new one loads
    this._info = await this._call('load', [source, rest], { onProgress, signal });
    return this;
  }

  get info() { return this._info; }

  _create(kind, req) {
    const { signal, ...rest } = req;
    // Image elements cannot be posted to a worker: they go as ImageBitmaps.
    const posted = transferable(rest);
    if (!rest.stream) return posted.then((r) => this._call(kind, [r], { signal }));
    const chunks = new ChunkStream();
    posted.then((r) => this._call(kind, [r], { signal, chunks }), (e) => chunks.end(e)).catch((e) => chunks.end(e));
    return chunks;
  }

  tokenize(text, options = {}) { return this._call('tokenize', [text, options]); }
  chatPrompt(req) { return this._call('chatPrompt', [req]); }
  detokenize(ids) { return this._call('detokenize', [Array.from(ids)]); }
  resetChat() { return this._call('resetChat', []); }
  async unload() { await this._call('unload', []); this._info = null; }
  terminate() { this._worker.terminate(); }
}
