// tramontane: Mistral-family language models in the browser on WebGPU.
// The OpenAI-shaped API over the wasm engine (crates/tramontane-web/src/lib.rs).
import initWasm, { WasmEngine } from './wasm/tramontane_web.js';

const HF = 'https://huggingface.co';
const CACHE_NAME = 'tramontane-v1';
let wasmReady = null;

/** An Error with a stable `code`: WEBGPU_UNAVAILABLE, MODEL_FORMAT, UNSUPPORTED,
 * NETWORK (with `url` and `status`), ABORTED, CONTEXT_OVERFLOW, DEVICE_LOST,
 * OUT_OF_MEMORY, QUOTA, INVALID_REQUEST, INTERNAL. */
export class TramontaneError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'TramontaneError';
    this.code = code;
    Object.assign(this, extra);
  }
}

function asError(e) {
  if (e instanceof TramontaneError) return e;
  if (e && typeof e === 'object' && typeof e.code === 'string') {
    return new TramontaneError(e.code, e.message, { url: e.url, status: e.status, ...(e.param ? { param: e.param } : {}) });
  }
  if (e && e.name === 'AbortError') return new TramontaneError('ABORTED', 'aborted');
  // A trap in the wasm module (it should never happen): say so plainly.
  const msg = e instanceof WebAssembly.RuntimeError ? `internal error in the engine (${e.message})` : String(e?.message ?? e);
  return new TramontaneError('INTERNAL', msg);
}

/** Fetches and starts the engine's WebAssembly module: from `wasmUrl`, else
 * from next to this file. What can go wrong is a NETWORK error naming the URL,
 * never a raw CompileError: the commonest cause is a bundler that copied
 * index.js somewhere else without the .wasm (Vite's dev server pre-bundles
 * dependencies into node_modules/.vite/deps/), whose server then answers the
 * .wasm URL with the app's HTML page. */
async function startWasm(wasmUrl) {
  const url = String(wasmUrl ?? new URL('./wasm/tramontane_web_bg.wasm', import.meta.url));
  const fail = (why, status) => new TramontaneError('NETWORK',
    `the engine's WebAssembly module at ${url}: ${why}. If a bundler moved this package, exclude it from pre-bundling (Vite: optimizeDeps.exclude: ['tramontane']) or pass the .wasm's URL as the wasmUrl option (Vite: import wasmUrl from 'tramontane/wasm/tramontane_web_bg.wasm?url').`,
    { url, status });
  let res;
  try { res = await fetch(url); } catch (e) { throw fail(`it could not be fetched (${e?.message ?? e})`, 0); }
  if (!res.ok) throw fail(`the server answered ${res.status}`, res.status);
  const type = res.headers.get('content-type') ?? '';
  if (/^text\/html/i.test(type)) throw fail(`the server answered with a web page (${type}), not the module`, res.status);
  try { await initWasm({ module_or_path: res }); } catch (e) { throw fail(`it is not a WebAssembly module this package can run (${e?.message ?? e})`, res.status); }
}

function aborted() {
  return new TramontaneError('ABORTED', 'the request was aborted');
}

/** Where a model's files are: `{ base, gguf }`. `source` is a model folder URL,
 * a `.gguf` URL (the first part of a split model), or a Hugging Face repo id
 * `org/name` (`options.revision`, `options.ggufFile` pick what to load). */
export function resolveSource(source, options = {}) {
  if (typeof source !== 'string' || source.length === 0) {
    throw new TramontaneError('INVALID_REQUEST', 'source must be a URL or a Hugging Face repo id');
  }
  if (/^[\w.-]+\/[\w.-]+$/.test(source) && !source.startsWith('.')) {
    const base = `${options.hfEndpoint ?? HF}/${source}/resolve/${encodeURIComponent(options.revision ?? 'main')}/`;
    return { base, gguf: options.ggufFile ?? null };
  }
  const url = new URL(source, globalThis.location?.href);
  url.hash = '';
  const path = url.pathname;
  if (path.toLowerCase().endsWith('.gguf')) {
    const cut = url.href.lastIndexOf('/') + 1;
    return { base: url.href.slice(0, cut), gguf: decodeURIComponent(url.href.slice(cut).split('?')[0]) };
  }
  return { base: url.href.endsWith('/') ? url.href : url.href + '/', gguf: null };
}

/** The headers for the model's host, as a plain object: `options.headers` (an
 * object, a Headers or [name, value] pairs) and `options.hfToken` as
 * `Authorization: Bearer <token>`. The engine sends them only to the origin of
 * the model's URL, never caches them and never puts them in an error. */
export function modelHeaders(options = {}) {
  const out = {};
  const h = options.headers;
  if (h != null) {
    if (typeof h !== 'object') throw new TramontaneError('INVALID_REQUEST', 'headers must be an object, a Headers or [name, value] pairs');
    // Headers and Maps iterate as [name, value]; a plain object does not iterate.
    const entries = Array.isArray(h) || typeof h[Symbol.iterator] === 'function' ? [...h] : Object.entries(h);
    for (const e of entries) {
      if (!Array.isArray(e) || e.length !== 2) throw new TramontaneError('INVALID_REQUEST', 'headers must be [name, value] pairs');
      out[String(e[0])] = String(e[1]);
    }
  }
  const token = options.hfToken;
  if (token != null && token !== '') {
    // The message does not echo the value.
    if (typeof token !== 'string') throw new TramontaneError('INVALID_REQUEST', 'hfToken must be a string');
    for (const k of Object.keys(out)) if (k.toLowerCase() === 'authorization') delete out[k];
    out.Authorization = `Bearer ${token.trim()}`;
  }
  return out;
}

