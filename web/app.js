// The demo chat: uses the npm package like any app would (public API only,
// through WorkerEngine, so the page stays responsive while the model runs).
// With a Server URL the chat runs on that server instead (RemoteEngine: the
// same API over an OpenAI-compatible server); `?server=URL` connects at start.
import { WorkerEngine, RemoteEngine } from 'tramontane';

const DEFAULT_MODEL = new URL('/models/SmolLM2-135M-Instruct.Q4_1.gguf', location.href).href;
// The embedded GGUF carries no sampling metadata. Its model card suggests
// temperature 0.2 / top-p 0.9, but at 135M parameters the first token of a
// plain question is often a near-tie: for "What is the capital of France?"
// "The" leads "L" by 0.08 logits, so at T 0.2 about 6 fresh pages in 10 went
// "L'Étoile, la Marseillaise, la femme, la femme…". Greedy decoding answers
// right on every load; a mild repetition penalty keeps greedy out of loops
// in longer answers (a poem, a recipe: measured natively, 1.0 loops, 1.1
// does not). The settings panel shows and changes both.
const DEFAULT_MODEL_OPTIONS = {
  label: 'SmolLM2-135M-Instruct (Q4_1, embedded default)',
  sampling: { temperature: 0, top_p: 1, repetition_penalty: 1.1, source: 'the demo (greedy with a repetition penalty: this small model answers right and does not loop)' },
};
// When a model recommends nothing.
const FALLBACK_SAMPLING = { temperature: 0.7, top_p: 0.9, repetition_penalty: 1 };
const $ = (id) => document.getElementById(id);
const ui = {
  messages: $('messages'), empty: $('empty'), input: $('input'), send: $('send'), stop: $('stop'),
  newChat: $('new-chat'), status: $('status'), error: $('error'), system: $('system-prompt'),
  temperature: $('temperature'), topP: $('top-p'), repetitionPenalty: $('repetition-penalty'), maxTokens: $('max-tokens'),
  samplingSource: $('sampling-source'), modelName: $('model-name'), modelMeta: $('model-meta'), progress: $('progress'),
  progressPhase: $('progress-phase'), progressNumbers: $('progress-numbers'), progressFill: $('progress-fill'),
  loadForm: $('load-form'), source: $('model-source'), ggufFile: $('gguf-file'), mmproj: $('mmproj'), loadButton: $('load-button'),
  loadDefault: $('load-default'), settings: $('settings'), toggleSettings: $('toggle-settings'),
  remoteForm: $('remote-form'), serverUrl: $('server-url'), apiKey: $('api-key'), connectButton: $('connect-button'),
  disconnectButton: $('disconnect-button'), jsonSchema: $('json-schema'), jsonExample: $('json-example'),
  jsonSchemaStatus: $('json-schema-status'), attach: $('attach'), imageFile: $('image-file'), attachments: $('attachments'),
  composer: $('composer'),
};
const EXAMPLE_SCHEMA = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 40 },
    country: { type: 'string', maxLength: 40 },
    population_millions: { type: 'number', minimum: 0 },
    capital: { type: 'boolean' },
  },
  required: ['city', 'country', 'population_millions', 'capital'],
  additionalProperties: false,
};
const LOCAL_NOTE = ui.empty.querySelector('p').textContent;

let engine = null; // the one the chat uses: `local` or `remote`
let local = null; // the WorkerEngine (kept while a server is used)
let localModel = null; // { label, sampling } of the model `local` holds
let remote = null; // the RemoteEngine, while connected
let loadCtl = null; // aborts the running load (connecting to a server does)
let loadSettled = Promise.resolve();
let connecting = false;
let loading = false;
let generating = null; // AbortController of the running reply
let history = [];

// ---- markdown, rendered safely: everything is HTML-escaped first, then only
// our own tags are added (no links, no raw HTML from the model).
const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

