// RemoteEngine: Engine's API over an OpenAI-compatible HTTP server
// (`tramontane serve`, llama.cpp's llama-server, vLLM, OpenAI itself).
import { TramontaneError, asError, aborted } from './errors.js';
import { modelHeaders } from './source.js';
import { chatApi, ChunkStream, requestJson } from './protocol.js';

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
  const extra = { url, status, ...(typeof err?.param === 'string' ? { param: err.param } : {}) };
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
   * decides; its fields are the server's to check: a 400 is INVALID_REQUEST
   * with the server's message), as JSON (protocol.js `requestJson`). */
  _body(req) {
    const body = JSON.parse(requestJson(req));
    body.model ??= this.model;
    // As Engine: a stream ends with a usage chunk unless asked not to.
    if (body.stream) body.stream_options = { include_usage: true, ...(body.stream_options ?? {}) };
    else delete body.stream_options;
    return body;
  }

  async _run(req, kind, chunks, ctl = new AbortController()) {
    const signal = req.signal;
    if (signal?.aborted) throw aborted();
    const body = this._body(req);
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