// The list of a source's cached files. A query string, not a fragment: the
// Cache API ignores fragments, so `model.gguf#x` would overwrite `model.gguf`.
function manifestKey(r) {
  return `${r.base}${r.gguf ?? ''}?tramontane-manifest`;
}

async function openCache() {
  if (!globalThis.caches) return null;
  try { return await caches.open(CACHE_NAME); } catch { return null; }
}

let nextId = 0;
const now = () => (globalThis.performance ?? Date).now();

/** Sampling parameters of a request; what it leaves out comes from the
 * model's own recommendation (generation_config.json, GGUF general.sampling.*),
 * then OpenAI's defaults. */
function samplingParams(req, defaults = {}) {
  const stop = req.stop == null ? [] : Array.isArray(req.stop) ? req.stop : [req.stop];
  const p = {
    max_tokens: req.max_tokens ?? req.max_completion_tokens ?? 256,
    temperature: req.temperature ?? defaults.temperature ?? 1.0,
    top_p: req.top_p ?? defaults.top_p ?? 1.0,
    top_k: req.top_k ?? defaults.top_k ?? 0,
    seed: req.seed ?? undefined,
    stop,
    repetition_penalty: req.repetition_penalty ?? defaults.repetition_penalty ?? 1.0,
    frequency_penalty: req.frequency_penalty ?? 0.0,
    presence_penalty: req.presence_penalty ?? 0.0,
    ignore_eos: req.ignore_eos ?? false,
    logprobs: req.logprobs ? Math.max(0, Math.min(20, req.top_logprobs ?? 0)) + 1 : 0,
  };
  // Requests come from any code on the page: every field is checked here, by
  // name, before the engine sees it (NaN and Infinity fail `isNum`).
  const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
  const isInt = (x) => Number.isSafeInteger(x);
  const check = (name, ok, what) => {
    if (!ok) throw new TramontaneError('INVALID_REQUEST', `${name} ${what}`);
  };
  check('max_tokens', isInt(p.max_tokens) && p.max_tokens >= 1, 'must be an integer >= 1');
  check('temperature', isNum(p.temperature) && p.temperature >= 0, 'must be a number >= 0');
  check('top_p', isNum(p.top_p) && p.top_p > 0 && p.top_p <= 1, 'must be a number in (0, 1]');
  check('top_k', isInt(p.top_k) && p.top_k >= 0, 'must be an integer >= 0');
  check('seed', p.seed === undefined || (isInt(p.seed) && p.seed >= 0), 'must be an integer >= 0');
  check('stop', stop.every((x) => typeof x === 'string'), 'must be a string or an array of strings');
  check('repetition_penalty', isNum(p.repetition_penalty) && p.repetition_penalty > 0, 'must be a number > 0');
  check('frequency_penalty', isNum(p.frequency_penalty), 'must be a finite number');
  check('presence_penalty', isNum(p.presence_penalty), 'must be a finite number');
  check('top_logprobs', req.top_logprobs == null || (isInt(req.top_logprobs) && req.top_logprobs >= 0 && req.top_logprobs <= 20), 'must be an integer from 0 to 20');
  return p;
}

/** Load options come from any code on the page too: each numeric one is an
 * integer in its range (wasm32's usize is 32 bits: a larger context could not
 * be addressed anyway), else INVALID_REQUEST naming it. */
function checkLoadOptions(o) {
  const intIn = (name, lo, hi) => {
    const x = o[name];
    if (x != null && !(Number.isSafeInteger(x) && x >= lo && x <= hi)) {
      throw new TramontaneError('INVALID_REQUEST', `${name} must be an integer from ${lo} to ${hi}`);
    }
  };
  intIn('contextLength', 1, 2 ** 32 - 1);
  intIn('prefillChunk', 1, 1024);
  intIn('parallelDownloads', 1, 64);
  intIn('maxBindingSize', 4, Number.MAX_SAFE_INTEGER);
  intIn('maxGpuBytes', 1, Number.MAX_SAFE_INTEGER);
  if (o.kvCache != null && !['auto', 'f16', 'f32'].includes(o.kvCache)) {
    throw new TramontaneError('INVALID_REQUEST', 'kvCache must be "auto", "f16" or "f32"');
  }
  if (o.kernels != null && !['auto', 'gpu', 'cpu'].includes(o.kernels)) {
    throw new TramontaneError('INVALID_REQUEST', 'kernels must be "auto", "gpu" or "cpu"');
  }
}

// wgpu asks WebGPU only for the features it knows, and `subgroups` is not one
// of them. So while an engine opens its device and loads (`withSubgroups`
// around `init` and `load`: a new device after a loss opens inside `load`),
// GPUAdapter.requestDevice also asks for `subgroups` where the adapter has
// it, and notes the smallest subgroup size of a device that got it: the
// kernels then shuffle between subgroup lanes (shaders/lanes.wgsl). Windows
// of several engines may overlap: the page's own method is kept once and put
// back when the last one closes. Every device is opened on the same default
// adapter, so the size noted holds for any of them.
let subgroupMinSize = 0;
let pageRequestDevice = null;
let openWindows = 0;
async function requestDeviceWithSubgroups(desc) {
  const want = this.features?.has?.('subgroups') && !(desc?.requiredFeatures ?? []).includes?.('subgroups');
  let device;
  try {
    device = await pageRequestDevice.call(this, want ? { ...desc, requiredFeatures: [...(desc?.requiredFeatures ?? []), 'subgroups'] } : desc);
  } catch (err) {
    if (!want) throw err;
    device = await pageRequestDevice.call(this, desc);
  }
  subgroupMinSize = device.features?.has?.('subgroups') ? (this.info?.subgroupMinSize ?? 0) : 0;
  return device;
}
async function withSubgroups(fn) {
  const proto = globalThis.GPUAdapter?.prototype;
  if (typeof proto?.requestDevice !== 'function') return fn();
  if (openWindows++ === 0) {
    pageRequestDevice = proto.requestDevice;
    proto.requestDevice = requestDeviceWithSubgroups;
  }
  try {
    return await fn();
  } finally {
    if (--openWindows === 0) proto.requestDevice = pageRequestDevice;
  }
}

