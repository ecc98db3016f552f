// What Engine, WorkerEngine and RemoteEngine share on the JS side: a request
// as JSON, load options checked by name, `parse`, and the chunk stream a
// streamed request returns. The OpenAI protocol itself (fields, defaults,
// answers) is the engine's (crates/tramontane/src/openai) or the server's.
import { TramontaneError } from './errors.js';

/** A request as JSON text for the engine's protocol (the wasm's `create`, or a
 * server): what JSON cannot carry is refused by name rather than sent as null
 * (which would read as "not given"): NaN and infinities. Token ids in a
 * Uint32Array go as an array. The fields themselves are checked where the
 * request is answered (crates/tramontane/src/openai). */
export function requestJson(req) {
  const body = { ...req };
  delete body.signal;
  if (body.prompt instanceof Uint32Array) body.prompt = Array.from(body.prompt);
  // The request field each value lies in (the replacer sees only its own key).
  const field = new Map();
  try {
    return JSON.stringify(body, function (k, v) {
      const top = this === body ? k : field.get(this);
      if (v && typeof v === 'object') field.set(v, top);
      if (typeof v === 'number' && !Number.isFinite(v)) {
        const what = this === body ? 'must be a finite number' : 'must hold finite numbers only';
        throw new TramontaneError('INVALID_REQUEST', `${top} ${what} (not ${v})`, { param: top });
      }
      return v;
    });
  } catch (err) {
    if (err instanceof TramontaneError) throw err;
    throw new TramontaneError('INVALID_REQUEST', `the request cannot be sent as JSON (${err?.message ?? err})`);
  }
}

/** The `prefill` load option as JSON text: what JSON cannot carry is named
 * under `prefill` (`prefill.messages`), as the engine names its fields. */
export function prefillJson(prefill) {
  try {
    return requestJson(prefill);
  } catch (err) {
    if (err instanceof TramontaneError && err.param) throw new TramontaneError(err.code, `prefill.${err.message}`, { param: `prefill.${err.param}` });
    throw err;
  }
}

/** Load options come from any code on the page too: each numeric one is an
 * integer in its range (wasm32's usize is 32 bits: a larger context could not
 * be addressed anyway), else INVALID_REQUEST naming it. */
export function checkLoadOptions(o) {
  const intIn = (name, lo, hi) => {
    const x = o[name];
    if (x != null && !(Number.isSafeInteger(x) && x >= lo && x <= hi)) {
      throw new TramontaneError('INVALID_REQUEST', `${name} must be an integer from ${lo} to ${hi}`);
    }
  };
  intIn('contextLength', 1, 2 ** 32 - 1);
  intIn('prefillChunk', 1, 1024);
  intIn('parallelDownloads', 1, 64);
  intIn('cachePartBytes', 65536, 2 ** 31);
  intIn('maxBindingSize', 4, Number.MAX_SAFE_INTEGER);
  intIn('maxGpuBytes', 1, Number.MAX_SAFE_INTEGER);
  if (o.kvCache != null && !['auto', 'f16', 'f32'].includes(o.kvCache)) {
    throw new TramontaneError('INVALID_REQUEST', 'kvCache must be "auto", "f16" or "f32"');
  }
  if (o.cacheStore != null && !['auto', 'opfs', 'cacheApi'].includes(o.cacheStore)) {
    throw new TramontaneError('INVALID_REQUEST', 'cacheStore must be "auto", "opfs" or "cacheApi"');
  }
  if (o.prefill != null && (typeof o.prefill !== 'object' || Array.isArray(o.prefill))) {
    throw new TramontaneError('INVALID_REQUEST', 'prefill must be an object ({messages, tools, ...}: the opening of the conversations to come)', { param: 'prefill' });
  }
  if (o.kernels != null && !['auto', 'gpu', 'cpu'].includes(o.kernels)) {
    throw new TramontaneError('INVALID_REQUEST', 'kernels must be "auto", "gpu" or "cpu"');
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
export function chatApi(create) {
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
export class ChunkStream {
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
