// The npm package in headless Chromium (WebGPU on SwiftShader), against a local
// static server with Range support serving the repo's test models.
// Run by scripts/test.sh after `npm run build`; uses node's test runner.
// Every test opens its own browser context (its own Cache API storage) and
// loads its own engine; none relies on another having run. To check that,
// TRAMONTANE_TEST_ORDER=reverse (or shuffle:<seed>) runs them in another order.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../scripts/server.mjs';
import { launch, openPage, runInPage, testQueue } from './browser.mjs';

// A check this browser cannot run: says so, and fails unless
// TRAMONTANE_ALLOW_SKIP=1 allows skipping on this machine.
function skipped(why) {
  console.log(`SKIPPED: ${why}`);
  assert.equal(process.env.TRAMONTANE_ALLOW_SKIP, '1', `SKIPPED: ${why} (set TRAMONTANE_ALLOW_SKIP=1 to allow skipping here)`);
}

// Registered at the end of the file, in the order TRAMONTANE_TEST_ORDER asks for.
const { test, register } = testQueue(nodeTest);

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

const page = () => openPage(browser, server.url + 'tests/browser/blank.html');
const run = runInPage;

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
    assert.equal(got.length, prompts.length, 'a result per prompt');
    got.forEach((ids, i) => assert.deepEqual(ids, prompts[i].want, `${name} prompt ${i}`));
    await p.context().close();
  });
}

test('a .wasm URL or a worker that gives no module is WASM_LOAD naming it; a later load with the right one works', { timeout: 120000 }, async () => {
  const p = await page();
  const r = ref('llama_tiny');
  const pr = r.prompts[0];
  const got = await run(p, async (T, a) => {
    const tries = [];
    // What a bundler's dev server does with a file it does not have: its HTML page.
    for (const wasmUrl of ['/tests/browser/blank.html', '/pkg/wasm/missing.wasm', '/pkg/index.js']) {
      try { await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false, wasmUrl }); tries.push('loaded'); } catch (e) {
        tries.push({ name: e.name, code: e.code, url: e.url, status: e.status, message: e.message });
      }
    }
    let worker;
    try { await T.WorkerEngine.load('/tests/fixtures/llama_tiny/', { useCache: false, worker: new Worker('/pkg/missing-worker.js', { type: 'module' }) }); worker = 'loaded'; } catch (e) {
      worker = { name: e.name, code: e.code, message: e.message };
    }
    const e = await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false });
    const ids = (await e.completions.create({ prompt: a.ids, ...a.greedy })).token_ids;
    return { tries, worker, ids };
  }, { ids: pr.input_ids, greedy: GREEDY });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  const [html, missing, js] = got.tries;
  for (const t of got.tries) {
    assert.equal(t.name, 'TramontaneError', JSON.stringify(t));
    assert.equal(t.code, 'WASM_LOAD', JSON.stringify(t));
    assert.match(t.message, /wasmUrl/);
  }
  assert.match(html.url, /blank\.html$/);
  assert.match(html.message, /web page/);
  assert.equal(missing.status, 404);
  assert.match(js.message, /not a WebAssembly module/);
  // A worker whose script does not start.
  assert.equal(got.worker.code, 'WASM_LOAD', JSON.stringify(got.worker));
  assert.match(got.worker.message, /worker.*did not start/);
  assert.deepEqual(got.ids, pr.greedy.new_ids, 'the engine starts after the failures');
  await p.context().close();
});

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
  assert.equal(lp[0].top_logprobs.length, 5, 'top_logprobs: 5');
  assert.ok(pr.last_position.top20.length >= 5);
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
    // A cold cache, whatever ran before (the context is fresh, too).
    await caches.delete('tramontane-v1');
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

