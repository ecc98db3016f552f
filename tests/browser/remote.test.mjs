// RemoteEngine and createEngine in headless Chromium, against `tramontane serve`
// (the native OpenAI-compatible server, built here with cargo) on the tiny
// Llama fixture, and against a small mock server in this file for what the
// real one does not do (llama-server's shapes, broken streams, no /tokenize).
// Also the demo page's "Server URL" field. Nothing here is skipped: a missing
// `serve` subcommand fails the tests that need it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../scripts/server.mjs';
import { launch } from './browser.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIX = path.join(ROOT, 'tests/fixtures');
const BIN = path.join(ROOT, 'target/debug/tramontane');
const REF = JSON.parse(fs.readFileSync(path.join(FIX, 'llama_tiny/reference.json'), 'utf8'));
const GREEDY = { temperature: 0, ignore_eos: true, max_tokens: 16 };
const KEY = 'sk-test-7f3a';

let statics, browser, nogpu, serve, locked, mock;
const children = [];
const tmpDirs = [];

// ---- tramontane serve

/** Starts `tramontane serve` on the tiny Llama on a free port; resolves when it
 * says `listening on http://HOST:PORT` (its stderr is kept for failures). */
function startServe(extra = []) {
  const xdg = fs.mkdtempSync(path.join(os.tmpdir(), 'tramontane-xdg-')); // mode 0700
  tmpDirs.push(xdg);
  const child = spawn(BIN, ['serve', '--model', path.join(FIX, 'llama_tiny'), '--port', '0', ...extra], {
    env: { ...process.env, XDG_RUNTIME_DIR: xdg }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let err = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tramontane serve did not say "listening on" in 120 s:\n${err}`)), 120000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d) => {
      err = (err + d).slice(-8000);
      // A whole line: stderr may come in pieces (`http://127` then `.0.0.1:…`).
      const m = /listening on (http:\/\/\S+)\r?\n/.exec(err);
      if (m && timer) {
        clearTimeout(timer);
        resolve({
          url: m[1].replace(/\/$/, ''),
          stderr: () => `${child.exitCode !== null || child.signalCode ? `(exited: ${child.exitCode ?? child.signalCode})\n` : ''}${err}`,
          close: () => new Promise((r) => { if (child.exitCode !== null) r(); else { child.once('exit', r); child.kill('SIGTERM'); } }),
        });
      }
    });
    child.once('exit', (code, sig) => { clearTimeout(timer); reject(new Error(`tramontane serve exited (${code ?? sig}) before listening:\n${err}`)); });
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

// ---- a mock OpenAI-compatible server
//
// The first path segment picks how it behaves, so one server plays several:
//   /ours/...     tramontane serve's shapes (token_ids, usage.extra, our error codes)
//   /llama/...    llama-server's: `timings` instead of usage.extra, no token_ids,
//                 an `error:` event in a stream whose prompt has the id 666
//   /plain/...    an OpenAI-like server without /tokenize or /detokenize
//   /broken/...   streams stop (the socket is destroyed) after two chunks
//   /slow/...     200 ms between streamed chunks
// A "generated" token is t(prev) = (prev * 7 + 3) % 1000, its text ` w<id>`.
function startMock() {
  const log = [];
  const server = http.createServer(async (req, res) => {
    res.setHeader('access-control-allow-origin', '*');
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { 'access-control-allow-methods': 'GET, POST', 'access-control-allow-headers': req.headers['access-control-request-headers'] ?? '' }).end();
      return;
    }
    const [, flavor, ...rest] = new URL(req.url, 'http://x').pathname.split('/');
    const route = '/' + rest.join('/');
    let body = '';
    for await (const c of req) body += c;
    const entry = { method: req.method, flavor, route, auth: req.headers.authorization ?? null, body: body ? JSON.parse(body) : null, closedEarly: false };
    log.push(entry);
    const json = (status, x) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(x));
    const fail = (status, message, code = null, type = 'invalid_request_error') => json(status, { error: { message, type, param: null, code } });
    if (flavor === 'keyed' && req.headers.authorization !== `Bearer ${KEY}`) return fail(401, 'Invalid API key: sk-…', 'invalid_api_key', 'authentication_error');
    if (route === '/v1/models') return json(200, { object: 'list', data: [{ id: `mock-${flavor}`, object: 'model', owned_by: 'mock', created: 1 }, { id: 'other', object: 'model', owned_by: 'mock', created: 2 }] });
    if (route === '/tokenize' || route === '/detokenize') {
      if (flavor === 'plain') return json(404, { error: { message: 'File Not Found', type: 'not_found_error', code: 404 } });
      if (route === '/tokenize') return json(200, { tokens: [...entry.body.content].map((c) => c.charCodeAt(0)).concat(entry.body.add_special ? [1] : []) });
      return json(200, { content: entry.body.tokens.map((t) => String.fromCharCode(t)).join('') });
    }
    const chat = route === '/v1/chat/completions';
    if (!chat && route !== '/v1/completions') return fail(404, `no route ${route}`, null, 'not_found_error');
    const q = entry.body;
    const prompt = chat ? q.messages.map((m) => String(m.content)).join('').split('').map((c) => c.charCodeAt(0)) : typeof q.prompt === 'string' ? [1, ...[...q.prompt].map((c) => c.charCodeAt(0))] : q.prompt;
    if (prompt.length > 200) return fail(400, `the prompt has ${prompt.length} tokens, the context holds 200`, flavor === 'llama' ? 400 : 'CONTEXT_OVERFLOW', flavor === 'llama' ? 'exceed_context_size_error' : 'invalid_request_error');
    const n = q.max_tokens ?? 8;
    const ids = [];
    for (let prev = prompt.at(-1) ?? 0; ids.length < n; prev = ids.at(-1)) ids.push((prev * 7 + 3) % 1000);
    const pieces = ids.map((t) => ` w${t}`);
    const usage = { prompt_tokens: prompt.length, completion_tokens: n, total_tokens: prompt.length + n };
    const extra = { prefilled_tokens: prompt.length, prefill_tokens_per_s: 100, decode_tokens_per_s: 50, time_to_first_token_s: 0.01, e2e_latency_s: 0.2 };
    const timings = { prompt_n: prompt.length, prompt_ms: 10, prompt_per_second: 500, predicted_n: n, predicted_ms: 160, predicted_per_second: 50 };
    const base = { id: 'x-1', created: 1, model: q.model };
    const ours = flavor !== 'llama';
    if (!q.stream) {
      const choice = chat ? { index: 0, message: { role: 'assistant', content: pieces.join('') }, finish_reason: 'length' } : { index: 0, text: pieces.join(''), finish_reason: 'length' };
      return json(200, { ...base, object: chat ? 'chat.completion' : 'text_completion', choices: [choice], usage: ours ? { ...usage, extra } : usage, ...(ours ? { token_ids: ids } : { timings }) });
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.on('close', () => { if (!res.writableFinished) entry.closedEarly = true; });
    const send = (x) => res.write(`data: ${JSON.stringify(x)}\r\n\r\n`);
    const object = chat ? 'chat.completion.chunk' : 'text_completion';
    res.write(': keep-alive\n\n');
    for (let i = 0; i < n; i++) {
      if (res.destroyed) return;
      if (flavor === 'llama' && prompt.includes(666) && i === 1) {
        res.end(`error: ${JSON.stringify({ code: 500, message: 'the model fell over', type: 'server_error' })}\n\n`);
        return;
      }
      if (flavor === 'broken' && i === 2) { await new Promise((r) => setTimeout(r, 200)); res.socket.destroy(); return; }
      const choice = chat ? { index: 0, delta: i === 0 ? { role: 'assistant', content: pieces[i] } : { content: pieces[i] }, finish_reason: null } : { index: 0, text: pieces[i], finish_reason: null };
      send({ ...base, object, choices: [choice], usage: null });
      if (flavor === 'slow') await new Promise((r) => setTimeout(r, 200));
    }
    send({ ...base, object, choices: [chat ? { index: 0, delta: {}, finish_reason: 'length' } : { index: 0, text: '', finish_reason: 'length' }], usage: null, ...(ours ? {} : { timings }) });
    if (q.stream_options?.include_usage) send({ ...base, object, choices: [], usage: ours ? { ...usage, extra } : usage });
    res.end('data: [DONE]\n\n');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    resolve({ url: `http://127.0.0.1:${server.address().port}`, log, close: () => new Promise((r) => { server.close(r); server.closeAllConnections(); }) });
  }));
}