function inline(s) {
  return escapeHtml(s)
    .replace(/`([^`\n]+)`/g, '<code>$1</code>')
    .replace(/\*\*([^*\n]+)\*\*/g, '<strong>$1</strong>')
    .replace(/(^|[\s(])\*([^*\n]+)\*(?=[\s).,!?:;]|$)/g, '$1<em>$2</em>');
}

function blocks(text) {
  const out = [];
  let list = null;
  const flush = () => { if (list) { out.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i)}</li>`).join('')}</${list.tag}>`); list = null; } };
  let para = [];
  const flushPara = () => { if (para.length) { out.push(`<p>${para.map(inline).join('<br>')}</p>`); para = []; } };
  for (const line of text.split('\n')) {
    const ul = /^\s*[-*•]\s+(.*)$/.exec(line);
    const ol = /^\s*\d+[.)]\s+(.*)$/.exec(line);
    const h = /^(#{1,4})\s+(.*)$/.exec(line);
    if (ul || ol) {
      flushPara();
      const tag = ul ? 'ul' : 'ol';
      if (!list || list.tag !== tag) { flush(); list = { tag, items: [] }; }
      list.items.push((ul ?? ol)[1]);
    } else if (h) {
      flushPara(); flush();
      out.push(`<p><strong>${inline(h[2])}</strong></p>`);
    } else if (line.trim() === '') {
      flushPara(); flush();
    } else {
      flush();
      para.push(line);
    }
  }
  flushPara(); flush();
  return out.join('');
}

export function renderMarkdown(src) {
  // Fenced code blocks (an unterminated fence while streaming is code so far).
  const parts = src.split('```');
  return parts.map((part, i) => {
    if (i % 2 === 0) return blocks(part);
    const nl = part.indexOf('\n');
    const code = nl >= 0 ? part.slice(nl + 1) : '';
    return `<pre><code>${escapeHtml(code.replace(/\n$/, ''))}</code></pre>`;
  }).join('');
}

// ---- status, errors, progress
function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
  const ready = state === 'ready';
  ui.input.disabled = !engine?.info || loading;
  ui.send.disabled = !ready;
  ui.stop.disabled = state !== 'generating';
  ui.loadButton.disabled = loading || state === 'generating';
  ui.loadDefault.disabled = loading || state === 'generating';
  // Connecting is allowed during a load: it stops the load (no need to wait
  // for the default model when the chat is to run on a server).
  ui.connectButton.disabled = connecting || state === 'generating';
  ui.disconnectButton.disabled = loading || state === 'generating';
}

const ADVICE = {
  WEBGPU_UNAVAILABLE: ['This browser cannot run the model: WebGPU is not available.',
    'Use a recent Chrome or Edge (version 113 or later) or Safari 26; in Firefox enable dom.webgpu.enabled. On Linux, start Chrome with --enable-unsafe-webgpu --enable-features=Vulkan. Check chrome://gpu for "WebGPU: Hardware accelerated".'],
  NETWORK: ['The model could not be downloaded.', 'Check the URL or repository id (and the GGUF file name), and your connection, then load it again.'],
  MODEL_FORMAT: ["This file is not a model tramontane can read.", 'Point to a Hugging Face folder with config.json and safetensors, or to a .gguf file.'],
  UNSUPPORTED: ['This model uses something tramontane does not support yet.', 'Try a Llama, Mistral, Mixtral, Qwen2 or SmolLM model.'],
  OUT_OF_MEMORY: ['The GPU ran out of memory.', 'Try a smaller or more quantized model (for example a Q4 GGUF), close other tabs, then load again.'],
  DEVICE_LOST: ['The GPU stopped responding (often: out of memory).', 'Reload the page; try a smaller model if it happens again.'],
  CONTEXT_OVERFLOW: ['The conversation no longer fits the model\'s context window.', 'Start a new chat.'],
  QUOTA: ['The browser has no room to cache the model.', 'It still works; it will be downloaded again next time.'],
  INVALID_REQUEST: ['The request was refused.', 'Check the settings: the JSON Schema (it must be valid JSON and a schema the engine compiles), max tokens, temperature, top-p.'],
};

/** What an error of a server means (null: the same as for a local model). */
function remoteAdvice(e) {
  if (e?.code === 'NETWORK') {
    if (e.status === 401 || e.status === 403) {
      return ui.apiKey.value.trim() ? ['The server refused the API key.', 'Enter the key the server was started with (tramontane serve --api-key), then connect again.']
        : ['The server needs an API key.', 'Enter it in the API key field (the server\'s --api-key), then connect again.'];
    }
    if (e.status === 0) return ['The server could not be reached.', 'Check the URL (tramontane serve prints it when it starts, http://127.0.0.1:8080 by default) and that the server is running and accepts requests from this page (CORS).'];
    if (e.status === 404) return ['There is no OpenAI-compatible server at this URL.', "Give the server's base URL, e.g. http://127.0.0.1:8080 (with or without /v1)."];
    if (e.status === 429) return ['The server is busy.', 'Wait a moment and send again.'];
    return ['The server answered with an error.', ''];
  }
  if (e?.code === 'INVALID_REQUEST') return ['The server refused the request.', 'Check the settings (max tokens, temperature, top-p).'];
  if (e?.code === 'OUT_OF_MEMORY' || e?.code === 'DEVICE_LOST') return ["The server's GPU could not run the request.", 'Start a new chat or ask for fewer tokens.'];
  if (e?.code === 'UNSUPPORTED') return ['The server cannot do this.', ''];
  return null;
}