/** Text of an OpenAI message content: a string, or parts of which the text ones count. */
function contentText(c, i) {
  if (c == null || typeof c === 'string') return c ?? null;
  if (Array.isArray(c)) {
    return c.map((p, j) => {
      if (typeof p === 'string') return p;
      if (p?.type === 'text' && typeof p.text !== 'string') throw new TramontaneError('INVALID_REQUEST', `messages[${i}].content[${j}].text must be a string`);
      return p?.text ?? '';
    }).join('');
  }
  throw new TramontaneError('INVALID_REQUEST', `messages[${i}].content must be a string, null or an array of parts`);
}

/** What the chat template renders: transformers' apply_chat_template inputs.
 * Messages keep every field (tool_calls, tool_call_id, name, ...); `tool_choice`
 * 'none' hides the tools, a named function offers only that one (generation
 * is not constrained: the model may still answer in text). */
export function chatRequest(req) {
  if (!Array.isArray(req.messages) || req.messages.length === 0) throw new TramontaneError('INVALID_REQUEST', 'messages must be a non-empty array');
  const messages = req.messages.map((m, i) => {
    // Shapes are checked by field in the engine (ChatRequest::validate); here
    // only what must hold to flatten the content.
    if (!m || typeof m !== 'object' || Array.isArray(m)) throw new TramontaneError('INVALID_REQUEST', `messages[${i}] must be an object`);
    if (typeof m.role !== 'string' || !m.role) throw new TramontaneError('INVALID_REQUEST', `messages[${i}].role must be a non-empty string`);
    return { ...m, content: contentText(m.content, i) };
  });
  let tools = Array.isArray(req.tools) && req.tools.length ? req.tools : null;
  const choice = req.tool_choice;
  if (choice === 'none') tools = null;
  else if (tools && choice && typeof choice === 'object') {
    const name = choice.function?.name;
    tools = tools.filter((t) => (t.function?.name ?? t.name) === name);
    if (!tools.length) throw new TramontaneError('INVALID_REQUEST', `tool_choice names ${JSON.stringify(name)}, which is not in tools`);
  }
  const extra = { ...(req.chat_template_kwargs ?? {}) };
  return {
    messages,
    tools,
    documents: Array.isArray(req.documents) ? req.documents : null,
    add_generation_prompt: req.add_generation_prompt ?? true,
    extra,
  };
}

/** OpenAI's streamed form of finished tool calls. */
const toolCallDeltas = (calls) => calls.map((c, index) => ({ index, ...c }));

/** The fields that shape a request's output (the engine reads them as
 * OpenAI's server does: crates/tramontane/src/constrain/openai.rs):
 * `response_format` (`text`, `json_object`, `json_schema`), our extensions
 * `regex` and `grammar` (llguidance's Lark syntax), llama.cpp's `json_schema`,
 * and `tool_choice` / `parallel_tool_calls` with the tools the template got. */
const CONSTRAINT_FIELDS = ['response_format', 'regex', 'grammar', 'json_schema', 'tool_choice', 'parallel_tool_calls'];
function constraintFields(req, tools) {
  const o = {};
  for (const k of CONSTRAINT_FIELDS) if (req[k] != null) o[k] = req[k];
  if (tools) o.tools = tools;
  if (!Object.keys(o).length) return undefined;
  try {
    return JSON.stringify(o);
  } catch (e) {
    throw new TramontaneError('INVALID_REQUEST', `response_format, tools and the like must be JSON (${e?.message ?? e})`);
  }
}

/** `chat.completions.parse`, as OpenAI's SDKs have it: the reply with
 * `message.parsed`, the content read as JSON when the request asked for JSON
 * (`json_schema`, `json_object`) and the answer is not a tool call. */
async function withParsed(reply, req) {
  const r = await reply;
  const t = req?.response_format?.type;
  for (const c of r?.choices ?? []) {
    const m = c?.message;
    if (!m) continue;
    m.parsed = null;
    if ((t === 'json_schema' || t === 'json_object') && typeof m.content === 'string' && !m.tool_calls?.length) {
      try { m.parsed = JSON.parse(m.content); } catch {
        if (c.finish_reason !== 'length') throw new TramontaneError('INTERNAL', `the answer is not JSON: ${m.content.slice(0, 200)}`);
      }
    }
  }
  return r;
}
function chatApi(create) {
  return {
    completions: {
      create,
      parse: (req) => {
        if (req?.stream) throw new TramontaneError('INVALID_REQUEST', 'parse does not stream: use create with stream: true');
        return withParsed(create(req), req);
      },
    },
  };
}