// ---- the browser side

before(async () => {
  mock = await startMock();
  statics = await startServer({ mounts: { '/': path.join(ROOT, 'web'), '/pkg/': path.join(ROOT, 'pkg'), '/models/': path.join(ROOT, 'models'), '/tests/': path.join(ROOT, 'tests') } });
  browser = await launch();
  nogpu = await launch({ webgpu: false });
});

after(async () => {
  await browser?.close();
  await nogpu?.close();
  await statics?.close();
  await mock?.close();
  await Promise.all(children.map((c) => new Promise((r) => {
    if (c.exitCode !== null || c.signalCode !== null) { r(); return; }
    c.once('exit', r);
    c.kill('SIGTERM');
  })));
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** The real server (and one with an API key), started once for the tests that need it. */
let serving = null;
async function real() {
  await (serving ??= (async () => {
    // Fresh from this tree: built as `cargo test` builds it (the binary its
    // tests use, with the dev-dependencies' features), so that after
    // scripts/test.sh's `cargo test` this is a no-op; a plain `cargo build`
    // would resolve other features and rebuild half the dependencies.
    execFileSync('cargo', ['test', '--locked', '--no-run'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    const help = (() => { try { return execFileSync(BIN, ['serve', '--help'], { encoding: 'utf8' }); } catch (e) { return `${e.stdout ?? ''}${e.stderr ?? ''}`; } })();
    assert.match(help, /--api-key/, `${BIN} has no working \`serve\` subcommand:\n${help}`);
    [serve, locked] = await Promise.all([startServe(), startServe(['--api-key', KEY])]);
  })());
}

/** A test against the real servers: a failure shows what they printed. */
function serveTest(name, fn) {
  test(`serve: ${name}`, { timeout: 900000 }, async () => {
    await real();
    try {
      await fn();
    } catch (e) {
      for (const [n, s] of [['serve', serve], ['serve --api-key', locked]]) e.message += `\n--- stderr of tramontane ${n} (last 3000 characters):\n${s.stderr().slice(-3000)}`;
      throw e;
    }
  });
}

async function page(b = browser) {
  const p = await (await b.newContext()).newPage();
  p.on('pageerror', (e) => console.error('page error:', e.message));
  await p.goto(statics.url + 'tests/browser/blank.html');
  return p;
}

// Evaluate `fn(T, arg)` in the page with the package imported as `T`; a thrown
// error comes back as `{ thrown: { code, message, url, status } }`.
async function run(p, fn, arg) {
  return p.evaluate(async ([src, a]) => {
    const T = await import('/pkg/index.js');
    // A fetch that counts what the engine sends.
    globalThis.sent ??= [];
    a = { ...a, fetch: (u, init) => { globalThis.sent.push({ url: String(u), method: init?.method ?? 'GET' }); return fetch(u, init); } };
    const f = new Function('T', 'a', `return (${src})(T, a);`);
    try { return await f(T, a); } catch (e) { return { thrown: { code: e.code, message: e.message, url: e.url, status: e.status, name: e.name } }; }
  }, [fn.toString(), arg]);
}

const ok = (got) => assert.ok(!got?.thrown, JSON.stringify(got?.thrown));

// ---- against tramontane serve

serveTest('greedy completions over HTTP equal the transformers reference (token_ids)', async () => {
  const p = await page();
  const got = await run(p, async (T, a) => {
    const e = await T.RemoteEngine.connect(a.url, { fetch: a.fetch });
    const out = [];
    for (const ids of a.prompts) out.push(await e.completions.create({ prompt: ids, ...a.greedy }));
    const health = await (await fetch(a.root + '/health')).json();
    return { info: e.info, kind: e.kind, model: e.model, out, health, sent: globalThis.sent };
  }, { url: serve.url + '/v1', root: serve.url, prompts: REF.prompts.map((x) => x.input_ids), greedy: GREEDY });
  ok(got);
  assert.equal(got.kind, 'remote');
  assert.equal(got.info.remote, true);
  assert.equal(got.info.baseUrl, serve.url, 'a trailing /v1 is the same server');
  assert.equal(got.info.model, got.model);
  assert.ok(got.model.length > 0 && got.info.models.includes(got.model));
  assert.deepEqual(got.health, { status: 'ok' });
  got.out.forEach((r, i) => {
    assert.deepEqual(r.token_ids, REF.prompts[i].greedy.new_ids, `prompt ${REF.prompts[i].name}`);
    assert.equal(r.object, 'text_completion');
    assert.equal(r.model, got.model);
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(typeof r.choices[0].text, 'string');
    assert.equal(r.usage.prompt_tokens, REF.prompts[i].input_ids.length);
    assert.equal(r.usage.completion_tokens, 16);
    assert.ok(r.usage.extra.decode_tokens_per_s > 0, JSON.stringify(r.usage));
  });
  // One GET /v1/models to connect, then one POST per request, each naming the model.
  assert.deepEqual(got.sent.map((s) => `${s.method} ${s.url.slice(serve.url.length)}`), ['GET /v1/models', ...REF.prompts.map(() => 'POST /v1/completions')]);
  await p.context().close();
});

serveTest('streamed chunks add up to the non-streamed text; chat works both ways', async () => {
  const p = await page();
  const got = await run(p, async (T, a) => {
    const e = await T.RemoteEngine.connect(a.url);
    const whole = await e.completions.create({ prompt: a.ids, ...a.greedy });
    let text = '', n = 0, usage = null, finish = null, last = null;
    for await (const c of e.completions.create({ prompt: a.ids, ...a.greedy, stream: true })) {
      last = c;
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) { text += ch.text; n++; if (ch.finish_reason) finish = ch.finish_reason; }
    }
    const messages = [{ role: 'user', content: 'Where is the lighthouse?' }];
    const chat = await e.chat.completions.create({ messages, ...a.greedy, max_tokens: 8 });
    const chunks = [];
    for await (const c of e.chat.completions.create({ messages, ...a.greedy, max_tokens: 8, stream: true })) chunks.push(c);
    const streamed = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    const tokens = await e.tokenize(a.text);
    const back = await e.detokenize(a.ids);
    return { whole, text, n, usage, finish, lastChoices: last.choices.length, chat, chunks, streamed, tokens, back };
  }, { url: serve.url, ids: REF.prompts[1].input_ids, text: REF.prompts[1].text, greedy: GREEDY });
  ok(got);
  assert.equal(got.text, got.whole.choices[0].text);
  assert.ok(got.n > 3, `several chunks: ${got.n}`);
  assert.equal(got.finish, 'length');
  assert.equal(got.lastChoices, 0, 'a usage chunk last (include_usage is the default, as in Engine)');
  assert.equal(got.usage.completion_tokens, 16);
  assert.equal(got.chat.object, 'chat.completion');
  assert.equal(got.chat.choices[0].message.role, 'assistant');
  assert.equal(got.chat.usage.completion_tokens, 8);
  assert.equal(got.chat.token_ids.length, 8);
  assert.equal(got.chunks[0].object, 'chat.completion.chunk');
  assert.equal(got.chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(got.streamed, got.chat.choices[0].message.content);
  assert.deepEqual(got.tokens, REF.prompts[1].input_ids, 'POST /tokenize at the server root');
  assert.equal(got.back, REF.prompts[1].text);
  await p.context().close();
});

serveTest('an abort mid-stream rejects ABORTED and the next request still works', async () => {
  const p = await page();
  const got = await run(p, async (T, a) => {
    const e = await T.RemoteEngine.connect(a.url);
    const ctl = new AbortController();
    let seen = 0, err = null;
    try {
      for await (const c of e.completions.create({ prompt: a.ids, temperature: 0, ignore_eos: true, max_tokens: 480, stream: true, signal: ctl.signal })) {
        if (c.choices[0]?.text && ++seen === 2) ctl.abort();
      }
    } catch (x) { err = x.code; }
    // Non-streamed: aborted while waiting for the reply.
    const ctl2 = new AbortController();
    const pending = e.completions.create({ prompt: a.ids, temperature: 0, ignore_eos: true, max_tokens: 480, signal: ctl2.signal });
    setTimeout(() => ctl2.abort(), 5);
    const err2 = await pending.then(() => 'finished', (x) => x.code);
    const after = await e.completions.create({ prompt: a.ids, ...a.greedy });
    return { seen, err, err2, after: after.token_ids };
  }, { url: serve.url, ids: REF.prompts[0].input_ids, greedy: GREEDY });
  ok(got);
  assert.equal(got.err, 'ABORTED');
  assert.equal(got.seen, 2);
  assert.equal(got.err2, 'ABORTED');
  assert.deepEqual(got.after, REF.prompts[0].greedy.new_ids);
  await p.context().close();
});

serveTest('a wrong or missing API key is NETWORK 401; a bad field is the server\'s 400: INVALID_REQUEST naming it', async () => {
  const p = await page();
  const got = await run(p, async (T, a) => {
    const r = {};
    const code = (x) => ({ code: x.code, status: x.status, url: x.url, message: x.message });
    r.none = await T.RemoteEngine.connect(a.locked).then(() => 'connected', code);
    r.wrong = await T.RemoteEngine.connect(a.locked, { apiKey: 'sk-wrong' }).then(() => 'connected', code);
    const e = await T.RemoteEngine.connect(a.locked, { apiKey: a.key, fetch: a.fetch });
    r.right = (await e.completions.create({ prompt: a.ids, ...a.greedy })).token_ids;
    const before = globalThis.sent.length;
    r.bad = [];
    for (const bad of [{ temperature: -1 }, { top_p: 0 }, { max_tokens: 1.5 }, { stop: [3] }, { seed: -2 }, { top_logprobs: 99 }]) {
      r.bad.push(await e.completions.create({ prompt: a.ids, ...bad }).then(() => 'sent', code));
    }
    r.badPrompt = await e.completions.create({ prompt: [1, -1] }).then(() => 'sent', code);
    r.badChat = await e.chat.completions.create({ messages: [] }).then(() => 'sent', code);
    const s = e.completions.create({ prompt: a.ids, temperature: NaN, stream: true });
    r.badStream = await (async () => { try { for await (const c of s) void c; return 'sent'; } catch (x) { return code(x); } })();
    const pre = new AbortController();
    pre.abort();
    r.preAborted = await e.completions.create({ prompt: a.ids, signal: pre.signal }).then(() => 'sent', code);
    r.sentForBad = globalThis.sent.length - before;
    // The server's own checks: an id past the vocabulary, a prompt past the context.
    r.serverBad = await e.completions.create({ prompt: [1, 999999999], max_tokens: 2 }).then(() => 'sent', code);
    r.overflow = await e.completions.create({ prompt: Array(600).fill(504), max_tokens: 2 }).then(() => 'sent', code);
    return r;
  }, { locked: locked.url, key: KEY, ids: REF.prompts[0].input_ids, greedy: GREEDY });
  ok(got);
  for (const k of ['none', 'wrong']) {
    assert.equal(got[k].code, 'NETWORK', k);
    assert.equal(got[k].status, 401, k);
    assert.equal(got[k].url, `${locked.url}/v1/models`);
  }
  assert.match(got.none.message, /needs an API key/);
  assert.match(got.wrong.message, /refused the API key/);
  assert.ok(!got.wrong.message.includes('sk-wrong'), 'the key is not in the message');
  assert.deepEqual(got.right, REF.prompts[0].greedy.new_ids);
  const names = ['temperature', 'top_p', 'max_tokens', 'stop', 'seed', 'top_logprobs'];
  // The fields are the server's to check (one protocol: crates/tramontane/src/openai).
  got.bad.forEach((b, i) => {
    assert.equal(b.code, 'INVALID_REQUEST', names[i]);
    assert.equal(b.status, 400, names[i]);
    assert.match(b.message, new RegExp(`^${names[i]} `));
  });
  assert.equal(got.badPrompt.code, 'INVALID_REQUEST');
  assert.equal(got.badChat.code, 'INVALID_REQUEST');
  // What JSON cannot carry (NaN) is refused before sending, by name.
  assert.match(got.badStream.message, /^temperature /);
  assert.equal(got.preAborted.code, 'ABORTED');
  assert.equal(got.sentForBad, got.bad.length + 2, 'the bad fields reached the server; NaN and the pre-aborted request did not');
  assert.equal(got.serverBad.code, 'INVALID_REQUEST', JSON.stringify(got.serverBad));
  assert.equal(got.serverBad.status, 400);
  assert.equal(got.overflow.code, 'CONTEXT_OVERFLOW', JSON.stringify(got.overflow));
  await p.context().close();
});

serveTest('createEngine in a browser without WebGPU picks the server and says why', async () => {
  const p = await page(nogpu);
  const got = await run(p, async (T, a) => {
    const e = await T.createEngine('/tests/fixtures/llama_tiny/', { remote: { baseUrl: a.url, apiKey: a.key } });
    const r = await e.completions.create({ prompt: a.ids, ...a.greedy });
    let local = null;
    try { await T.createEngine('/tests/fixtures/llama_tiny/'); } catch (x) { local = x.code; }
    const unsupported = await e.load('/x').then(() => 'loaded', (x) => x.code);
    const prompt = await e.chatPrompt({ messages: [{ role: 'user', content: 'hi' }] }).then(() => 'rendered', (x) => x.code);
    await e.resetChat();
    await e.unload();
    const adapter = await globalThis.navigator.gpu?.requestAdapter().catch(() => null);
    return { kind: e.kind, reason: e.reason, isRemote: e instanceof T.RemoteEngine, ids: r.token_ids, adapter: !!adapter, local, unsupported, prompt };
  }, { url: locked.url, key: KEY, ids: REF.prompts[2].input_ids, greedy: GREEDY });
  ok(got);
  assert.equal(got.adapter, false, 'this browser has no WebGPU adapter');
  assert.equal(got.kind, 'remote');
  assert.ok(got.isRemote);
  assert.match(got.reason, /^WebGPU unavailable/);
  assert.ok(got.reason.includes(locked.url), got.reason);
  assert.deepEqual(got.ids, REF.prompts[2].greedy.new_ids);
  assert.equal(got.local, 'WEBGPU_UNAVAILABLE', 'without `remote` there is no choice to make');
  assert.equal(got.unsupported, 'UNSUPPORTED');
  assert.equal(got.prompt, 'UNSUPPORTED');
  await p.context().close();
});

serveTest('createEngine with WebGPU: local when the model fits, the server when it is over localMaxGpuBytes', async () => {
  const p = await page();
  const got = await run(p, async (T, a) => {
    const remote = { baseUrl: a.url };
    const here = await T.createEngine('/tests/fixtures/llama_tiny/', { remote, useCache: false });
    const hereIds = (await here.completions.create({ prompt: a.ids, ...a.greedy })).token_ids;
    const info = { kind: here.kind, reason: here.reason, isEngine: here instanceof T.Engine, gpuBytes: here.info.gpuBytes };
    await here.unload();
    const there = await T.createEngine('/tests/fixtures/llama_tiny/', { remote, useCache: false, localMaxGpuBytes: 1000 });
    const thereIds = (await there.completions.create({ prompt: a.ids, ...a.greedy })).token_ids;
    const notFound = await T.createEngine('/tests/fixtures/no-such-model/', { remote }).then((e) => e.kind, (x) => x.code);
    return { info, hereIds, kind: there.kind, reason: there.reason, thereIds, notFound };
  }, { url: serve.url, ids: REF.prompts[3].input_ids, greedy: GREEDY });
  ok(got);
  assert.equal(got.info.kind, 'local');
  assert.ok(got.info.isEngine);
  assert.match(got.info.reason, /fits this device .*running it here/);
  assert.equal(got.kind, 'remote');
  assert.match(got.reason, /^the model does not fit this device \(OUT_OF_MEMORY: .*\): using the server at /);
  assert.deepEqual(got.hereIds, REF.prompts[3].greedy.new_ids, 'local');
  assert.deepEqual(got.thereIds, REF.prompts[3].greedy.new_ids, 'remote');
  assert.equal(got.notFound, 'NETWORK', 'a model that is not there is an error, not a reason to go remote');
  await p.context().close();
});

serveTest('the demo page chats with a server given in its Server URL field', async () => {
  // No WebGPU: the embedded model cannot load, the server is the way to chat.
  const p = await (await nogpu.newContext()).newPage();
  p.on('pageerror', (e) => console.error('page error:', e.message));
  await p.goto(statics.url);
  await p.waitForSelector('#error:not([hidden])', { timeout: 30000 });
  assert.match(await p.textContent('#error'), /WebGPU is not available/);
  await p.fill('#server-url', locked.url);
  await p.click('#connect-button');
  await p.waitForSelector('#error:not([hidden])', { timeout: 30000 });
  assert.match(await p.textContent('#error'), /refused|API key/i);
  await p.fill('#api-key', KEY);
  await p.click('#connect-button');
  await p.waitForFunction(() => document.querySelector('#status').dataset.state === 'ready', null, { timeout: 30000 });
  assert.equal(await p.isHidden('#error'), true);
  assert.match(await p.textContent('#model-meta'), new RegExp(locked.url.replace(/[.:/]/g, '\\$&')));
  assert.match(await p.textContent('#empty'), /sent to the server/);
  await p.fill('#max-tokens', '12');
  await p.fill('#input', 'Hello there');
  await p.press('#input', 'Enter');
  await p.waitForFunction(() => document.querySelector('#messages li.assistant:last-of-type .stats'), null, { timeout: 60000 });
  const reply = await p.textContent('#messages li.assistant:last-of-type .body');
  assert.ok(reply.trim().length > 0, 'a reply');
  const stats = await p.textContent('#messages li.assistant:last-of-type .stats');
  assert.match(stats, /^12 tokens · prefill [\d.]+ tok\/s · decode [\d.]+ tok\/s · first token [\d.]+ s$/);
  await p.screenshot({ path: path.join(ROOT, 'target/artifacts/demo-remote.png') }).catch(() => {});
  await p.context().close();
});

// ---- against the mock: what tramontane serve does not show

test('mock: llama-server shapes, no /tokenize, our error codes, base URLs with and without /v1', { timeout: 120000 }, async () => {
  const p = await page();
  const got = await run(p, async (T, a) => {
    const code = (x) => ({ code: x.code, status: x.status, url: x.url, message: x.message });
    const r = {};
    const llama = await T.RemoteEngine.connect(`${a.url}/llama/`, { model: 'other', headers: { 'X-Trace': '1' } });
    r.model = llama.model;
    r.whole = await llama.completions.create({ prompt: [5], max_tokens: 3 });
    const chunks = [];
    for await (const c of llama.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, stream: true })) chunks.push(c);
    r.chunks = chunks;
    r.overflow = await llama.completions.create({ prompt: Array(300).fill(1) }).then(() => 'sent', code);
    r.streamError = await (async () => { try { for await (const c of llama.completions.create({ prompt: [666], stream: true })) void c; return 'ended'; } catch (x) { return code(x); } })();
    r.tokens = await llama.tokenize('AB', { addSpecial: true });
    r.text = await llama.detokenize([72, 105]);
    const plain = await T.RemoteEngine.connect(`${a.url}/plain/v1`);
    r.plainModel = plain.model;
    r.noTokenize = await plain.tokenize('x').then(() => 'tokenized', code);
    r.noDetokenize = await plain.detokenize([1]).then(() => 'detokenized', code);
    const ours = await T.RemoteEngine.connect(`${a.url}/ours`);
    r.ours = await ours.completions.create({ prompt: 'hi', max_tokens: 2 });
    r.oursOverflow = await ours.chat.completions.create({ messages: [{ role: 'user', content: 'x'.repeat(300) }] }).then(() => 'sent', code);
    r.noUsage = [];
    for await (const c of ours.completions.create({ prompt: [1], max_tokens: 2, stream: true, stream_options: { include_usage: false } })) r.noUsage.push(c);
    return r;
  }, { url: mock.url });
  ok(got);
  assert.equal(got.model, 'other', 'options.model wins over the first listed');
  assert.deepEqual(got.whole.usage.extra, { prefilled_tokens: 1, prefill_tokens_per_s: 500, decode_tokens_per_s: 50, time_to_first_token_s: 0.01, e2e_latency_s: 0.17 });
  assert.equal(got.whole.choices[0].logprobs, null);
  assert.equal(got.whole.token_ids, undefined, 'llama-server sends no token_ids');
  assert.ok(got.chunks.slice(0, -1).every((c) => !('usage' in c)), 'no usage: null on chunks');
  assert.equal(got.chunks.at(-1).choices.length, 0);
  assert.equal(got.chunks.at(-1).usage.extra.decode_tokens_per_s, 50, 'timings of the last chunk');
  assert.equal(got.overflow.code, 'CONTEXT_OVERFLOW');
  assert.equal(got.overflow.status, 400);
  assert.equal(got.streamError.code, 'NETWORK');
  assert.equal(got.streamError.status, 500);
  assert.match(got.streamError.message, /the model fell over/);
  assert.deepEqual(got.tokens, [65, 66, 1]);
  assert.equal(got.text, 'Hi');
  assert.equal(got.plainModel, 'mock-plain');
  assert.equal(got.noTokenize.code, 'UNSUPPORTED');
  assert.equal(got.noTokenize.url, `${mock.url}/plain/tokenize`, '/tokenize lives at the root, not under /v1');
  assert.equal(got.noDetokenize.code, 'UNSUPPORTED');
  assert.deepEqual(got.ours.token_ids.length, 2);
  assert.equal(got.ours.usage.extra.decode_tokens_per_s, 50);
  assert.equal(got.oursOverflow.code, 'CONTEXT_OVERFLOW');
  assert.equal(got.noUsage.at(-1).choices[0].finish_reason, 'length', 'include_usage: false is passed on');
  const sent = mock.log.filter((x) => x.method === 'POST' && x.flavor === 'llama' && x.route === '/v1/completions');
  assert.ok(sent.every((x) => x.body.model === 'other'), 'model in every request');
  assert.ok(mock.log.filter((x) => x.flavor === 'llama').every((x) => x.auth === null));
  const streamed = mock.log.find((x) => x.flavor === 'llama' && x.body?.stream);
  assert.deepEqual(streamed.body.stream_options, { include_usage: true });
  assert.equal(streamed.body.signal, undefined);
  await p.context().close();
});

test('mock: unreachable server, broken stream, key in the header, a consumer that stops early', { timeout: 120000 }, async () => {
  const closed = await new Promise((r) => { const s = http.createServer().listen(0, '127.0.0.1', () => { const u = `http://127.0.0.1:${s.address().port}`; s.close(() => r(u)); }); });
  const p = await page();
  const before = mock.log.length;
  const got = await run(p, async (T, a) => {
    const code = (x) => ({ code: x.code, status: x.status, url: x.url, message: x.message });
    const r = {};
    r.unreachable = await T.RemoteEngine.connect(a.closed).then(() => 'connected', code);
    r.badUrl = await T.RemoteEngine.connect('ftp://x').then(() => 'connected', code);
    const broken = await T.RemoteEngine.connect(`${a.url}/broken`);
    r.brokenSeen = 0;
    try { for await (const c of broken.completions.create({ prompt: [1], max_tokens: 8, stream: true })) { void c; r.brokenSeen++; } r.broken = 'ended'; } catch (x) { r.broken = code(x); }
    const keyed = await T.RemoteEngine.connect(`${a.url}/keyed`, { apiKey: a.key });
    r.keyed = (await keyed.completions.create({ prompt: [1], max_tokens: 1 })).choices[0].text;
    const slow = await T.RemoteEngine.connect(`${a.url}/slow`);
    let n = 0;
    for await (const c of slow.completions.create({ prompt: [1], max_tokens: 50, stream: true })) { void c; if (++n === 2) break; }
    await new Promise((res) => setTimeout(res, 300));
    r.stoppedAfter = n;
    return r;
  }, { url: mock.url, closed, key: KEY });
  ok(got);
  assert.equal(got.unreachable.code, 'NETWORK');
  assert.equal(got.unreachable.status, 0);
  assert.equal(got.unreachable.url, `${closed}/v1/models`);
  assert.ok(got.unreachable.message.includes(closed), got.unreachable.message);
  assert.equal(got.badUrl.code, 'INVALID_REQUEST');
  assert.equal(got.brokenSeen, 2);
  assert.equal(got.broken.code, 'NETWORK');
  assert.equal(got.broken.status, 0);
  assert.equal(got.keyed, ' w10');
  const log = mock.log.slice(before);
  assert.ok(log.filter((x) => x.flavor === 'keyed').every((x) => x.auth === `Bearer ${KEY}`));
  assert.equal(got.stoppedAfter, 2);
  const slow = log.find((x) => x.flavor === 'slow' && x.method === 'POST');
  assert.equal(slow.closedEarly, true, 'a break in for-await cancels the request');
  await p.context().close();
});