function showError(e, fromServer = false) {
  const [title, help] = (fromServer && remoteAdvice(e)) || (ADVICE[e?.code] ?? ['Something went wrong.', '']);
  let detail = e?.message ?? String(e);
  if (e?.code === 'NETWORK' && e.status === 404 && !fromServer) detail = `Not found: ${e.url}`;
  ui.error.innerHTML = `<strong>${escapeHtml(title)}</strong>${help ? `<div>${escapeHtml(help)}</div>` : ''}<div class="hint">${escapeHtml(detail)}</div>`;
  ui.error.hidden = false;
}

const clearError = () => { ui.error.hidden = true; ui.error.textContent = ''; };
const mb = (b) => (b / 1e6).toFixed(1);

function onProgress(ev) {
  ui.progress.hidden = false;
  const labels = { download: 'Downloading', upload: 'Loading onto the GPU', compile: 'Compiling shaders', ready: 'Ready', cache: 'Note' };
  ui.progressPhase.textContent = labels[ev.phase] ?? ev.phase;
  let pct = null;
  if (ev.phase === 'download' && ev.downloadTotal) {
    ui.progressNumbers.textContent = `${mb(ev.downloaded)} / ${mb(ev.downloadTotal)} MB`;
  } else if (ev.phase === 'upload' && ev.total) {
    ui.progressNumbers.textContent = `${mb(ev.loaded)} / ${mb(ev.total)} MB`;
    pct = (100 * ev.loaded) / ev.total;
  } else if (ev.phase === 'compile' || ev.phase === 'ready') {
    pct = 100;
    ui.progressNumbers.textContent = '';
  } else if (ev.phase === 'cache') {
    ui.progressNumbers.textContent = ev.warning;
  }
  if (pct !== null) {
    ui.progressFill.style.width = `${pct.toFixed(1)}%`;
    ui.progressFill.parentElement.setAttribute('aria-valuenow', String(Math.round(pct)));
  }
  setStatus('loading', `${labels[ev.phase] ?? ev.phase}… ${ui.progressNumbers.textContent}`);
}

function describeModel(info, label) {
  const a = info.adapter ?? {};
  ui.modelName.textContent = label;
  ui.empty.querySelector('p').textContent = LOCAL_NOTE;
  ui.disconnectButton.hidden = true;
  const parts = [
    `${info.arch}${info.experts ? ` (${info.experts} experts)` : ''}, ${info.dtype.toUpperCase()}`,
    `${mb(info.weightBytes)} MB of weights, ${info.contextLength} tokens of context, ${info.kvCache} KV cache${info.splitMatrices ? `, ${info.splitMatrices} matrices split to fit the GPU's binding limit` : ''}`,
    `GPU: ${a.name || 'WebGPU adapter'}${a.backend ? ` (${a.backend})` : ''}${a.shaderF16 ? ', shader-f16' : ''}`,
  ];
  ui.modelMeta.innerHTML = parts.map(escapeHtml).join('<br>');
}

function showSampling(pick) {
  ui.temperature.value = String(pick.temperature);
  ui.topP.value = String(pick.top_p);
  ui.repetitionPenalty.value = String(pick.repetition_penalty ?? 1);
  $('temperature-out').textContent = ui.temperature.value;
  $('top-p-out').textContent = ui.topP.value;
  $('repetition-penalty-out').textContent = ui.repetitionPenalty.value;
}

/** The sampling settings start from what the model recommends
 * (generation_config.json or GGUF general.sampling.*), else from what the
 * caller knows of it (a model card), else generic values. */
function applySampling(info, known) {
  const d = info.generationDefaults ?? {};
  const fromModel = d.temperature != null || d.top_p != null;
  const pick = fromModel
    ? { temperature: d.temperature ?? FALLBACK_SAMPLING.temperature, top_p: d.top_p ?? 1, repetition_penalty: d.repetition_penalty ?? 1 }
    : known ?? FALLBACK_SAMPLING;
  showSampling(pick);
  ui.samplingSource.textContent = fromModel ? 'Sampling settings from the model (generation_config).'
    : known ? `Sampling settings from ${known.source}.` : 'The model recommends no sampling settings: generic values.';
}

