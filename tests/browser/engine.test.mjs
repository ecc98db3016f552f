// The npm package in headless Chromium (WebGPU on SwiftShader), against a local
// static server with Range support serving the repo's test models.
// Run by scripts/test.sh after `npm run build`; uses node's test runner.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../scripts/server.mjs';
import { launch } from './browser.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIX = path.join(ROOT, 'tests/fixtures');
const ref = (name) => JSON.parse(fs.readFileSync(path.join(FIX, name, 'reference.json'), 'utf8'));
let server, browser;

function brokenFixtures() {
  // Copies of llama_tiny with a missing shard and a truncated shard.
  const out = path.join(ROOT, 'target/browser-fixtures');
  fs.rmSync(out, { recursive: true, force: true });
  for (const name of ['missing-shard', 'truncated']) {
    const d = path.join(out, name);
    fs.mkdirSync(d, { recursive: true });
    for (const f of fs.readdirSync(path.join(FIX, 'llama_tiny'))) fs.copyFileSync(path.join(FIX, 'llama_tiny', f), path.join(d, f));
  }
  fs.rmSync(path.join(out, 'missing-shard/model-00002-of-00003.safetensors'));
  const t = path.join(out, 'truncated/model-00003-of-00003.safetensors');
  fs.truncateSync(t, fs.statSync(t).size - 100);
}

before(async () => {
  brokenFixtures();
  server = await startServer({ root: ROOT });
  browser = await launch();
});
after(async () => { await browser?.close(); await server?.close(); });

async function page() {
  const ctx = await browser.newContext();
  const p = await ctx.newPage();
  p.on('pageerror', (e) => console.error('page error:', e.message));
  await p.goto(server.url + 'tests/browser/blank.html');
  return p;
}

// Evaluate `fn(arg)` in the page with the package imported as `T`.
async function run(p, fn, arg) {
  return p.evaluate(async ([src, a]) => {
    const T = await import('/pkg/index.js');
    const f = new Function('T', 'a', `return (${src})(T, a);`);
    try { return await f(T, a); } catch (e) { return { thrown: { code: e.code, message: e.message, url: e.url, status: e.status } }; }
  }, [fn.toString(), arg]);
}

const GREEDY = { max_tokens: 16, temperature: 0, ignore_eos: true };

for (const name of ['llama_tiny', 'mistral_tiny', 'mixtral_tiny', 'mixtral_tiny_bf16', 'qwen2_tiny']) {
  test(`${name}: greedy tokens equal the transformers reference`, { timeout: 120000 }, async () => {
    const p = await page();
    const r = ref(name);
    const prompts = r.prompts.map((x) => ({ ids: x.input_ids, want: x.greedy.new_ids }));
    const got = await run(p, async (T, a) => {
      const e = await T.Engine.load(`/tests/fixtures/${a.name}/`, { useCache: false });
      const out = [];
      for (const pr of a.prompts) {
        await e.resetChat();
        out.push((await e.completions.create({ prompt: pr.ids, ...a.greedy })).token_ids);
      }
      return out;
    }, { name, prompts, greedy: GREEDY });
    assert.ok(!got.thrown, JSON.stringify(got.thrown));
    got.forEach((ids, i) => assert.deepEqual(ids, prompts[i].want, `${name} prompt ${i}`));
    await p.context().close();
  });
}

test('mistral decodes 60 tokens past its window in the browser', { timeout: 180000 }, async () => {
  const p = await page();
  const r = ref('mistral_tiny');
  const pr = r.prompts.find((x) => x.name === r.long_generation.prompt);
  const got = await run(p, async (T, a) => {
    const e = await T.Engine.load('/tests/fixtures/mistral_tiny/', { useCache: false, prefillChunk: 8 });
    return (await e.completions.create({ prompt: a.ids, max_tokens: 60, temperature: 0, ignore_eos: true })).token_ids;
  }, { ids: pr.input_ids });
  assert.deepEqual(got, r.long_generation.new_ids);
  await p.context().close();
});

