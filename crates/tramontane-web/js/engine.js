// Engine: the OpenAI-shaped API over the wasm engine
// (crates/tramontane-web/src/lib.rs), on this page's WebGPU device.
import initWasm, { WasmEngine } from './wasm/tramontane_web.js';
import { TramontaneError, asError, aborted } from './errors.js';
import { resolveSource, modelHeaders, manifestKey, openCache, OPFS_HEADER, opfsFileHolds, removeOpfsFile } from './source.js';
import { checkLoadOptions, chatApi, ChunkStream, requestJson, prefillJson } from './protocol.js';
import { withSubgroups, subgroupMinSize } from './webgpu-subgroups.js';
import { installedFile } from './package-files.js';
import { imagePixels, requestImages, withoutImages } from './images.js';

let wasmReady = null;

/** Fetches and starts the engine's WebAssembly module (its exports): from `wasmUrl`, else
 * from next to this file, else (Vite 7's dev server, which pre-bundles this
 * code without the .wasm: package-files.js) from the installed package. What
 * can go wrong is a WASM_LOAD error naming the URLs tried, never a raw
 * CompileError. */
async function startWasm(wasmUrl) {
  // The literal `new URL(…, import.meta.url)` is what bundlers look for to copy the file.
  const urls = wasmUrl != null ? [String(wasmUrl)] : [String(new URL('./wasm/tramontane_web_bg.wasm', import.meta.url))];
  const installed = wasmUrl == null ? installedFile('wasm/tramontane_web_bg.wasm', import.meta.url) : null;
  if (installed && installed !== urls[0]) urls.push(installed);
  const failures = [];
  for (const url of urls) {
    const fail = (why, status) => {
      failures.push(`${url}: ${why}`);
      return new TramontaneError('WASM_LOAD',
        `the engine's WebAssembly module did not start (${failures.join('; ')}). If a bundler moved this package, exclude it from pre-bundling (Vite: optimizeDeps.exclude: ['tramontane']) or pass the .wasm's URL as the wasmUrl option (Vite: import wasmUrl from 'tramontane/wasm/tramontane_web_bg.wasm?url').`,
        { url, status });
    };
    let res, err;
    try { res = await fetch(url); } catch (e) { err = fail(`it could not be fetched (${e?.message ?? e})`, 0); }
    const type = res?.headers.get('content-type') ?? '';
    if (err) { /* next URL */ } else if (!res.ok) err = fail(`the server answered ${res.status}`, res.status);
    else if (/^text\/html/i.test(type)) err = fail(`the server answered with a web page (${type}), not the module`, res.status);
    else {
      try { return await initWasm({ module_or_path: res }); } catch (e) { err = fail(`it is not a WebAssembly module this package can run (${e?.message ?? e})`, res.status); }
    }
    if (url === urls[urls.length - 1]) throw err;
  }
}

export class Engine {
  constructor() {
    this._wasm = null;
    this._queue = Promise.resolve();
    this._info = null;
    this._adapter = null;
    this._source = null;
    this.chat = chatApi((req) => this._create(req, 'chat'));
    this.completions = { create: (req) => this._create(req, 'text') };
  }

  /** Load a model and return a ready engine. Options: `onProgress`, `signal`,
   * `useCache` (default true), `cachePartBytes` (default 32 MiB), `cacheStore` (`auto` | `opfs` | `cacheApi`), `contextLength`, `prefillChunk`,
   * `parallelDownloads` (default 4), `maxBindingSize`, `maxGpuBytes`, `kvCache`, `kernels`, `revision`, `ggufFile`, `mmproj`, `wasmUrl`,
   * `hfToken` / `headers` (for gated or private repos: sent only to the model's host),
   * `prefill` (`{messages, tools, ...}`: the opening of the conversations to come, a system
   * prompt say, run into the KV cache as the load ends; `{}`: the template's own opening). */
  static async load(source, options = {}) {
    const e = new Engine();
    await e.load(source, options);
    return e;
  }