function describeRemote(info) {
  ui.modelName.textContent = info.model;
  ui.modelMeta.innerHTML = [
    `Served by ${info.baseUrl}`,
    info.models.length > 1 ? `${info.models.length} models there: ${info.models.join(', ')}` : 'OpenAI-compatible API',
    'Runs on the server: what you type is sent there.',
  ].map(escapeHtml).join('<br>');
  ui.empty.querySelector('p').textContent = `Ask anything. The model runs on the server at ${info.baseUrl}: what you type is sent to the server.`;
  ui.disconnectButton.hidden = false;
  // The page cannot know what the server's model recommends.
  showSampling(FALLBACK_SAMPLING);
  ui.samplingSource.textContent = "Generic sampling settings: the page does not know what the server's model recommends.";
}

/** Chat with the OpenAI-compatible server at `url`; a failure keeps the model in use. */
async function connect(url, apiKey) {
  if (connecting) return;
  connecting = true;
  if (loadCtl) { loadCtl.abort(); await loadSettled; }
  clearError();
  loading = true;
  setStatus('loading', `Connecting to ${url}…`);
  try {
    const r = await RemoteEngine.connect(url, apiKey ? { apiKey } : {});
    generating?.abort();
    remote = r;
    engine = r;
    describeRemote(r.info);
    newChat();
    loading = false;
    connecting = false;
    setStatus('ready', `Ready: ${r.model} on ${r.baseUrl}`);
    ui.input.focus();
  } catch (e) {
    loading = false;
    connecting = false;
    showError(e, true);
    setStatus(engine?.info ? 'ready' : 'error', engine?.info ? 'Not connected: still using the previous model.' : 'No model loaded.');
  }
}

/** Back to the model on this device (loading the default one if there is none). */
function disconnect() {
  remote = null;
  clearError();
  if (local?.info) {
    engine = local;
    describeModel(local.info, localModel.label);
    applySampling(local.info, localModel.sampling);
    newChat();
    setStatus('ready', `Ready: ${localModel.label}`);
  } else {
    engine = local;
    load(DEFAULT_MODEL, DEFAULT_MODEL_OPTIONS);
  }
}

async function load(source, options = {}) {
  if (loading) return;
  clearError();
  loading = true;
  // A model for this device: the server (if any) is left.
  remote = null;
  engine = local;
  ui.disconnectButton.hidden = true;
  ui.empty.querySelector('p').textContent = LOCAL_NOTE;
  const ctl = new AbortController();
  let settle;
  loadCtl = ctl;
  loadSettled = new Promise((r) => { settle = r; });
  setStatus('loading', 'Loading the model…');
  ui.progress.hidden = false;
  ui.progressFill.style.width = '0%';
  const label = options.label ?? source;
  try {
    // The conversation's opening (the system prompt, or the template's own
    // default one) runs into the KV cache as the load ends, so the first
    // question prefills only itself.
    const prefill = { messages: ui.system.value.trim() ? [{ role: 'system', content: ui.system.value.trim() }] : [] };
    if (local) await local.load(source, { ...options, prefill, onProgress, signal: ctl.signal });
    else engine = local = await WorkerEngine.load(source, { ...options, prefill, onProgress, signal: ctl.signal });
    localModel = { label, sampling: options.sampling };
    describeModel(engine.info, label);
    applySampling(engine.info, options.sampling);
    newChat();
    loading = false;
    setStatus('ready', `Ready: ${label}`);
    ui.input.focus();
  } catch (e) {
    loading = false;
    // Stopped for a server: connect() says what happens next.
    if (!ctl.signal.aborted) showError(e);
    // A failed load leaves no model (the previous one was freed to make room).
    ui.modelName.textContent = 'No model loaded';
    ui.modelMeta.textContent = 'Load the embedded default model or another one.';
    setStatus('error', 'No model loaded.');
  } finally {
    ui.progress.hidden = true;
    if (loadCtl === ctl) loadCtl = null;
    settle();
  }
}