test('a file larger than a cache part is cached in one OPFS file, or in Cache API parts, and loads again with the network cut, in the page and in a worker', { timeout: 240000 }, async () => {
  // Parts of 64 KiB (the least cachePartBytes takes; 32 MiB by default) on a
  // 122 kB GGUF. Stores: `opfs` from the page (createWritable), `auto` from a
  // worker (OPFS through a synchronous handle), `auto` from the page and
  // `cacheApi` (2 Cache API parts, read back from the part that holds each
  // byte the loader asks for). Each copy then loads in the page with the
  // network cut and in a worker (an OPFS file read through a synchronous
  // handle there).
  const p = await page();
  const r = JSON.parse(fs.readFileSync(path.join(FIX, 'moe_gguf/reference.json'), 'utf8')).models['moe-q4_0.gguf'].prompts[0];
  const size = fs.statSync(path.join(FIX, 'moe_gguf/moe-q4_0.gguf')).size;
  for (const [store, writer, kept] of [['opfs', 'page', 'opfs'], ['auto', 'worker', 'opfs'], ['auto', 'page', 'cacheApi'], ['cacheApi', 'page', 'cacheApi']]) {
    const got = await run(p, async (T, a) => {
      const src = '/tests/fixtures/moe_gguf/moe-q4_0.gguf';
      const { opfsFiles } = await import('/tests/browser/opfs-files.mjs');
      const greedy = async (e) => (await e.completions.create({ prompt: a.ids, max_tokens: 8, temperature: 0, ignore_eos: true })).token_ids;
      await caches.delete('tramontane-v1');
      const opts = { cachePartBytes: 65536, cacheStore: a.store };
      const cold = await (a.writer === 'worker' ? T.WorkerEngine : T.Engine).load(src, opts);
      const first = { network: cold.info.network, ids: await greedy(cold) };
      await cold.unload();
      cold.terminate?.();
      const keys = (await (await caches.open('tramontane-v1')).keys()).map((k) => k.url.slice(k.url.indexOf('/tests/')));
      const files = await opfsFiles();
      const has = await T.Engine.cache.has(src);
      // The network cut: every fetch fails.
      const realFetch = globalThis.fetch;
      let tried = 0;
      globalThis.fetch = () => { tried++; return Promise.reject(new TypeError('the network is cut')); };
      let second;
      try {
        const e = await T.Engine.load(src, opts);
        second = { network: e.info.network, ids: await greedy(e) };
        await e.unload();
      } finally {
        globalThis.fetch = realFetch;
      }
      // In a worker an OPFS file is read through a synchronous handle (closed
      // after the load: the delete below could not remove the file otherwise).
      const w = await T.WorkerEngine.load(src, opts);
      const worker = { network: w.info.network, ids: await greedy(w) };
      await w.unload();
      w.terminate();
      const deleted = await T.Engine.cache.delete(src);
      const left = (await (await caches.open('tramontane-v1')).keys()).length;
      return { first, second, worker, keys, files, has, tried, deleted, left, filesLeft: await opfsFiles() };
    }, { ids: r.input_ids, store, writer });
    const what = `${store} from the ${writer}`;
    assert.ok(!got.thrown, `${what}: ${JSON.stringify(got.thrown)}`);
    assert.deepEqual(got.first.ids, r.greedy);
    assert.equal(got.first.network.cacheStore, kept, what);
    const file = '/tests/fixtures/moe_gguf/moe-q4_0.gguf';
    const mine = got.keys.filter((k) => k.startsWith(file)).sort();
    if (kept === 'opfs') {
      assert.deepEqual(mine, [file, `${file}?tramontane-manifest`], `${what}: the index and the manifest in the Cache API`);
      assert.equal(got.files.length, 1, JSON.stringify(got.files));
      assert.equal(got.files[0][1], size, `${what}: the OPFS file holds the whole GGUF`);
    } else {
      assert.deepEqual(mine, [file, `${file}?tramontane-manifest`, `${file}?tramontane-part=0`, `${file}?tramontane-part=1`], what);
      assert.deepEqual(got.files, []);
    }
    assert.equal(got.has, true);
    assert.equal(got.tried, 0, 'no fetch with the network cut');
    assert.equal(got.second.network.requests, 0);
    assert.ok(got.second.network.cacheHits > 0);
    assert.deepEqual(got.second.ids, r.greedy, what);
    assert.equal(got.second.network.cacheSyncReads, 0, 'no synchronous handles in the page');
    assert.equal(got.worker.network.requests, 0, `${what}: the worker loads from the cache`);
    assert.equal(got.worker.network.cacheSyncReads, kept === 'opfs' ? 1 : 0, `${what}: a worker reads an OPFS file through a synchronous handle`);
    assert.deepEqual(got.worker.ids, r.greedy, what);
    assert.equal(got.deleted, true);
    assert.equal(got.left, 0, 'Engine.cache.delete removes the parts or the index, and the manifest');
    assert.deepEqual(got.filesLeft, [], 'and the OPFS file');
  }
  await p.context().close();
});