/** A queue of chunks fed by the engine and drained by an async iterator. */
class ChunkStream {
  constructor() { this.items = []; this.waiting = null; this.done = false; this.error = null; }
  push(x) { this.items.push(x); this.wake(); }
  end(err) { this.done = true; this.error = err ?? null; this.wake(); }
  wake() { if (this.waiting) { const w = this.waiting; this.waiting = null; w(); } }
  async *[Symbol.asyncIterator]() {
    for (;;) {
      if (this.items.length) { yield this.items.shift(); continue; }
      if (this.done) { if (this.error) throw this.error; return; }
      await new Promise((r) => { this.waiting = r; });
    }
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
   * `useCache` (default true), `contextLength`, `prefillChunk`,
   * `parallelDownloads` (default 4), `maxBindingSize`, `maxGpuBytes`, `kvCache`, `kernels`, `revision`, `ggufFile`, `wasmUrl`,
   * `hfToken` / `headers` (for gated or private repos: sent only to the model's host). */
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
          return this._wasm.load({ base: r.base, gguf: r.gguf, context: options.contextLength, chunk: options.prefillChunk, parallel: options.parallelDownloads, maxBinding: options.maxBindingSize, maxGpuBytes: options.maxGpuBytes, kvCache: options.kvCache, cpuAdapter, subgroups: subgroupMinSize, useCache: options.useCache ?? true, chatTemplate: options.chatTemplate, headers }, report, options.signal);
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
        const r = this._model().chatPrompt(JSON.stringify(chatRequest(req)));
        return { text: r.text, ids: Array.from(r.ids) };
      } catch (err) { throw asError(err); }
    });
  }
  detokenize(ids) { return this._enqueue(async () => this._model().detokenize(Uint32Array.from(ids))); }
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

  async _run(req, kind, chunks) {
    const wasm = this._model();
    const signal = req.signal;
    if (signal?.aborted) throw aborted();
    const params = samplingParams(req, this._info.generationDefaults ?? {});
    let prompt;
    try {
      if (kind === 'chat') {
        const request = chatRequest(req);
        // Exactly what the template writes (its own BOS), nothing added.
        prompt = wasm.chatPrompt(JSON.stringify(request)).ids;
        params.tools = request.tools != null;
        params.constrain = constraintFields(req, request.tools);
      } else if (typeof req.prompt === 'string') {
        params.constrain = constraintFields(req, null);
        // A text prompt gets the tokenizer's BOS/EOS rule, as transformers'
        // tokenizer(text) and llama.cpp do.
        prompt = wasm.tokenize(req.prompt, true, true);
      } else if (Array.isArray(req.prompt) || req.prompt instanceof Uint32Array) {
        // Ids are checked against the vocabulary by the engine; here, that
        // they are ids at all (Uint32Array.from would wrap -1 and floor 1.5).
        if (!Array.from(req.prompt).every((x) => Number.isSafeInteger(x) && x >= 0 && x < 2 ** 32)) {
          throw new TramontaneError('INVALID_REQUEST', 'prompt token ids must be integers >= 0');
        }
        prompt = Uint32Array.from(req.prompt);
        params.constrain = constraintFields(req, null);
      } else {
        throw new TramontaneError('INVALID_REQUEST', 'prompt must be a string or an array of token ids');
      }
    } catch (err) { throw asError(err); }
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${Date.now().toString(36)}${(nextId++).toString(36)}`;
    const created = Math.floor(Date.now() / 1000);
    const model = String(this._source);
    const t0 = now();
    let firstTokenAt = null;
    let first = true;
    const logprobs = [];
    const onToken = (piece, token, lp) => {
      if (signal?.aborted) return false;
      if (firstTokenAt === null) firstTokenAt = now();
      const entry = lp ? { token: lp.token, id: token, logprob: lp.logprob, top_logprobs: lp.top } : null;
      if (entry) logprobs.push(entry);
      if (chunks && (piece.length > 0 || entry)) {
        const choice = kind === 'chat'
          ? { index: 0, delta: first ? { role: 'assistant', content: piece } : { content: piece }, finish_reason: null, logprobs: entry ? { content: [entry] } : null }
          : { index: 0, text: piece, finish_reason: null, logprobs: entry ? { content: [entry] } : null };
        chunks.push({ id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [choice] });
        first = false;
      }
      return true;
    };
    let g;
    try {
      g = await wasm.generate(prompt, params, onToken);
    } catch (err) {
      const e = asError(err);
      // The model went with the device; `load()` again makes a new one.
      if (e.code === 'DEVICE_LOST') this._info = null;
      throw e;
    }
    const usage = {
      prompt_tokens: g.prompt_tokens,
      completion_tokens: g.generated.length,
      total_tokens: g.prompt_tokens + g.generated.length,
      extra: {
        prefilled_tokens: g.prefilled_tokens,
        prefill_tokens_per_s: g.prefill_tokens_per_s,
        decode_tokens_per_s: g.decode_tokens_per_s,
        time_to_first_token_s: ((firstTokenAt ?? now()) - t0) / 1000,
        e2e_latency_s: (now() - t0) / 1000,
      },
    };
    // The constraint's costs: compile (or cached) and mask time per token.
    if (g.constraint) usage.extra.constraint = g.constraint;
    const lp = params.logprobs ? { content: logprobs } : null;
    const toolCalls = g.tool_calls ?? [];
    if (chunks) {
      if (toolCalls.length) {
        const delta = { tool_calls: toolCallDeltas(toolCalls) };
        if (first) delta.role = 'assistant';
        chunks.push({ id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta, finish_reason: null, logprobs: null }] });
      }
      const last = kind === 'chat' ? { index: 0, delta: {}, finish_reason: g.finish_reason, logprobs: null } : { index: 0, text: '', finish_reason: g.finish_reason, logprobs: null };
      chunks.push({ id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [last] });
      if (req.stream_options?.include_usage ?? true) {
        chunks.push({ id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [], usage });
      }
      return undefined;
    }
    if (kind === 'chat') {
      const message = toolCalls.length ? { role: 'assistant', content: g.text || null, tool_calls: toolCalls } : { role: 'assistant', content: g.text };
      return { id, object: 'chat.completion', created, model, choices: [{ index: 0, message, finish_reason: g.finish_reason, logprobs: lp }], usage, token_ids: g.generated };
    }
    return { id, object: 'text_completion', created, model, choices: [{ index: 0, text: g.text, finish_reason: g.finish_reason, logprobs: lp }], usage, token_ids: g.generated };
  }
}

/** The browser cache of downloaded model files (Cache API). */
Engine.cache = {
  async has(source, options = {}) {
    const cache = await openCache();
    if (!cache) return false;
    const m = await cache.match(manifestKey(resolveSource(source, options)));
    if (!m) return false;
    const urls = await m.json();
    for (const u of urls) if (!(await cache.match(u))) return false;
    return true;
  },
  async delete(source, options = {}) {
    const cache = await openCache();
    if (!cache) return false;
    const key = manifestKey(resolveSource(source, options));
    const m = await cache.match(key);
    if (!m) return false;
    for (const u of await m.json()) await cache.delete(u);
    return cache.delete(key);
  },
};

/** The same API with the engine in a Web Worker, so the page stays responsive. */
export class WorkerEngine {
  constructor(worker) {
    this._worker = worker;
    this._calls = new Map();
    this._info = null;
    this._next = 0;
    worker.onmessage = (ev) => this._onMessage(ev.data);
    worker.onerror = (ev) => {
      const err = new TramontaneError('INTERNAL', `worker error: ${ev.message ?? ev}`);
      for (const c of this._calls.values()) c.reject(err);
      this._calls.clear();
    };
    this.chat = chatApi((req) => this._create('chat', req));
    this.completions = { create: (req) => this._create('text', req) };
  }

  static async load(source, options = {}) {
    const worker = options.worker ?? new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    const e = new WorkerEngine(worker);
    try {
      await e.load(source, options);
    } catch (err) {
      if (!options.worker) worker.terminate(); // ours: do not leave it running
      throw err;
    }
    return e;
  }

  _onMessage(m) {
    const c = this._calls.get(m.id);
    if (!c) return;
    if (m.progress) { c.onProgress?.(m.progress); return; }
    if (m.chunk) { c.chunks?.push(m.chunk); return; }
    this._calls.delete(m.id);
    if (m.error) {
      const err = new TramontaneError(m.error.code ?? 'INTERNAL', m.error.message, { url: m.error.url, status: m.error.status });
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
    this._worker.postMessage({ id, method, args });
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
    if (!rest.stream) return this._call(kind, [rest], { signal });
    const chunks = new ChunkStream();
    this._call(kind, [rest], { signal, chunks }).catch(() => {});
    return chunks;
  }

  tokenize(text, options = {}) { return this._call('tokenize', [text, options]); }
  chatPrompt(req) { return this._call('chatPrompt', [req]); }
  detokenize(ids) { return this._call('detokenize', [Array.from(ids)]); }
  resetChat() { return this._call('resetChat', []); }
  async unload() { await this._call('unload', []); this._info = null; }
  terminate() { this._worker.terminate(); }
}

// ---- RemoteEngine: the same API over an OpenAI-compatible HTTP server
// (`tramontane serve`, llama.cpp's llama-server, vLLM, OpenAI itself).

/** Codes a server may carry in `error.code` that are ours (tramontane serve sends them). */
const ERROR_CODES = new Set(['WEBGPU_UNAVAILABLE', 'MODEL_FORMAT', 'UNSUPPORTED', 'NETWORK', 'ABORTED', 'CONTEXT_OVERFLOW',
  'DEVICE_LOST', 'OUT_OF_MEMORY', 'QUOTA', 'INVALID_REQUEST', 'GPU', 'INTERNAL']);

/** The error for an HTTP error response (or an error event of a stream):
 * `url` and `status` always; the code from the server's body where it is one
 * of ours, else by status: 401/403 NETWORK (the key), 400/413/422
 * INVALID_REQUEST (the server's message), `notFound` (404/405/501) when the
 * caller says what a missing endpoint means, else NETWORK. */
function remoteError(status, url, body, { apiKey = false, notFound = null } = {}) {
  let err = body && typeof body === 'object' ? body.error ?? null : null;
  if (typeof err === 'string') err = { message: err };
  if (err !== null && typeof err !== 'object') err = null;
  let detail = typeof err?.message === 'string' && err.message ? err.message : typeof body?.message === 'string' ? body.message : '';
  if (!detail && typeof body === 'string') detail = body.trim().slice(0, 300);
  const extra = { url, status };
  const origin = (() => { try { return new URL(url).origin; } catch { return url; } })();
  if (status === 401 || status === 403) {
    // The server's words are left out: nothing about credentials goes in an error.
    return new TramontaneError('NETWORK', apiKey
      ? `the server at ${origin} refused the API key (HTTP ${status})`
      : `the server at ${origin} needs an API key (HTTP ${status}): pass apiKey`, extra);
  }
  const code = typeof err?.code === 'string' ? err.code : null;
  if (code && ERROR_CODES.has(code)) return new TramontaneError(code, detail || `${code} (HTTP ${status})`, extra);
  // OpenAI's and llama-server's names for a prompt too long for the context.
  if (code === 'context_length_exceeded' || err?.type === 'exceed_context_size_error') {
    return new TramontaneError('CONTEXT_OVERFLOW', detail || 'the request does not fit the context window', extra);
  }
  if (status === 400 || status === 413 || status === 422) {
    return new TramontaneError('INVALID_REQUEST', detail || `the server refused the request (HTTP ${status})`, extra);
  }
  if (notFound && (status === 404 || status === 405 || status === 501)) {
    return new TramontaneError('UNSUPPORTED', `${notFound} (${url}: HTTP ${status})`, extra);
  }
  if (status === 429) return new TramontaneError('NETWORK', `the server at ${origin} is busy (HTTP 429)${detail ? `: ${detail}` : ''}; try again later`, extra);
  return new TramontaneError('NETWORK', `${url}: HTTP ${status}${detail ? `: ${detail}` : ''}`, extra);
}

/** The body of an error response: JSON when it is, else its text. */
async function errorBody(res) {
  let text = '';
  try { text = await res.text(); } catch { return null; }
  try { return JSON.parse(text); } catch { return text; }
}

/** llama-server's `timings` as our `usage.extra` (the same measures). */
function extraFromTimings(t) {
  if (!t || typeof t !== 'object') return undefined;
  const n = (x) => (typeof x === 'number' && Number.isFinite(x) ? x : 0);
  return {
    prefilled_tokens: n(t.prompt_n),
    prefill_tokens_per_s: n(t.prompt_per_second),
    decode_tokens_per_s: n(t.predicted_per_second),
    time_to_first_token_s: n(t.prompt_ms) / 1000,
    e2e_latency_s: (n(t.prompt_ms) + n(t.predicted_ms)) / 1000,
  };
}

/** A response or chunk in the shape Engine gives: `logprobs` on every choice,
 * no `usage: null`, `usage.extra` from llama-server's timings when the server
 * sent no `extra` of its own. */
function normalizeReply(x, timings) {
  if (!x || typeof x !== 'object') return x;
  if (Array.isArray(x.choices)) for (const c of x.choices) if (c && typeof c === 'object' && c.logprobs === undefined) c.logprobs = null;
  if (x.usage == null) delete x.usage;
  else if (x.usage.extra == null) {
    const extra = extraFromTimings(x.timings ?? timings);
    if (extra) x.usage.extra = extra;
  }
  return x;
}

/** A ChunkStream whose consumer may stop early (`break` in `for await`):
 * then the request is cancelled, as the server would otherwise keep going.
 * An abort ends it at once: chunks received but not yet read are dropped
 * (a network read brings several at a time), as no more come after an abort
 * of a local engine. */
class RemoteChunkStream extends ChunkStream {
  constructor(cancel) { super(); this.cancel = cancel; }
  push(x) { if (!this.done) super.push(x); }
  abort() { if (!this.done) { this.items.length = 0; this.end(aborted()); } }
  async *[Symbol.asyncIterator]() {
    try { yield* super[Symbol.asyncIterator](); } finally { if (!this.done) this.cancel(); }
  }
}

/** Server-sent events of a response body: calls `onEvent(field, data)` for
 * each event (field 'data', or 'error' as llama-server sends), until the
 * body ends or `onEvent` returns false. */
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '', data = [], field = 'data';
  const line = (l) => {
    if (l === '') {
      if (!data.length) return true;
      const d = data.join('\n');
      data = [];
      const f = field;
      field = 'data';
      return onEvent(f, d) !== false;
    }
    if (l.startsWith(':')) return true; // a comment (keep-alive)
    const i = l.indexOf(':');
    const name = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? '' : l.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data' || name === 'error') { data.push(value); if (name === 'error') field = 'error'; }
    return true;
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buf += done ? dec.decode() : dec.decode(value, { stream: true });
      let start = 0;
      const eol = /\r\n|\r|\n/g;
      for (;;) {
        eol.lastIndex = start;
        const m = eol.exec(buf);
        // A lone '\r' at the end may be the first half of '\r\n'.
        if (!m || (!done && m[0] === '\r' && m.index === buf.length - 1)) break;
        const l = buf.slice(start, m.index);
        start = m.index + m[0].length;
        if (!line(l)) return;
      }
      buf = buf.slice(start);
      if (done) { if (buf) line(buf); line(''); return; }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** The API of Engine over an OpenAI-compatible server: `RemoteEngine.connect(baseUrl, options)`. */
export class RemoteEngine {
  constructor(baseUrl, options = {}) {
    if (!(typeof baseUrl === 'string' && baseUrl.length) && !(baseUrl instanceof URL)) {
      throw new TramontaneError('INVALID_REQUEST', 'baseUrl must be the URL of an OpenAI-compatible server');
    }
    let url;
    try { url = new URL(String(baseUrl), globalThis.location?.href); } catch {
      throw new TramontaneError('INVALID_REQUEST', `baseUrl is not a URL: ${String(baseUrl).slice(0, 200)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TramontaneError('INVALID_REQUEST', 'baseUrl must be an http(s) URL');
    if (options.apiKey != null && typeof options.apiKey !== 'string') throw new TramontaneError('INVALID_REQUEST', 'apiKey must be a string');
    if (options.model != null && (typeof options.model !== 'string' || !options.model)) throw new TramontaneError('INVALID_REQUEST', 'model must be a non-empty string');
    if (options.fetch != null && typeof options.fetch !== 'function') throw new TramontaneError('INVALID_REQUEST', 'fetch must be a function');
    url.hash = '';
    url.search = '';
    // `http://host:8080`, `http://host:8080/` and `http://host:8080/v1` name the
    // same server: the OpenAI API under `<root>/v1`, /tokenize at the root.
    const root = url.href.replace(/\/+$/, '').replace(/\/v1$/, '');
    this.baseUrl = root;
    this.apiBase = `${root}/v1`;
    this.kind = 'remote';
    this._headers = modelHeaders({ headers: options.headers });
    this._apiKey = typeof options.apiKey === 'string' && options.apiKey.trim() !== '';
    if (this._apiKey) {
      for (const k of Object.keys(this._headers)) if (k.toLowerCase() === 'authorization') delete this._headers[k];
      this._headers.Authorization = `Bearer ${options.apiKey.trim()}`;
    }
    this._fetch = options.fetch ?? ((u, init) => globalThis.fetch(u, init));
    this.model = options.model ?? null;
    this._info = null;
    this.chat = chatApi((req) => this._create(req, 'chat'));
    this.completions = { create: (req) => this._create(req, 'text') };
  }

  /** Check the server (GET /v1/models) and return a ready engine. Options:
   * `apiKey` (sent as `Authorization: Bearer`), `model` (default: the first
   * the server lists), `headers` (sent with every request), `fetch` (a fetch
   * to use instead of the global one), `signal`. */
  static async connect(baseUrl, options = {}) {
    const e = new RemoteEngine(baseUrl, options);
    await e._connect(options.signal);
    return e;
  }

  async _connect(signal) {
    const url = `${this.apiBase}/models`;
    const res = await this._send(url, { method: 'GET' }, signal);
    if (!res.ok) throw remoteError(res.status, url, await errorBody(res), { apiKey: this._apiKey });
    let list;
    try { list = await res.json(); } catch (e) {
      if (signal?.aborted) throw aborted();
      throw new TramontaneError('NETWORK', `${url} did not answer JSON: is it an OpenAI-compatible server?`, { url, status: res.status });
    }
    const data = Array.isArray(list?.data) ? list.data.filter((m) => m && typeof m.id === 'string') : null;
    if (!data) throw new TramontaneError('NETWORK', `${url} did not answer a list of models: is it an OpenAI-compatible server?`, { url, status: res.status });
    this.model ??= data[0]?.id ?? null;
    if (!this.model) throw new TramontaneError('UNSUPPORTED', `the server at ${this.baseUrl} lists no model: pass options.model`, { url, status: res.status });
    const entry = data.find((m) => m.id === this.model);
    this._info = {
      remote: true, baseUrl: this.baseUrl, apiBase: this.apiBase, model: this.model, source: this.model,
      models: data.map((m) => m.id), ownedBy: entry?.owned_by ?? null, created: entry?.created ?? null,
    };
    return this;
  }

  get info() { return this._info; }

  /** fetch with our headers: a failure to get any response is NETWORK with
   * status 0 (or ABORTED when the signal did it). */
  async _send(url, init, signal) {
    if (signal?.aborted) throw aborted();
    const headers = { ...this._headers, ...(init.body != null ? { 'Content-Type': 'application/json' } : {}) };
    try {
      return await this._fetch(url, { ...init, headers, signal });
    } catch (e) {
      if (signal?.aborted || e?.name === 'AbortError') throw aborted();
      throw new TramontaneError('NETWORK',
        `could not reach the server at ${url} (${e?.message ?? e}): is it running, and does it allow this page's origin (CORS)?`, { url, status: 0 });
    }
  }

  async _post(path, body, { root = false, notFound = null, signal } = {}) {
    const url = `${root ? this.baseUrl : this.apiBase}${path}`;
    const res = await this._send(url, { method: 'POST', body: JSON.stringify(body) }, signal);
    if (!res.ok) throw remoteError(res.status, url, await errorBody(res), { apiKey: this._apiKey, notFound });
    return { res, url };
  }

  async _json(res, url, signal) {
    try { return await res.json(); } catch (e) {
      if (signal?.aborted || e?.name === 'AbortError') throw aborted();
      throw new TramontaneError('NETWORK', `${url} answered something that is not JSON (${e?.message ?? e})`, { url, status: res.status });
    }
  }

  _create(req, kind) {
    if (!req || typeof req !== 'object') throw new TramontaneError('INVALID_REQUEST', 'expected a request object');
    if (!req.stream) return this._run(req, kind, null);
    const ctl = new AbortController();
    const chunks = new RemoteChunkStream(() => ctl.abort());
    const signal = req.signal;
    const onAbort = () => chunks.abort();
    signal?.addEventListener?.('abort', onAbort, { once: true });
    this._run(req, kind, chunks, ctl).then(() => chunks.end(), (e) => chunks.end(asError(e)))
      .finally(() => signal?.removeEventListener?.('abort', onAbort));
    return chunks;
  }

  /** The body sent: the request as given (what it leaves out, the server
   * decides), checked here first by the same rules as Engine's. */
  _body(req, kind) {
    const { signal, ...rest } = req;
    samplingParams(rest);
    const body = { ...rest, model: rest.model ?? this.model };
    if (kind === 'chat') {
      chatRequest(rest);
    } else if (Array.isArray(rest.prompt) || rest.prompt instanceof Uint32Array) {
      if (!Array.from(rest.prompt).every((x) => Number.isSafeInteger(x) && x >= 0 && x < 2 ** 32)) {
        throw new TramontaneError('INVALID_REQUEST', 'prompt token ids must be integers >= 0');
      }
      body.prompt = Array.from(rest.prompt);
    } else if (typeof rest.prompt !== 'string') {
      throw new TramontaneError('INVALID_REQUEST', 'prompt must be a string or an array of token ids');
    }
    // As Engine: a stream ends with a usage chunk unless asked not to.
    if (body.stream) body.stream_options = { include_usage: true, ...(rest.stream_options ?? {}) };
    else delete body.stream_options;
    return body;
  }

  async _run(req, kind, chunks, ctl = new AbortController()) {
    const signal = req.signal;
    if (signal?.aborted) throw aborted();
    const body = this._body(req, kind);
    const onAbort = () => ctl.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const abortedNow = () => signal?.aborted;
    try {
      const { res, url } = await this._post(kind === 'chat' ? '/chat/completions' : '/completions', body, { signal: ctl.signal });
      if (!chunks) return normalizeReply(await this._json(res, url, ctl.signal));
      if (!res.body) throw new TramontaneError('NETWORK', `${url} answered no stream`, { url, status: res.status });
      let finished = false, failure = null, timings = null;
      try {
        await readEvents(res, (field, data) => {
          if (field === 'data' && data.trim() === '[DONE]') { finished = true; return false; }
          let x;
          try { x = JSON.parse(data); } catch {
            failure = new TramontaneError('NETWORK', `${url} sent a stream event that is not JSON: ${data.slice(0, 100)}`, { url, status: res.status });
            return false;
          }
          if (field === 'error' || (x && typeof x === 'object' && x.error)) {
            const status = typeof x?.error?.code === 'number' ? x.error.code : typeof x?.code === 'number' ? x.code : 500;
            failure = remoteError(status, url, field === 'error' && !x?.error ? { error: x } : x, { apiKey: this._apiKey });
            return false;
          }
          if (x?.timings) timings = x.timings;
          chunks.push(normalizeReply(x, timings));
          if (x?.choices?.some?.((c) => c?.finish_reason)) finished = true;
          return true;
        });
      } catch (e) {
        if (abortedNow()) throw aborted();
        if (ctl.signal.aborted) return undefined; // the consumer stopped reading
        throw new TramontaneError('NETWORK', `the connection to ${url} broke during the reply (${e?.message ?? e})`, { url, status: 0 });
      }
      if (failure) throw failure;
      if (abortedNow()) throw aborted();
      if (!finished && !ctl.signal.aborted) throw new TramontaneError('NETWORK', `${url} ended the stream before the reply did`, { url, status: 0 });
      return undefined;
    } catch (e) {
      if (abortedNow()) throw aborted();
      if (chunks && ctl.signal.aborted && !signal?.aborted) return undefined; // stopped by the consumer
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Token ids of `text`, from the server's POST /tokenize (llama-server's
   * and tramontane serve's; UNSUPPORTED where the server has none). */
  async tokenize(text, options = {}) {
    const { res, url } = await this._post('/tokenize', { content: String(text), add_special: options.addSpecial ?? false, parse_special: options.parseSpecial ?? true },
      { root: true, notFound: `the server at ${this.baseUrl} has no /tokenize endpoint` });
    const r = await this._json(res, url);
    if (!Array.isArray(r?.tokens)) throw new TramontaneError('NETWORK', `${url} answered no tokens`, { url, status: res.status });
    return r.tokens.map((t) => (typeof t === 'number' ? t : t?.id));
  }

  /** Text of token ids, from the server's POST /detokenize. */
  async detokenize(ids) {
    const tokens = Array.from(ids ?? []);
    if (!tokens.every((x) => Number.isSafeInteger(x) && x >= 0 && x < 2 ** 32)) throw new TramontaneError('INVALID_REQUEST', 'token ids must be integers >= 0');
    const { res, url } = await this._post('/detokenize', { tokens },
      { root: true, notFound: `the server at ${this.baseUrl} has no /detokenize endpoint` });
    const r = await this._json(res, url);
    if (typeof r?.content !== 'string') throw new TramontaneError('NETWORK', `${url} answered no content`, { url, status: res.status });
    return r.content;
  }

  async chatPrompt() { throw new TramontaneError('UNSUPPORTED', 'chatPrompt: the server renders chat templates itself and does not say how'); }
  /** The server keeps (or not) its own cache of the conversation: nothing to do. */
  async resetChat() {}
  /** The model stays on the server: nothing to free here. */
  async unload() {}
  async load() { throw new TramontaneError('UNSUPPORTED', 'a remote engine serves the model its server was started with: connect to another server instead'); }
}

/** The reason a failed local load sends the choice to the server. */
const DOES_NOT_FIT = new Set(['WEBGPU_UNAVAILABLE', 'UNSUPPORTED', 'OUT_OF_MEMORY']);

/** A local engine when this device can run the model, else the server in
 * `options.remote` (a base URL, or `{ baseUrl, apiKey, model, headers, fetch }`).
 * The rule, decided without downloading anything first: no `navigator.gpu` or
 * no adapter → remote; else the model is loaded locally (with `maxGpuBytes` set
 * to `localMaxGpuBytes` when given, which the engine checks before any weight
 * is downloaded) and a load failing with WEBGPU_UNAVAILABLE, UNSUPPORTED or
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
