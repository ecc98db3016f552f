// The OpenAI-shaped request side shared by Engine, WorkerEngine and
// RemoteEngine: sampling fields and load options checked by name, chat
// requests as the template renders them, constraint fields, `parse`, and the
// chunk stream a streamed request returns.
import { TramontaneError } from './errors.js';

/** Sampling parameters of a request; what it leaves out comes from the
 * model's own recommendation (generation_config.json, GGUF general.sampling.*),
 * then OpenAI's defaults. */
export function samplingParams(req, defaults = {}) {
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
  if (o.kernels != null && !['auto', 'gpu', 'cpu'].includes(o.kernels)) {
    throw new TramontaneError('INVALID_REQUEST', 'kernels must be "auto", "gpu" or "cpu"');
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
export const toolCallDeltas = (calls) => calls.map((c, index) => ({ index, ...c }));

/** The fields that shape a request's output (the engine reads them as
 * OpenAI's server does: crates/tramontane/src/openai/constraint.rs):
 * `response_format` (`text`, `json_object`, `json_schema`), our extensions
 * `regex` and `grammar` (llguidance's Lark syntax), llama.cpp's `json_schema`,
 * and `tool_choice` / `parallel_tool_calls` with the tools the template got. */
const CONSTRAINT_FIELDS = ['response_format', 'regex', 'grammar', 'json_schema', 'tool_choice', 'parallel_tool_calls'];
export function constraintFields(req, tools) {
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