test('OPFS files no cache entry names (a load killed mid-write) go at the next load, never while a write is under way', { timeout: 180000 }, async () => {
  // An orphan is planted as a load killed mid-write leaves it: a file in
  // the cache's OPFS directory that no index entry names. While any context
  // holds the files' Web Lock (as every OPFS write does from creating its
  // file to writing its index, and every load reading them) a load leaves it; once the lock is free the
  // next load, in the page or in a worker, removes it and keeps the cached
  // model's own file, which it loads from (the page's fetch cut; the
  // worker's makes no request).
  const p = await page();
  const got = await run(p, async (T) => {
    const src = '/tests/fixtures/moe_gguf/moe-q4_0.gguf';
    const opts = { cachePartBytes: 65536, cacheStore: 'opfs' };
    const root = await navigator.storage.getDirectory();
    await caches.delete('tramontane-v1');
    try { await root.removeEntry('tramontane-v1', { recursive: true }); } catch { /* none yet */ }
    const names = async () => {
      const d = await root.getDirectoryHandle('tramontane-v1');
      const out = [];
      for await (const name of d.keys()) out.push(name);
      return out.sort();
    };
    const plant = async (name) => {
      const d = await root.getDirectoryHandle('tramontane-v1', { create: true });
      const w = await (await d.getFileHandle(name, { create: true })).createWritable();
      await w.write(new Uint8Array(100000));
      await w.close();
    };
    const loadCut = async (Kind) => {
      const realFetch = globalThis.fetch;
      globalThis.fetch = () => Promise.reject(new TypeError('the network is cut'));
      try {
        const e = await Kind.load(src, opts);
        const requests = e.info.network.requests;
        await e.unload();
        e.terminate?.();
        return requests;
      } finally {
        globalThis.fetch = realFetch;
      }
    };
    const cold = await T.Engine.load(src, opts);
    await cold.unload();
    const own = await names();
    await plant('0123456789abcdef-killed');
    // Another context's write or read under way: its lock, held shared.
    let release;
    await new Promise((held) => navigator.locks.request('tramontane-v1-opfs', { mode: 'shared' }, () => new Promise((r) => { release = r; held(); })));
    const whileWriting = await loadCut(T.Engine);
    const keptWhileWriting = await names();
    release();
    const after = await loadCut(T.Engine);
    const swept = await names();
    await plant('fedcba9876543210-killed');
    const inWorker = await loadCut(T.WorkerEngine);
    const sweptByWorker = await names();
    await T.Engine.cache.delete(src);
    return { own, whileWriting, keptWhileWriting, after, swept, inWorker, sweptByWorker };
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.own.length, 1, `the cached model's one OPFS file: ${got.own}`);
  assert.deepEqual(got.keptWhileWriting, [...got.own, '0123456789abcdef-killed'].sort(), 'nothing is swept while a write holds the lock');
  assert.deepEqual(got.swept, got.own, 'the orphan goes once no write is under way; the model\'s file stays');
  assert.deepEqual(got.sweptByWorker, got.own, 'a worker sweeps too');
  assert.deepEqual([got.whileWriting, got.after, got.inWorker], [0, 0, 0], 'each load came from the cache');
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
    await caches.delete('tramontane-v1');
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
  assert.match(got.text, /^The capital of France is Paris\./);
  console.log(`wasm memory after loading ${(got.weights / 1e6).toFixed(1)} MB of weights: ${(got.mem / 1e6).toFixed(1)} MB`);
  assert.ok(got.mem < got.weights / 2, `peak wasm memory ${got.mem} vs weights ${got.weights}`);
  await p.context().close();
});

test('prefill: the opening of the conversations to come runs as the load ends; the first request prefills only its turn and answers the same; an opening that cannot run costs the load nothing', { timeout: 300000 }, async () => {
  const p = await page();
  const got = await run(p, async (T) => {
    const model = '/models/SmolLM2-135M-Instruct.Q4_1.gguf';
    const system = { role: 'system', content: 'You answer in one short sentence.' };
    const ask = (opening) => ({ messages: [...opening, { role: 'user', content: 'What is the capital of France?' }], max_tokens: 4, temperature: 0 });
    const answer = (r) => ({ text: r.choices[0].message.content, usage: r.usage });
    const out = {};
    const plain = await T.Engine.load(model);
    out.plain = { prefilled: plain.info.prefilledTokens, withSystem: answer(await plain.chat.completions.create(ask([system]))) };
    await plain.resetChat();
    out.plain.noSystem = answer(await plain.chat.completions.create(ask([])));
    await plain.unload();
    // In a worker, as the demo loads it: a system prompt, then (a reload of
    // the same engine) the template's own opening.
    const w = await T.WorkerEngine.load(model, { prefill: { messages: [system] } });
    out.withSystem = { prefilled: w.info.prefilledTokens, ...answer(await w.chat.completions.create(ask([system]))) };
    await w.load(model, { prefill: {} });
    out.noSystem = { prefilled: w.info.prefilledTokens, ...answer(await w.chat.completions.create(ask([]))) };
    w.terminate();
    const code = async (f) => { try { await f(); return 'no error'; } catch (e) { return `${e.code} ${e.param ?? ''}: ${e.message}`; } };
    const e = new T.Engine();
    // Checked before the download: a model that is not there is not asked for.
    out.notObject = await code(() => e.load('/models/none.gguf', { prefill: 'You are terse.' }));
    out.badField = await code(() => e.load('/models/none.gguf', { prefill: { messages: [], max_tokens: 3 } }));
    out.badMessage = await code(() => e.load('/models/none.gguf', { prefill: { messages: [{ role: 5, content: 'x' }] } }));
    out.notJson = await code(() => e.load('/models/none.gguf', { prefill: { messages: [{ role: 'system', content: 'x', weight: NaN }] } }));
    // No room left for a request: it only saved time, so the model loads
    // without it and says why.
    await e.load(model, { contextLength: 16, prefill: {} });
    out.tooLong = { prefilled: e.info.prefilledTokens, error: e.info.prefillError };
    out.after = (await e.completions.create({ prompt: 'The capital of France is', max_tokens: 2, temperature: 0 })).choices[0].text;
    return out;
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.plain.prefilled, 0);
  for (const k of ['withSystem', 'noSystem']) {
    const [g, want] = [got[k], got.plain[k]];
    assert.ok(g.prefilled > 10, `${k}: ${g.prefilled} tokens prefilled at load`);
    assert.equal(want.usage.prompt_tokens_details.cached_tokens, 0);
    assert.equal(g.usage.prompt_tokens, want.usage.prompt_tokens);
    assert.equal(g.usage.prompt_tokens_details.cached_tokens, g.prefilled, `${k}: the request reused the opening`);
    assert.equal(g.usage.extra.prefilled_tokens, g.usage.prompt_tokens - g.prefilled);
    assert.equal(g.text, want.text, k);
  }
  assert.match(got.noSystem.text, /^The capital of/);
  assert.match(got.notObject, /^INVALID_REQUEST prefill: prefill must be an object/);
  assert.match(got.badField, /^INVALID_REQUEST prefill\.max_tokens: /);
  assert.match(got.badMessage, /^INVALID_REQUEST .*role/);
  assert.match(got.notJson, /^INVALID_REQUEST prefill\.messages: prefill\.messages must hold finite numbers only/);
  assert.deepEqual(got.tooLong.prefilled, 0);
  assert.match(got.tooLong.error ?? '', /^CONTEXT_OVERFLOW /);
  assert.match(got.after, /\S/);
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
  assert.equal(got.out.length, prompts.length, 'a result per prompt');
  got.out.forEach((ids, i) => assert.deepEqual(ids, prompts[i].want, `prompt ${i}`));
  await p.context().close();
});

test('a full storage quota: the model loads without caching and says so (QUOTA)', { timeout: 180000 }, async () => {
  const p = await page();
  const uncaught = [];
  p.on('pageerror', (e) => uncaught.push(e.message));
  const got = await run(p, async (T) => {
    const src = '/tests/fixtures/llama_tiny/';
    await caches.delete('tramontane-v1');
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
  assert.equal(got.tokens, 3, 'the engine works after the f16 load, refused or not');
  if (got.shaderF16) {
    assert.equal(got.f16, 'f16');
  } else {
    assert.equal(got.code, 'UNSUPPORTED');
    assert.equal(got.kv, 'f32');
    skipped('no shader-f16 in this browser: the f16 KV cache itself is not checked');
  }
  await p.context().close();
});

test('GPU-shaped kernels with subgroup sums (kernels: "gpu"): reference tokens of f32, MoE and quantized models', { timeout: 300000 }, async () => {
  const p = await page();
  const cases = ['llama_tiny', 'mixtral_tiny'].map((name) => ({ name, prompts: ref(name).prompts.map((x) => ({ ids: x.input_ids, want: x.greedy.new_ids })) }));
  // A quantized MoE GGUF (Q4_0: block dequant in the matvec, the tiled and
  // grouped matmuls), against float math on its dequantized weights. (Not
  // SmolLM2: SwiftShader runs the GPU-shaped tiles on its CPU at under a token
  // a second, a minute for one short answer; natively, every quantized GGUF
  // case runs in both shapes.)
  const moe = JSON.parse(fs.readFileSync(path.join(FIX, 'moe_gguf/reference.json'), 'utf8')).models['moe-q4_0.gguf'].prompts[0];
  // And a dense Q4_K_M GGUF (K-quant super-blocks, Q6_K up), against numpy
  // float64 on its dequantized weights.
  const kq = JSON.parse(fs.readFileSync(path.join(FIX, 'quant_ggufs/llama3-Q4_K_M-up_q6_K.json'), 'utf8')).prompts[0];
  const got = await run(p, async (T, a) => {
    const e = new T.Engine();
    const tiny = [];
    for (const c of a.cases) {
      await e.load(`/tests/fixtures/${c.name}/`, { useCache: false, kernels: 'gpu' });
      const out = [];
      for (const pr of c.prompts) {
        await e.resetChat();
        out.push((await e.completions.create({ prompt: pr.ids, ...a.greedy })).token_ids);
      }
      tiny.push(out);
    }
    await e.load('/tests/fixtures/moe_gguf/moe-q4_0.gguf', { useCache: false, kernels: 'gpu' });
    const r = await e.completions.create({ prompt: a.moe.input_ids, max_tokens: a.moe.greedy.length, temperature: 0, ignore_eos: true });
    await e.load('/tests/fixtures/quant_ggufs/llama3-Q4_K_M-up_q6_K.gguf', { useCache: false, kernels: 'gpu' });
    const k = await e.completions.create({ prompt: a.kq.input_ids, max_tokens: a.kq.greedy.new_ids.length, temperature: 0, ignore_eos: true });
    return { tiny, quantized: r.token_ids, kquant: k.token_ids, subgroups: e.info.adapter.subgroupMinSize, profile: e.info.deviceProfile, selfTest: e.info.selfTest };
  }, { cases, greedy: GREEDY, moe, kq });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  cases.forEach((c, i) => c.prompts.forEach((pr, j) => assert.deepEqual(got.tiny[i][j], pr.want, `${c.name} prompt ${j}`)));
  assert.deepEqual(got.quantized, moe.greedy, 'moe-q4_0.gguf');
  assert.deepEqual(got.kquant, kq.greedy.new_ids, 'llama3-Q4_K_M-up_q6_K.gguf');
  // What the device got, and the self-test of the kernels it runs.
  assert.deepEqual([got.profile.shapes, got.profile.decodeMatvec, got.profile.prefillMatmul, got.profile.weights], ['gpu', 'shared_outputs', 'tiles', 'buffer'], JSON.stringify(got.profile));
  assert.ok(got.selfTest.kernels >= 5 && got.selfTest.fallbacks.length === 0, JSON.stringify(got.selfTest));
  if (!(got.subgroups > 0)) skipped('no WebGPU subgroups in this browser: the GPU kernels ran with workgroup-memory sums only');
  await p.context().close();
});

// A Hermes-style template (as Qwen's), given as the `chatTemplate` load option.
const HERMES_TEMPLATE = `{%- if tools %}<|im_start|>system
# Tools
{% for t in tools %}{{ t.function | tojson }}
{% endfor %}<|im_end|>
{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}
{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>
{{ c.function.name }} {{ c.function.arguments | tojson }}
</tool_call>{% endfor %}{% elif m.role == 'tool' %}<tool_response>{{ m.content }}</tool_response>{% else %}{{ m.content }}{% endif %}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}`;

test('chat requests carry tools, tool calls and tool results to the template', { timeout: 120000 }, async () => {
  const p = await page();
  const got = await run(p, async (T, a) => {
    const e = await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false, chatTemplate: a.template });
    const weather = { type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } } } } };
    const time = { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } };
    const messages = [
      { role: 'user', content: 'Weather in Zürich?' },
      // OpenAI sends arguments as a JSON string; templates get an object.
      { role: 'assistant', content: null, tool_calls: [{ id: 'abc123def', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Zürich", "days": 2}' } }] },
      { role: 'tool', tool_call_id: 'abc123def', content: '{"temp": 3}' },
    ];
    const all = await e.chatPrompt({ messages, tools: [weather, time] });
    const none = await e.chatPrompt({ messages, tools: [weather, time], tool_choice: 'none' });
    const named = await e.chatPrompt({ messages, tools: [weather, time], tool_choice: { type: 'function', function: { name: 'get_time' } } });
    const bare = await e.chatPrompt({ messages, add_generation_prompt: false });
    // A reply that is not a call: plain content, finish_reason stop/length.
    const r = await e.chat.completions.create({ messages, tools: [weather], max_tokens: 4, temperature: 0 });
    let streamed = '';
    let finish = null;
    for await (const c of e.chat.completions.create({ messages, tools: [weather], max_tokens: 4, temperature: 0, stream: true })) {
      streamed += c.choices[0]?.delta?.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    return { all: all.text, none: none.text, named: named.text, bare: bare.text, ids: all.ids.length, msg: r.choices[0].message, finish: r.choices[0].finish_reason, streamed, sfinish: finish, info: e.info };
  }, { template: HERMES_TEMPLATE });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  const call = '<|im_start|>assistant\n<tool_call>\nget_weather {"city": "Zürich", "days": 2}\n</tool_call><|im_end|>\n';
  assert.ok(got.all.includes(call), got.all);
  assert.ok(got.all.includes('<tool_response>{"temp": 3}</tool_response>'), got.all);
  assert.ok(got.all.startsWith('<|im_start|>system\n# Tools\n{"name": "get_weather", "description": "Weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}\n{"name": "get_time"'), got.all);
  assert.ok(!got.none.includes('# Tools'), 'tool_choice none hides the tools');
  assert.ok(got.all.endsWith('<|im_start|>assistant\n'), 'the generation prompt by default');
  assert.ok(got.bare.endsWith('</tool_response><|im_end|>\n'), `add_generation_prompt: false: ${got.bare}`);
  assert.ok(got.named.includes('"get_time"') && !got.named.includes('"get_weather", "description"'), got.named);
  assert.ok(got.ids > 20);
  assert.equal(got.info.toolFormat, 'hermes');
  assert.equal(typeof got.msg.content, 'string');
  assert.equal(got.msg.tool_calls, undefined);
  assert.ok(['stop', 'length'].includes(got.finish));
  assert.equal(got.streamed, got.msg.content, 'the stream holds back nothing it later drops');
  assert.equal(got.sfinish, got.finish);
  await p.context().close();
});

test('text prompts follow the tokenizer\'s BOS rule; tokenize options', { timeout: 120000 }, async () => {
  const p = await page();
  const got = await run(p, async (T) => {
    const e = await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false });
    const text = 'The old lighthouse keeper climbed';
    const r = await e.completions.create({ prompt: text, max_tokens: 1, temperature: 0 });
    return {
      plain: await e.tokenize(text),
      added: await e.tokenize(text, { addSpecial: true }),
      special: await e.tokenize('<|im_end|>'),
      specialPlain: await e.tokenize('<|im_end|>', { parseSpecial: false }),
      promptTokens: r.usage.prompt_tokens,
      info: { addBos: e.info.addBos, bos: e.info.bos, eos: e.info.eos, defaults: e.info.generationDefaults, hasChatTemplate: e.info.hasChatTemplate },
    };
  });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  // transformers' tokenizer(text) on this tokenizer adds nothing.
  assert.deepEqual(got.plain, ref('llama_tiny').prompts.find((x) => x.text === 'The old lighthouse keeper climbed').input_ids);
  assert.equal(got.info.addBos, false);
  assert.deepEqual(got.added, got.plain);
  assert.equal(got.promptTokens, got.plain.length);
  assert.deepEqual(got.special, [2]);
  assert.ok(got.specialPlain.length > 1 && !got.specialPlain.includes(2));
  assert.deepEqual(got.info.eos, [2]);
  assert.equal(got.info.hasChatTemplate, true);
  assert.equal(got.info.defaults.temperature, null);
  await p.context().close();
});