  async _init(options) {
    if (this._wasm) return;
    if (!globalThis.navigator?.gpu) {
      throw new TramontaneError('WEBGPU_UNAVAILABLE',
        'WebGPU is not available in this browser: use a recent Chrome, Edge or Safari, or enable WebGPU (Firefox: dom.webgpu.enabled; Chromium: --enable-unsafe-webgpu).');
    }
    // A failed start is not remembered: a later load (say with a corrected
    // `wasmUrl`) tries again.
    wasmReady ??= startWasm(options.wasmUrl).catch((err) => { wasmReady = null; throw err; });
    await wasmReady;
    const wasm = new WasmEngine();
    try { this._adapter = await withSubgroups(() => wasm.init()); } catch (err) { throw asError(err); }
    this._adapter.subgroupMinSize = subgroupMinSize;
    // wgpu's adapter info is thin on the web: add what the browser says.
    try {
      const info = (await navigator.gpu.requestAdapter())?.info;
      if (info) Object.assign(this._adapter, { vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description });
      // A CPU rasterizer behind WebGPU (SwiftShader, llvmpipe): the engine picks
      // CPU-shaped kernels (WebGPU does not expose the device type to wasm).
      const desc = [info?.vendor, info?.architecture, info?.device, info?.description].join(' ').toLowerCase();
      this._adapter.cpu = /swiftshader|llvmpipe|lavapipe/.test(desc) || info?.isFallbackAdapter === true;
      if (!this._adapter.name) this._adapter.name = [info?.vendor, info?.architecture].filter(Boolean).join(' ') || info?.description || '';
    } catch { /* informative only */ }
    this._wasm = wasm;
  }

  /** (Re)load a model into this engine; the previous one is freed first. */
  load(source, options = {}) {
    return this._enqueue(async () => {
      await this._init(options);
      checkLoadOptions(options);
      const r = resolveSource(source, options);
      const headers = modelHeaders(options);
      this._info = null; // the previous model is freed as the new one loads
      if (options.signal?.aborted) throw aborted();
      const onProgress = options.onProgress ?? (() => {});
      const files = new Map();
      const report = (ev) => {
        if (ev.phase === 'download') files.set(ev.file, { loaded: ev.fileLoaded, total: ev.fileTotal });
        let loaded = 0, total = 0;
        for (const f of files.values()) { loaded += f.loaded; total += f.total; }
        try { onProgress({ ...ev, downloaded: loaded, downloadTotal: total }); } catch { /* the page's problem */ }
      };
      let info;
      try {
        const cpuAdapter = options.kernels === 'cpu' || (options.kernels !== 'gpu' && this._adapter?.cpu);
        info = await withSubgroups(async () => {
          // The device first (a new one after a loss), so that its subgroups are known.
          await this._wasm.init();
          if (this._adapter) this._adapter.subgroupMinSize = subgroupMinSize;
          return this._wasm.load({ base: r.base, gguf: r.gguf, mmproj: r.mmproj, context: options.contextLength, chunk: options.prefillChunk, parallel: options.parallelDownloads, maxBinding: options.maxBindingSize, maxGpuBytes: options.maxGpuBytes, kvCache: options.kvCache, cpuAdapter, subgroups: subgroupMinSize, useCache: options.useCache ?? true, cachePartBytes: options.cachePartBytes, cacheStore: options.cacheStore, chatTemplate: options.chatTemplate, prefill: options.prefill == null ? undefined : prefillJson(options.prefill), headers }, report, options.signal);
        });
      } catch (err) {
        throw asError(err);
      }
      if (info.network.cacheWarning) {
        // QUOTA for a full storage quota; NOT_CACHED for the other reasons a
        // model is left out of the cache (a resumed download, a failed write).
        const w = info.network.cacheWarning;
        report({ phase: 'cache', warning: w, code: /quota/i.test(w) ? 'QUOTA' : 'NOT_CACHED' });
      }
      const cache = (options.useCache ?? true) ? await openCache() : null;
      if (cache && !info.network.cacheWarning) {
        try {
          await cache.put(manifestKey(r), new Response(JSON.stringify(info.urls), { headers: { 'content-type': 'application/json' } }));
        } catch { /* quota: the model still works */ }
      }
      this._source = source;
      this._info = { ...info, source, adapter: this._adapter };
      return this;
    });
  }

  get info() { return this._info; }

  /** Bytes of wasm linear memory (it only grows: the peak so far). */
  static async wasmMemoryBytes() {
    if (!wasmReady) return 0;
    const exports = await wasmReady;
    return exports.memory.buffer.byteLength;
  }

  _enqueue(fn) {
    const run = this._queue.then(fn);
    this._queue = run.catch(() => {});
    return run;
  }