// ---- the conversation
function addMessage(role, text, images = []) {
  ui.empty.hidden = true;
  const li = document.createElement('li');
  li.className = `msg ${role}`;
  if (images.length) {
    const row = document.createElement('div');
    row.className = 'images';
    for (const im of images) {
      const img = document.createElement('img');
      img.src = im.url;
      img.alt = im.name;
      row.append(img);
    }
    li.append(row);
  }
  const body = document.createElement('div');
  body.className = 'body';
  if (role === 'user') body.textContent = text;
  else body.innerHTML = renderMarkdown(text);
  li.append(body);
  ui.messages.append(li);
  ui.messages.scrollTop = ui.messages.scrollHeight;
  return li;
}

// ---- images attached to the next message (vision models): sent as data:
// URLs, which every engine takes (the page's own, the worker's, a server's)
let attached = [];

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

async function attach(files) {
  for (const f of files) {
    if (!/^image\/(png|jpeg|webp)$/.test(f.type)) {
      showError(Object.assign(new Error(`${f.name}: only PNG, JPEG and WebP images can be attached`), { code: 'INVALID_REQUEST' }));
      continue;
    }
    attached.push({ name: f.name, url: await readDataUrl(f) });
  }
  showAttached();
}

function showAttached() {
  ui.attachments.replaceChildren(...attached.map((im, i) => {
    const fig = document.createElement('figure');
    const img = document.createElement('img');
    img.src = im.url;
    img.alt = im.name;
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'ghost';
    remove.textContent = '×';
    remove.title = `Remove ${im.name}`;
    remove.addEventListener('click', () => { attached.splice(i, 1); showAttached(); });
    fig.append(img, remove);
    return fig;
  }));
  ui.attachments.hidden = attached.length === 0;
}

function newChat() {
  generating?.abort();
  history = [];
  ui.messages.replaceChildren();
  ui.empty.hidden = false;
  // The KV cache is kept: a request reuses only the tokens its prompt opens
  // with, so the new chat reuses the prefilled opening (system prompt) and
  // nothing of the old conversation.
}

/** The settings' JSON Schema: null when empty; throws when it is not JSON. */
function answerSchema() {
  const src = ui.jsonSchema.value.trim();
  if (!src) return null;
  try {
    return JSON.parse(src);
  } catch (e) {
    const err = new Error(`The JSON Schema in the settings is not valid JSON (${e.message}). Fix it, or empty it for free text.`);
    err.code = 'INVALID_REQUEST';
    throw err;
  }
}

/** A JSON answer, parsed, as a formatted block (falls back to the text). */
function showParsed(body, reply) {
  let value;
  try { value = JSON.parse(reply); } catch { return false; }
  body.innerHTML = `<div class="parsed-label">Parsed object</div><div class="parsed"><pre><code>${escapeHtml(JSON.stringify(value, null, 2))}</code></pre></div>`;
  body.closest('li').dataset.parsed = 'true';
  return true;
}

async function send() {
  const text = ui.input.value.trim();
  if (!text || !engine?.info || generating || loading) return;
  clearError();
  let schema;
  try { schema = answerSchema(); } catch (e) { showError(e); return; }
  ui.input.value = '';
  const images = attached;
  attached = [];
  showAttached();
  // With images: OpenAI's content parts, the images first.
  const content = images.length ? [...images.map((im) => ({ type: 'image_url', image_url: { url: im.url } })), { type: 'text', text }] : text;
  history.push({ role: 'user', content });
  addMessage('user', text, images);
  const li = addMessage('assistant', '');
  li.setAttribute('aria-busy', 'true');
  const body = li.querySelector('.body');
  const ctl = new AbortController();
  generating = ctl;
  setStatus('generating', 'Generating…');
  let reply = '';
  let usage = null;
  let stopped = false;
  const fromServer = engine === remote;
  const t0 = performance.now();
  try {
    const messages = [];
    if (ui.system.value.trim()) messages.push({ role: 'system', content: ui.system.value.trim() });
    messages.push(...history);
    const stream = engine.chat.completions.create({
      messages, stream: true, signal: ctl.signal,
      temperature: Number(ui.temperature.value), top_p: Number(ui.topP.value), repetition_penalty: Number(ui.repetitionPenalty.value),
      max_tokens: Math.max(1, Number(ui.maxTokens.value) || 256), stream_options: { include_usage: true },
      ...(schema ? { response_format: { type: 'json_schema', json_schema: { name: 'answer', schema } } } : {}),
    });
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices[0]?.delta?.content;
      if (delta) {
        reply += delta;
        // JSON streams as plain text; it is shown parsed once complete.
        if (schema) body.textContent = reply;
        else body.innerHTML = renderMarkdown(reply);
        ui.messages.scrollTop = ui.messages.scrollHeight;
      }
    }
    if (schema) showParsed(body, reply);
  } catch (e) {
    if (e?.code === 'ABORTED') stopped = true;
    else showError(e, fromServer);
  } finally {
    generating = null;
    li.removeAttribute('aria-busy');
  }
  history.push({ role: 'assistant', content: reply });
  const stats = document.createElement('div');
  stats.className = 'stats';
  if (usage?.extra) {
    const x = usage.extra;
    // Prompt tokens the KV cache held already (the prefilled opening, earlier turns).
    const cached = usage.prompt_tokens_details?.cached_tokens;
    stats.textContent = `${usage.completion_tokens} tokens · prefill ${x.prefill_tokens_per_s.toFixed(1)} tok/s · decode ${x.decode_tokens_per_s.toFixed(1)} tok/s · first token ${x.time_to_first_token_s.toFixed(2)} s`
      + (cached ? ` · ${cached} of ${usage.prompt_tokens} prompt tokens cached` : '');
  } else if (usage) {
    // A server that reports no speeds (usage.extra): the time seen here.
    stats.textContent = `${usage.completion_tokens} tokens · ${((performance.now() - t0) / 1000).toFixed(2)} s`;
  } else {
    stats.textContent = stopped ? 'stopped' : 'failed';
  }
  li.append(stats);
  setStatus(engine?.info ? 'ready' : 'error', stopped ? 'Stopped.' : 'Ready.');
  ui.input.focus();
}