test('tool calls come back in OpenAI form, streamed and not (scripted model, Qwen2.5 template)', { timeout: 120000 }, async () => {
  const p = await page();
  const template = fs.readFileSync(path.join(FIX, 'templates/Qwen-Qwen2.5-7B-Instruct.jinja'), 'utf8');
  const got = await run(p, async (T, a) => {
    const e = await T.Engine.load('/tests/fixtures/scripted/scripted.gguf', { useCache: false, chatTemplate: a.template });
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const whole = await e.chat.completions.create({ messages, tools, max_tokens: 12, temperature: 0 });
    const chunks = [];
    for await (const c of e.chat.completions.create({ messages, tools, max_tokens: 12, temperature: 0, stream: true })) chunks.push(c);
    const noTools = await e.chat.completions.create({ messages, tools, tool_choice: 'none', max_tokens: 12, temperature: 0 });
    // The next turn: the call and its result go back through the template.
    const call = whole.choices[0].message;
    const next = await e.chatPrompt({ messages: [...messages, call, { role: 'tool', tool_call_id: call.tool_calls[0].id, content: '{"temp": 14}' }], tools });
    return { whole, chunks, noTools: noTools.choices[0], next: next.text, format: e.info.toolFormat };
  }, { template });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.format, 'hermes');
  const c = got.whole.choices[0];
  assert.equal(c.finish_reason, 'tool_calls');
  assert.equal(c.message.content, 'Let me check.');
  assert.equal(c.message.tool_calls.length, 1);
  const tc = c.message.tool_calls[0];
  assert.equal(tc.type, 'function');
  assert.equal(tc.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(tc.function.arguments), { city: 'Paris', days: 2 });
  assert.match(tc.id, /^[A-Za-z0-9]{9}$/);
  const content = got.chunks.map((x) => x.choices[0]?.delta?.content ?? '').join('');
  assert.equal(content, 'Let me check.', 'no part of the call streams as content');
  const deltas = got.chunks.flatMap((x) => x.choices[0]?.delta?.tool_calls ?? []);
  assert.equal(deltas.length, 1);
  assert.equal(deltas[0].index, 0);
  assert.equal(deltas[0].function.name, 'get_weather');
  assert.equal(got.chunks.map((x) => x.choices[0]?.finish_reason).filter(Boolean).pop(), 'tool_calls');
  // tool_choice 'none': the template sees no tools and nothing is parsed.
  assert.equal(got.noTools.finish_reason, 'stop');
  assert.match(got.noTools.message.content, /<tool_call>/);
  assert.ok(got.next.includes('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'), got.next);
  assert.ok(got.next.includes('<tool_response>\n{"temp": 14}\n</tool_response>'), got.next);
  await p.context().close();
});