  _model() {
    if (!this._info) throw new TramontaneError('INVALID_REQUEST', 'no model is loaded');
    return this._wasm;
  }

  /** Token ids of `text`. Options: `addSpecial` (the tokenizer's BOS/EOS
   * rule, default false), `parseSpecial` (special-token texts become their
   * ids, default true). */
  tokenize(text, options = {}) {
    return this._enqueue(async () => Array.from(this._model().tokenize(String(text), options.addSpecial ?? false, options.parseSpecial ?? true)));
  }

  /** The prompt a chat request renders to: `{ text, ids }` (no generation). */
  chatPrompt(req) {
    return this._enqueue(async () => {
      try {
        const r = this._model().chatPrompt(requestJson(req));
        return { text: r.text, ids: Array.from(r.ids) };
      } catch (err) { throw asError(err); }
    });
  }
  detokenize(ids) { return this._enqueue(async () => this._model().detokenize(Uint32Array.from(ids))); }
  /** Time one image through the image side alone (`npm run bench --image`):
   * `{ width, height, resized, patches, imageTokens, decodeSeconds,
   * preprocessSeconds, encodeSeconds }`. `image` is any image an `image` part
   * takes (a URL, Blob, ImageBitmap, ImageData, <img>, canvas); the browser
   * decodes it (`decodeSeconds`). The conversation's cache is kept. */
  timeImage(image) {
    return this._enqueue(async () => {
      const wasm = this._model();
      const t = performance.now();
      const pixels = await imagePixels(image, 'image');
      const decodeSeconds = (performance.now() - t) / 1000;
      try {
        return { ...(await wasm.timeImage(pixels)), decodeSeconds };
      } catch (err) { throw asError(err); }
    });
  }
  /** Forget the conversation: the next request prefills everything. */
  resetChat() { return this._enqueue(async () => { this._model().resetChat(); }); }
  /** Free every GPU buffer of the model; `load()` may be called again. */
  unload() { return this._enqueue(async () => { this._wasm?.unload(); this._info = null; }); }

  _create(req, kind) {
    if (!req || typeof req !== 'object') throw new TramontaneError('INVALID_REQUEST', 'expected a request object');
    const stream = !!req.stream;
    const chunks = stream ? new ChunkStream() : null;
    const run = this._enqueue(() => this._run(req, kind, chunks));
    if (!stream) return run;
    run.then(() => chunks.end(), (e) => chunks.end(asError(e)));
    return chunks;
  }

  /** One request, checked, run and answered by the engine's own OpenAI
   * protocol (crates/tramontane/src/openai: the rules and shapes `tramontane
   * serve` uses); here only what JSON cannot carry is translated. */
  async _run(req, kind, chunks) {
    const wasm = this._model();
    const signal = req.signal;
    if (signal?.aborted) throw aborted();
    // Images are decoded here, by the browser (js/images.js); the engine
    // gets their pixels beside the request.
    const images = kind === 'chat' ? await requestImages(req, signal) : [];
    const json = requestJson(images.length ? withoutImages(req) : req);
    try {
      return await wasm.create(kind === 'chat', json, String(this._source), (chunk) => { chunks?.push(chunk); return true; }, signal ?? undefined, images);
    } catch (err) {
      const e = asError(err);
      if (e.code === 'DEVICE_LOST') this._info = null;
      throw e;
    }
  }
}

/** The browser cache of downloaded model files (Cache API entries; large
 * files in OPFS, named by their entry). */
Engine.cache = {
  async has(source, options = {}) {
    const cache = await openCache();
    if (!cache) return false;
    const m = await cache.match(manifestKey(resolveSource(source, options)));
    if (!m) return false;
    const urls = await m.json();
    for (const u of urls) {
      const entry = await cache.match(u);
      if (!entry || !(await opfsFileHolds(entry))) return false;
    }
    return true;
  },
  async delete(source, options = {}) {
    const cache = await openCache();
    if (!cache) return false;
    const key = manifestKey(resolveSource(source, options));
    const m = await cache.match(key);
    if (!m) return false;
    for (const u of await m.json()) {
      const file = (await cache.match(u))?.headers.get(OPFS_HEADER);
      if (file) await removeOpfsFile(file);
      await cache.delete(u);
    }
    return cache.delete(key);
  },
};