// ---- wiring
ui.attach.addEventListener('click', () => ui.imageFile.click());
ui.imageFile.addEventListener('change', () => { attach([...ui.imageFile.files]); ui.imageFile.value = ''; });
ui.composer.addEventListener('dragover', (e) => { if (e.dataTransfer?.types?.includes('Files')) { e.preventDefault(); ui.composer.classList.add('dropping'); } });
ui.composer.addEventListener('dragleave', () => ui.composer.classList.remove('dropping'));
ui.composer.addEventListener('drop', (e) => {
  e.preventDefault();
  ui.composer.classList.remove('dropping');
  attach([...(e.dataTransfer?.files ?? [])]);
});
ui.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
});
$('composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
ui.stop.addEventListener('click', () => generating?.abort());
ui.newChat.addEventListener('click', () => { newChat(); setStatus(engine?.info ? 'ready' : 'idle', 'New chat.'); ui.input.focus(); });
ui.loadForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const source = ui.source.value.trim();
  if (!source) { ui.source.focus(); return; }
  const gguf = ui.ggufFile.value.trim();
  const mmproj = ui.mmproj.value.trim();
  const options = gguf ? { ggufFile: gguf, label: `${source}/${gguf}` } : {};
  if (mmproj) Object.assign(options, { mmproj, label: `${options.label ?? source} + ${mmproj}` });
  load(source, options);
});
ui.loadDefault.addEventListener('click', () => load(DEFAULT_MODEL, DEFAULT_MODEL_OPTIONS));
ui.remoteForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const url = ui.serverUrl.value.trim();
  if (!url) { if (remote) disconnect(); else ui.serverUrl.focus(); return; }
  connect(url, ui.apiKey.value.trim());
});
ui.disconnectButton.addEventListener('click', () => disconnect());
for (const [input, out] of [[ui.temperature, $('temperature-out')], [ui.topP, $('top-p-out')], [ui.repetitionPenalty, $('repetition-penalty-out')]]) {
  input.addEventListener('input', () => { out.textContent = input.value; });
}
ui.jsonExample.addEventListener('click', () => {
  ui.jsonSchema.value = JSON.stringify(EXAMPLE_SCHEMA, null, 2);
  ui.jsonSchema.dispatchEvent(new Event('input'));
});
ui.jsonSchema.addEventListener('input', () => {
  let msg = '';
  try { if (answerSchema()) msg = 'Answers will be JSON valid for this schema.'; } catch (e) { msg = e.message; }
  ui.jsonSchemaStatus.textContent = msg;
});
ui.toggleSettings.addEventListener('click', () => {
  const open = ui.settings.classList.toggle('open');
  ui.toggleSettings.setAttribute('aria-expanded', String(open));
});

const startServer = new URLSearchParams(location.search).get('server');
if (startServer) {
  ui.serverUrl.value = startServer;
  connect(startServer, '');
} else {
  load(DEFAULT_MODEL, DEFAULT_MODEL_OPTIONS);
}