test('a gated repo: hfToken goes to the model host only, never into errors, info or the Cache API', { timeout: 180000 }, async () => {
  // The "hub" needs the token and redirects weights to a "CDN" on another
  // origin, as Hugging Face does; both answer cross-origin requests.
  const TOKEN = 'hf_browser_SeCrEt_4242';
  const WRONG = 'hf_wrong_browser_777';
  const cdn = await startServer({ root: FIX, cors: true });
  const hub = await startServer({
    mounts: { '/org/gated/resolve/main/': path.join(FIX, 'llama_tiny') },
    auth: { '/': TOKEN },
    cors: true,
    redirect: (p) => (p.endsWith('.safetensors') ? `${cdn.url}llama_tiny/${path.basename(p)}` : null),
  });
  const p = await page();
  try {
    const pr = ref('llama_tiny').prompts[0];
    const got = await run(p, async (T, a) => {
      const out = {};
      const endpoint = a.hub.replace(/\/$/, '');
      const failure = async (opts) => {
        try { await T.Engine.load('org/gated', { hfEndpoint: endpoint, useCache: false, ...opts }); return 'loaded'; } catch (e) { return { code: e.code, status: e.status, url: e.url, message: e.message }; }
      };
      out.none = await failure({});
      out.wrong = await failure({ hfToken: a.wrong });
      await caches.delete('tramontane-v1');
      await T.Engine.cache.delete('org/gated', { hfEndpoint: endpoint });
      const e = await T.Engine.load('org/gated', { hfEndpoint: endpoint, hfToken: a.token });
      out.ids = (await e.completions.create({ prompt: a.ids, ...a.greedy })).token_ids;
      out.info = JSON.stringify(e.info);
      // What the Cache API holds: keys (requests) and responses with headers.
      const cache = await caches.open('tramontane-v1');
      out.cached = [];
      for (const req of await cache.keys()) {
        const resp = await cache.match(req);
        out.cached.push({ url: req.url, reqHeaders: [...req.headers], respHeaders: [...resp.headers] });
      }
      await e.unload();
      // The general `headers` option (a Headers object), through the worker.
      const w = await T.WorkerEngine.load(`${endpoint}/org/gated/resolve/main/`, { useCache: false, headers: new Headers({ Authorization: `Bearer ${a.token}` }) });
      out.workerIds = (await w.completions.create({ prompt: a.ids, ...a.greedy })).token_ids;
      w.terminate();
      return out;
    }, { hub: hub.url, token: TOKEN, wrong: WRONG, ids: pr.input_ids, greedy: GREEDY });
    assert.ok(!got.thrown, JSON.stringify(got.thrown));
    // Without a token: NETWORK 401 that says what to do.
    assert.equal(got.none.code, 'NETWORK');
    assert.equal(got.none.status, 401);
    assert.ok(got.none.url.startsWith(hub.url + 'org/gated/resolve/main/'), got.none.url);
    assert.match(got.none.message, /gated or private/);
    assert.match(got.none.message, /hfToken/);
    // A wrong token: refused, not echoed.
    assert.equal(got.wrong.status, 401);
    assert.match(got.wrong.message, /not accepted/);
    assert.ok(!JSON.stringify(got.wrong).includes(WRONG));
    // With it: the model loads and generates, by hfToken and by headers in a worker.
    assert.deepEqual(got.ids, pr.greedy.new_ids);
    assert.deepEqual(got.workerIds, pr.greedy.new_ids);
    assert.ok(!got.info.includes(TOKEN), 'no token in info');
    // The cache holds the model's files, and no token anywhere.
    const ours = got.cached.filter((c) => c.url.startsWith(hub.url));
    assert.ok(ours.some((c) => c.url.endsWith('config.json')) && ours.filter((c) => c.url.includes('model-0000')).length === 3, JSON.stringify(got.cached.map((c) => c.url)));
    for (const c of got.cached) {
      assert.ok(!c.url.includes(TOKEN), c.url);
      assert.ok(!c.reqHeaders.some(([k, v]) => k === 'authorization' || v.includes(TOKEN)), JSON.stringify(c.reqHeaders));
      assert.ok(!c.respHeaders.some(([, v]) => v.includes(TOKEN)), JSON.stringify(c.respHeaders));
    }
    // The hub saw the token on its GETs (preflights carry none); the CDN served
    // the weights and never saw it.
    const hubGets = hub.log.filter((l) => l.method === 'GET');
    assert.ok(hubGets.filter((l) => l.authorization === `Bearer ${TOKEN}`).length >= 4, JSON.stringify(hubGets));
    assert.ok(hubGets.every((l) => [null, `Bearer ${TOKEN}`, `Bearer ${WRONG}`].includes(l.authorization)));
    const cdnGets = cdn.log.filter((l) => l.method === 'GET');
    assert.ok(cdnGets.filter((l) => l.path.includes('model-0000')).length >= 6, JSON.stringify(cdnGets));
    assert.ok(cdn.log.every((l) => l.authorization === null), JSON.stringify(cdn.log));
  } finally {
    await p.context().close();
    await hub.close();
    await cdn.close();
  }
});