test('streamed chunks add up to the non-streamed result; logprobs match the reference', { timeout: 180000 }, async () => {
  const p = await page();
  const r = ref('llama_tiny');
  const pr = r.prompts[1];
  const got = await run(p, async (T, a) => {
    const e = await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false });
    const whole = await e.completions.create({ prompt: a.ids, max_tokens: 12, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 5 });
    await e.resetChat();
    let text = '';
    let n = 0, usage = null, finish = null;
    for await (const c of e.completions.create({ prompt: a.ids, max_tokens: 12, temperature: 0, ignore_eos: true, stream: true })) {
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) { text += ch.text; n++; if (ch.finish_reason) finish = ch.finish_reason; }
    }
    const chat = [];
    for await (const c of e.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, temperature: 0, stream: true })) chat.push(c);
    return { whole, text, n, usage, finish, chat };
  }, { ids: pr.input_ids });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.text, got.whole.choices[0].text);
  assert.ok(got.n > 3, 'several chunks');
  assert.equal(got.finish, 'length');
  assert.equal(got.usage.completion_tokens, 12);
  assert.ok(got.usage.extra.decode_tokens_per_s > 0 && got.usage.extra.prefill_tokens_per_s > 0);
  const lp = got.whole.choices[0].logprobs.content;
  assert.equal(lp.length, 12);
  const lse = pr.last_position.logsumexp;
  assert.ok(Math.abs(lp[0].logprob - (pr.last_position.top20[0][1] - lse)) < 1e-3, `${lp[0].logprob}`);
  lp[0].top_logprobs.forEach((t, i) => {
    assert.equal(t.id, pr.last_position.top20[i][0]);
    assert.ok(Math.abs(t.logprob - (pr.last_position.top20[i][1] - lse)) < 1e-3);
  });
  assert.equal(got.chat[0].choices[0].delta.role, 'assistant');
  assert.equal(got.chat.at(-1).choices.length, 0, 'usage chunk last');
  await p.context().close();
});

test('abort mid-generation, then the next request works; concurrent requests run in order', { timeout: 180000 }, async () => {
  const p = await page();
  const got = await run(p, async (T) => {
    const e = await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false });
    const ctl = new AbortController();
    let seen = 0, err = null;
    try {
      for await (const c of e.completions.create({ prompt: [1, 2, 3], max_tokens: 200, temperature: 0, ignore_eos: true, stream: true, signal: ctl.signal })) {
        if (++seen === 3) ctl.abort();
      }
    } catch (x) { err = x.code; }
    const after = await e.completions.create({ prompt: [1, 2, 3], max_tokens: 4, temperature: 0, ignore_eos: true });
    const order = [];
    const a = e.completions.create({ prompt: [5, 6, 7], max_tokens: 10, temperature: 0, ignore_eos: true }).then((r) => { order.push('a'); return r; });
    const b = e.completions.create({ prompt: [8, 9], max_tokens: 10, temperature: 0, ignore_eos: true }).then((r) => { order.push('b'); return r; });
    const [ra, rb] = await Promise.all([a, b]);
    await e.resetChat();
    const sa = await e.completions.create({ prompt: [5, 6, 7], max_tokens: 10, temperature: 0, ignore_eos: true });
    await e.resetChat();
    const sb = await e.completions.create({ prompt: [8, 9], max_tokens: 10, temperature: 0, ignore_eos: true });
    return { err, seen, after: after.token_ids.length, order, ra: ra.token_ids, rb: rb.token_ids, sa: sa.token_ids, sb: sb.token_ids };
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.err, 'ABORTED');
  assert.ok(got.seen < 10, 'stopped promptly');
  assert.equal(got.after, 4);
  assert.deepEqual(got.order, ['a', 'b']);
  assert.deepEqual(got.ra, got.sa, 'whole, not interleaved');
  assert.deepEqual(got.rb, got.sb);
  await p.context().close();
});