test('every bad request field is INVALID_REQUEST by name; pre-aborted requests never run; the engine still answers', { timeout: 120000 }, async () => {
  const p = await page();
  const r = ref('llama_tiny');
  const pr = r.prompts[0];
  const got = await run(p, async (T, a) => {
    const e = await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false });
    const w = await T.WorkerEngine.load('/tests/fixtures/llama_tiny/', { useCache: false });
    const bad = [
      ['max_tokens', { max_tokens: 0 }], ['max_tokens', { max_tokens: 2.5 }], ['temperature', { temperature: -1 }],
      ['temperature', { temperature: NaN }], ['top_p', { top_p: 0 }], ['top_p', { top_p: 1.5 }], ['top_k', { top_k: -3 }],
      ['seed', { seed: -1 }], ['stop', { stop: [1] }], ['repetition_penalty', { repetition_penalty: 0 }],
      ['frequency_penalty', { frequency_penalty: Infinity }], ['presence_penalty', { presence_penalty: 'x' }],
      ['top_logprobs', { logprobs: true, top_logprobs: 99 }], ['prompt', { prompt: [1, -1] }], ['prompt', { prompt: [1.5] }],
    ];
    const codes = [];
    for (const [field, extra] of bad) {
      for (const eng of [e, w]) {
        try {
          await eng.completions.create({ prompt: a.ids, ...extra });
          codes.push([field, 'accepted']);
        } catch (x) { codes.push([field, x.code, x.message.includes(field)]); }
      }
    }
    const ctl = new AbortController();
    ctl.abort();
    const aborted = [];
    for (const eng of [e, w]) {
      const t0 = performance.now();
      try { await eng.completions.create({ prompt: a.ids, max_tokens: 500, ignore_eos: true, signal: ctl.signal }); aborted.push('ran'); } catch (x) { aborted.push(x.code); }
      try {
        for await (const c of eng.completions.create({ prompt: a.ids, max_tokens: 500, ignore_eos: true, stream: true, signal: ctl.signal })) { void c; aborted.push('chunk'); }
      } catch (x) { aborted.push(x.code); }
      aborted.push(performance.now() - t0 < 5000);
    }
    const after = [];
    for (const eng of [e, w]) {
      await eng.resetChat();
      after.push((await eng.completions.create({ prompt: a.ids, max_tokens: 16, temperature: 0, ignore_eos: true })).token_ids);
    }
    w.terminate();
    return { codes, aborted, after, nBad: bad.length };
  }, { ids: pr.input_ids });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.codes.length, 2 * got.nBad, 'every bad field, on both engines');
  for (const c of got.codes) assert.deepEqual(c.slice(1), ['INVALID_REQUEST', true], JSON.stringify(c));
  assert.deepEqual(got.aborted, ['ABORTED', 'ABORTED', true, 'ABORTED', 'ABORTED', true]);
  assert.equal(got.after.length, 2, 'both engines answered');
  for (const ids of got.after) assert.deepEqual(ids, pr.greedy.new_ids);
  await p.context().close();
});

register();