test('a second load makes no weight request (Cache API); unload then load works', { timeout: 180000 }, async () => {
  const p = await page();
  const before = server.log.length;
  const got = await run(p, async (T) => {
    const src = '/tests/fixtures/qwen2_tiny/';
    await T.Engine.cache.delete(src);
    const e = await T.Engine.load(src);
    const first = e.info.network;
    const hasAfter = await T.Engine.cache.has(src);
    await e.unload();
    const unloaded = e.info;
    await e.load(src);
    const second = e.info.network;
    const out = await e.completions.create({ prompt: [1, 2, 3], max_tokens: 3, temperature: 0, ignore_eos: true });
    const deleted = await T.Engine.cache.delete(src);
    const hasAfterDelete = await T.Engine.cache.has(src);
    return { first, second, hasAfter, unloaded, tokens: out.token_ids.length, deleted, hasAfterDelete };
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.ok(got.first.requests > 0 && got.first.cacheAvailable);
  assert.equal(got.hasAfter, true);
  assert.equal(got.unloaded, null);
  assert.equal(got.second.requests, 0, 'no network request on the second load');
  assert.ok(got.second.cacheHits > 0);
  assert.equal(got.tokens, 3);
  assert.equal(got.deleted, true);
  assert.equal(got.hasAfterDelete, false);
  // The server agrees: the shards were fetched once.
  const shardGets = server.log.slice(before).filter((l) => l.path.includes('qwen2_tiny/model-0000'));
  assert.equal(shardGets.length, 3);
  await p.context().close();
});

test('bad sources give typed errors: 404 shard, truncated shard, bad repo', { timeout: 180000 }, async () => {
  const p = await page();
  const got = await run(p, async (T) => {
    const r = {};
    for (const [k, src] of [['missing', '/target/browser-fixtures/missing-shard/'], ['truncated', '/target/browser-fixtures/truncated/'], ['nothing', '/no/such/model/']]) {
      try { await T.Engine.load(src, { useCache: false }); r[k] = 'loaded'; } catch (e) { r[k] = { code: e.code, url: e.url, status: e.status, message: e.message }; }
    }
    // The engine is usable after a failed load.
    const e = await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false });
    try { await e.load('/target/browser-fixtures/truncated/', { useCache: false }); } catch (x) { r.reload = x.code; }
    await e.load('/tests/fixtures/llama_tiny/', { useCache: false });
    r.after = (await e.completions.create({ prompt: [1, 2], max_tokens: 2, temperature: 0, ignore_eos: true })).token_ids.length;
    try { await e.completions.create({ prompt: Array(600).fill(5), max_tokens: 2 }); } catch (x) { r.overflow = x.code; }
    return r;
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.missing.code, 'NETWORK');
  assert.match(got.missing.url, /model-00002-of-00003\.safetensors$/);
  assert.equal(got.missing.status, 404);
  assert.equal(got.truncated.code, 'MODEL_FORMAT');
  assert.match(got.truncated.message, /model-00003-of-00003/);
  assert.equal(got.nothing.code, 'NETWORK');
  assert.equal(got.reload, 'MODEL_FORMAT');
  assert.equal(got.after, 2);
  assert.equal(got.overflow, 'CONTEXT_OVERFLOW');
  await p.context().close();
});

test('GGUF with quantized MoE and split parts, by URL', { timeout: 180000 }, async () => {
  const p = await page();
  const r = JSON.parse(fs.readFileSync(path.join(FIX, 'moe_gguf/reference.json'), 'utf8'));
  const pr = r.models['moe-q4_0.gguf'].prompts[0];
  const got = await run(p, async (T, a) => {
    // A cached GGUF (header, then tensors) loads again with no request at all.
    const src = '/tests/fixtures/moe_gguf/moe-q4_0.gguf';
    await T.Engine.cache.delete(src);
    await (await T.Engine.load(src)).unload();
    const again = await T.Engine.load(src);
    const cachedRequests = again.info.network.requests;
    await again.unload();
    const one = await T.Engine.load('/tests/fixtures/moe_gguf/moe-q4_0.gguf', { useCache: false });
    const split = await T.Engine.load('/tests/fixtures/moe_gguf/moe-q8_0-split-00001-of-00003.gguf', { useCache: false });
    return {
      q4: (await one.completions.create({ prompt: a.ids, max_tokens: 8, temperature: 0, ignore_eos: true })).token_ids,
      q8: (await split.completions.create({ prompt: a.ids, max_tokens: 8, temperature: 0, ignore_eos: true })).token_ids,
      info: split.info,
      cachedRequests,
    };
  }, { ids: pr.input_ids });
  assert.equal(got.cachedRequests, 0);
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.deepEqual(got.q4, pr.greedy);
  assert.deepEqual(got.q8, r.models['moe-q8_0.gguf'].prompts[0].greedy);
  assert.equal(got.info.dtype, 'q8_0');
  assert.equal(got.info.experts, 4);
  await p.context().close();
});

test('WorkerEngine: same generation, in a worker', { timeout: 180000 }, async () => {
  const p = await page();
  const r = ref('mixtral_tiny');
  const pr = r.prompts[1];
  const got = await run(p, async (T, a) => {
    const e = await T.WorkerEngine.load('/tests/fixtures/mixtral_tiny/', { useCache: false });
    const whole = await e.completions.create({ prompt: a.ids, max_tokens: 16, temperature: 0, ignore_eos: true });
    await e.resetChat();
    let text = '';
    for await (const c of e.completions.create({ prompt: a.ids, max_tokens: 16, temperature: 0, ignore_eos: true, stream: true })) text += c.choices[0]?.text ?? '';
    const ctl = new AbortController();
    let code = null;
    try {
      const it = e.completions.create({ prompt: a.ids, max_tokens: 500, temperature: 0, ignore_eos: true, stream: true, signal: ctl.signal });
      let n = 0;
      for await (const c of it) { if (++n === 2) ctl.abort(); }
    } catch (x) { code = x.code; }
    const tok = await e.tokenize('Hello world');
    const back = await e.detokenize(tok);
    e.terminate();
    return { ids: whole.token_ids, same: text === whole.choices[0].text, code, back, info: e.info };
  }, { ids: pr.input_ids });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.deepEqual(got.ids, pr.greedy.new_ids);
  assert.ok(got.same);
  assert.equal(got.code, 'ABORTED');
  assert.equal(got.back, 'Hello world');
  assert.equal(got.info.arch, 'mixtral');
  await p.context().close();
});

test('a page without WebGPU gets WEBGPU_UNAVAILABLE', { timeout: 180000 }, async () => {
  const b = await launch({ webgpu: false });
  try {
    const p = await b.newPage();
    await p.goto(server.url + 'tests/browser/blank.html');
    const got = await run(p, async (T) => { await T.Engine.load('/tests/fixtures/llama_tiny/'); return 'loaded'; });
    assert.equal(got.thrown?.code, 'WEBGPU_UNAVAILABLE', JSON.stringify(got));
    assert.match(got.thrown.message, /WebGPU/);
  } finally {
    await b.close();
  }
});

test('the default model (GGUF Q4_1) streams from the server to the GPU: it answers, wasm memory stays small', { timeout: 300000 }, async () => {
  const p = await page();
  const got = await run(p, async (T) => {
    const phases = new Set();
    let maxUpload = 0;
    const e = await T.Engine.load('/models/SmolLM2-135M-Instruct.Q4_1.gguf', {
      useCache: false,
      onProgress: (ev) => { phases.add(ev.phase); if (ev.phase === 'upload') maxUpload = Math.max(maxUpload, ev.loaded); },
    });
    const mem = await T.Engine.wasmMemoryBytes();
    const out = await e.chat.completions.create({ messages: [{ role: 'user', content: 'What is the capital of France?' }], max_tokens: 12, temperature: 0 });
    return { phases: [...phases], maxUpload, mem, weights: e.info.weightBytes, text: out.choices[0].message.content, finish: out.choices[0].finish_reason };
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.deepEqual(got.phases, ['download', 'upload', 'compile', 'ready']);
  assert.equal(got.maxUpload, got.weights);
  assert.match(got.text, /Paris/);
  console.log(`wasm memory after loading ${(got.weights / 1e6).toFixed(1)} MB of weights: ${(got.mem / 1e6).toFixed(1)} MB`);
  assert.ok(got.mem < got.weights / 2, `peak wasm memory ${got.mem} vs weights ${got.weights}`);
  await p.context().close();
});

test('an AbortSignal cancels a load cleanly; the engine loads again afterwards', { timeout: 180000 }, async () => {
  const p = await page();
  const got = await run(p, async (T) => {
    const ctl = new AbortController();
    const e = new T.Engine();
    let code = null, phase = null;
    try {
      await e.load('/models/SmolLM2-135M-Instruct.Q4_1.gguf', {
        useCache: false, signal: ctl.signal,
        onProgress: (ev) => { if (ev.phase === 'upload' && ev.loaded > 10e6 && !ctl.signal.aborted) { phase = ev.phase; ctl.abort(); } },
      });
    } catch (x) { code = x.code; }
    const info = e.info;
    await e.load('/tests/fixtures/llama_tiny/', { useCache: false });
    const n = (await e.completions.create({ prompt: [1, 2, 3], max_tokens: 3, temperature: 0, ignore_eos: true })).token_ids.length;
    return { code, phase, info, n };
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.phase, 'upload', 'aborted midway');
  assert.equal(got.code, 'ABORTED');
  assert.equal(got.info, null);
  assert.equal(got.n, 3);
  await p.context().close();
});

test('weights over the binding limit are split into slabs (maxBindingSize)', { timeout: 180000 }, async () => {
  // 16 KiB per buffer: the embeddings, LM head and Mixtral's expert matrices
  // are each split; tokens must not change.
  const p = await page();
  const r = ref('mixtral_tiny');
  const prompts = r.prompts.slice(0, 2).map((x) => ({ ids: x.input_ids, want: x.greedy.new_ids }));
  const got = await run(p, async (T, a) => {
    const e = await T.Engine.load('/tests/fixtures/mixtral_tiny/', { useCache: false, maxBindingSize: 16384 });
    const out = [];
    for (const pr of a.prompts) {
      await e.resetChat();
      out.push((await e.completions.create({ prompt: pr.ids, ...a.greedy })).token_ids);
    }
    return { out, split: e.info.splitMatrices };
  }, { prompts, greedy: GREEDY });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.ok(got.split >= 3, `split ${got.split}`);
  got.out.forEach((ids, i) => assert.deepEqual(ids, prompts[i].want, `prompt ${i}`));
  await p.context().close();
});

test('a full storage quota: the model loads without caching and says so (QUOTA)', { timeout: 180000 }, async () => {
  const p = await page();
  const uncaught = [];
  p.on('pageerror', (e) => uncaught.push(e.message));
  const got = await run(p, async (T) => {
    const src = '/tests/fixtures/llama_tiny/';
    await T.Engine.cache.delete(src);
    const put = Cache.prototype.put;
    Cache.prototype.put = () => Promise.reject(new DOMException('The quota has been exceeded.', 'QuotaExceededError'));
    const events = [];
    let out;
    try {
      const e = await T.Engine.load(src, { onProgress: (ev) => { if (ev.phase === 'cache') events.push(ev); } });
      out = await e.completions.create({ prompt: [1, 2, 3], max_tokens: 3, temperature: 0, ignore_eos: true });
      out.warning = e.info.network.cacheWarning;
    } finally {
      Cache.prototype.put = put;
    }
    const has = await T.Engine.cache.has(src);
    let stored = 0;
    for (const name of await caches.keys()) {
      for (const req of await (await caches.open(name)).keys()) if (req.url.includes('llama_tiny')) stored++;
    }
    return { events, tokens: out.token_ids.length, warning: out.warning, has, stored };
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.tokens, 3, 'the model works without the cache');
  assert.equal(got.events.length, 1);
  assert.equal(got.events[0].code, 'QUOTA');
  assert.match(got.warning, /quota/);
  assert.equal(got.has, false);
  assert.equal(got.stored, 0, 'nothing partial is kept');
  assert.deepEqual(uncaught, [], 'no uncaught rejection reaches the page');
  await p.context().close();
});

test('a lost device gives DEVICE_LOST; load() again recovers on a new device', { timeout: 180000 }, async () => {
  const p = await page();
  const got = await run(p, async (T) => {
    // Keep a handle on the devices the engine makes, to lose one on purpose.
    const devices = [];
    const requestDevice = GPUAdapter.prototype.requestDevice;
    GPUAdapter.prototype.requestDevice = async function (d) {
      const dev = await requestDevice.call(this, d);
      devices.push(dev);
      return dev;
    };
    const src = '/tests/fixtures/llama_tiny/';
    const req = { prompt: [1, 2, 3], max_tokens: 4, temperature: 0, ignore_eos: true };
    const e = await T.Engine.load(src, { useCache: false });
    const before = (await e.completions.create(req)).token_ids;
    devices[devices.length - 1].destroy();
    await new Promise((r) => setTimeout(r, 50));
    const code = async () => { try { await e.completions.create(req); return 'none'; } catch (err) { return err.code; } };
    const lost = await code();
    const info = e.info;
    const next = await code();
    await e.load(src, { useCache: false });
    const after = (await e.completions.create(req)).token_ids;
    return { before, lost, info, next, after, devices: devices.length };
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.lost, 'DEVICE_LOST');
  assert.equal(got.info, null, 'the model went with the device');
  assert.equal(got.next, 'INVALID_REQUEST', 'no model until the next load');
  assert.equal(got.devices, 2, 'a new device');
  assert.deepEqual(got.after, got.before);
  await p.context().close();
});

test('KV cache type follows shader-f16; asking for f16 without it is UNSUPPORTED', { timeout: 180000 }, async () => {
  const p = await page();
  const got = await run(p, async (T) => {
    const src = '/tests/fixtures/llama_tiny/';
    const e = new T.Engine();
    let code = null;
    const f16 = await e.load(src, { useCache: false, kvCache: 'f16' }).then(() => e.info.kvCache, (err) => { code = err.code; return null; });
    await e.load(src, { useCache: false });
    const out = await e.completions.create({ prompt: [1, 2, 3], max_tokens: 3, temperature: 0, ignore_eos: true });
    return { f16, code, kv: e.info.kvCache, shaderF16: e.info.adapter.shaderF16, tokens: out.token_ids.length };
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  if (got.shaderF16) {
    assert.equal(got.f16, 'f16');
  } else {
    assert.equal(got.code, 'UNSUPPORTED');
    assert.equal(got.kv, 'f32');
  }
  assert.equal(got.tokens, 3, 'the engine works after the refused load');
  await p.context().close();
});
