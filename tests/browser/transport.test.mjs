// The transport under a misbehaving server (scripts/server.mjs's /chaos/<modes>/
// prefix): dropped connections resume with a Range request from where they
// stopped, 5xx answers are retried, and what cannot be recovered is a typed
// error (NETWORK with the URL and status) in seconds, never a hang, a trap or
// wrong weights. The cache never keeps part of a model. Each test has its own
// page; "once" modes carry a tag of their own so no test depends on another.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../scripts/server.mjs';
import { launch, openPage, runInPage } from './browser.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIX = path.join(ROOT, 'tests/fixtures');
const REF = JSON.parse(fs.readFileSync(path.join(FIX, 'llama_tiny/reference.json'), 'utf8'));
const PROMPT = { ids: REF.prompts[0].input_ids, want: REF.prompts[0].greedy.new_ids };
const GREEDY = { max_tokens: REF.prompts[0].greedy.new_ids.length, temperature: 0, ignore_eos: true };
const TINY = '/tests/fixtures/llama_tiny/';
const SHARD1 = 'model-00001-of-00003.safetensors';
const SHARD2 = 'model-00002-of-00003.safetensors';
const GGUF = '/tests/fixtures/moe_gguf/moe-q4_0.gguf';
const chaos = (modes, p = TINY) => `/chaos/${modes}${p}`;
let server, browser;

before(async () => {
  server = await startServer({ root: ROOT });
  browser = await launch();
});
after(async () => { await browser?.close(); await server?.close(); });

const page = () => openPage(browser, server.url + 'tests/browser/blank.html');
const run = runInPage;

// In the page: a load's error (or 'loaded'), and how long it took.
const TRY_LOAD = `async (e, src, opts) => {
  const t0 = performance.now();
  try { await e.load(src, opts); return { loaded: true, ms: performance.now() - t0 }; }
  catch (x) { return { code: x.code, url: x.url, status: x.status, message: x.message, ms: performance.now() - t0 }; }
}`;

const logOf = (modes) => server.log.filter((l) => l.path.startsWith(`/chaos/${modes}/`));

test('a connection dropped mid-shard resumes with a Range request from where it stopped', { timeout: 120000 }, async () => {
  const p = await page();
  // The server waits two seconds before closing: a browser drops received bytes
  // the page has not read yet when a body fails, and the point is to see the
  // resume from the exact byte.
  const modes = `drop-once=100000,hold=2000,only=${SHARD1},tag=drop`;
  const got = await run(p, async (T, a) => {
    const e = await T.Engine.load(a.src, { useCache: false });
    const out = await e.completions.create({ prompt: a.ids, ...a.greedy });
    return { ids: out.token_ids, network: e.info.network };
  }, { src: chaos(modes), ids: PROMPT.ids, greedy: GREEDY });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.deepEqual(got.ids, PROMPT.want, 'the reference greedy tokens');
  const shard = logOf(modes).filter((l) => l.file.endsWith(SHARD1));
  assert.equal(shard[0].range, null);
  assert.equal(shard[0].dropped, true);
  assert.equal(shard[0].sent, 100000);
  const resumed = shard.find((l) => l.range === 'bytes=100000-');
  assert.ok(resumed, `a Range request from byte 100000: ${JSON.stringify(shard)}`);
  assert.equal(resumed.status, 206);
  // Nothing was asked for twice from the start.
  assert.equal(shard.filter((l) => l.range === null).length, 1);
  assert.ok(got.network.requests >= logOf(modes).length - 1, JSON.stringify(got.network));
  assert.deepEqual(p.uncaught, []);
  await p.context().close();
});

test('a 503 on the first request of every file: retried, the model loads', { timeout: 120000 }, async () => {
  const p = await page();
  const modes = 'status-once=503,tag=s503';
  const got = await run(p, async (T, a) => {
    const e = await T.Engine.load(a.src, { useCache: false });
    return { ids: (await e.completions.create({ prompt: a.ids, ...a.greedy })).token_ids, network: e.info.network };
  }, { src: chaos(modes), ids: PROMPT.ids, greedy: GREEDY });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.deepEqual(got.ids, PROMPT.want);
  const log = logOf(modes);
  const refused = log.filter((l) => l.status === 503);
  assert.ok(refused.length >= 5, `every file's first request: ${refused.length}`);
  for (const r of refused) assert.ok(log.some((l) => l.file === r.file && l.status === 200), `${r.file} was asked again`);
  assert.ok(got.network.requests >= log.length - 1, 'retries are counted');
  await p.context().close();
});

test('failures that do not go away: NETWORK with the URL and status, in seconds', { timeout: 120000 }, async () => {
  const p = await page();
  const cases = {
    // Four attempts (backoff 250 + 500 + 1000 ms), then the error.
    always500: chaos(`status-always=500,only=${SHARD2}`),
    // A missing file is no network failure: at once.
    missing: chaos(`status-always=404,only=${SHARD2}`),
  };
  const got = await run(p, async (T, a) => {
    const tryLoad = new Function(`return ${a.tryLoad}`)();
    const e = new T.Engine();
    const out = {};
    for (const [k, src] of Object.entries(a.cases)) out[k] = await tryLoad(e, src, { useCache: false });
    return out;
  }, { cases, tryLoad: TRY_LOAD });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  const a = got.always500;
  assert.equal(a.code, 'NETWORK', JSON.stringify(a));
  assert.equal(a.status, 500);
  assert.ok(a.url.endsWith(`/chaos/status-always=500,only=${SHARD2}${TINY}${SHARD2}`), a.url);
  assert.match(a.message, /4 attempts/);
  assert.ok(a.ms < 15000, `${a.ms} ms`);
  assert.equal(server.log.filter((l) => l.path === new URL(a.url).pathname).length, 4, 'one request and three retries');
  const m = got.missing;
  assert.equal(m.code, 'NETWORK', JSON.stringify(m));
  assert.equal(m.status, 404);
  assert.ok(m.url.endsWith(SHARD2), m.url);
  assert.equal(server.log.filter((l) => l.path === new URL(m.url).pathname).length, 1, 'a 404 is not retried');
  await p.context().close();
});

test('an 8 GB Content-Length on a small file: NETWORK in seconds, nothing allocated for it', { timeout: 120000 }, async () => {
  // The server claims 8e9 bytes and closes the connection after the real ones:
  // the body ends early on every attempt, so the file never arrives. That is
  // NETWORK (the file is fine, the transport is not), also for config.json and
  // tokenizer.json, which the claim puts over their size limits: a claim over
  // the limit is checked against the body before the file is called too big.
  // A shard whose tensors all lie within the real bytes loads: its weights are
  // those bytes, and the claim is never needed (nor allocated). The server
  // holds that connection open a while after its real bytes: Chromium drops
  // bytes the page has not read yet when a body fails, so an early close
  // would make even the real bytes arrive only by chance.
  const p = await page();
  const lie = 'lie-length=8000000000';
  const cases = { gguf: chaos(lie, GGUF), folder: chaos(lie), tokenizer: chaos(`${lie},only=tokenizer.json`) };
  const got = await run(p, async (T, a) => {
    const tryLoad = new Function(`return ${a.tryLoad}`)();
    const e = new T.Engine();
    const out = {};
    for (const [k, src] of Object.entries(a.cases)) out[k] = await tryLoad(e, src, { useCache: false });
    await e.load(a.shard, { useCache: false });
    out.shardIds = (await e.completions.create({ prompt: a.ids, ...a.greedy })).token_ids;
    out.mem = await T.Engine.wasmMemoryBytes();
    return out;
  }, { cases, shard: chaos(`${lie},hold=1500,only=model-00003`), tryLoad: TRY_LOAD, ids: PROMPT.ids, greedy: GREEDY });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  for (const [k, file] of [['gguf', 'moe-q4_0.gguf'], ['folder', 'config.json'], ['tokenizer', 'tokenizer.json']]) {
    const r = got[k];
    assert.equal(r.code, 'NETWORK', `${k}: ${JSON.stringify(r)}`);
    assert.ok(r.url.endsWith(file), r.url);
    assert.ok([200, 206].includes(r.status), `${k}: status ${r.status}`);
    // (Attempts: four without progress; more when the browser dropped bytes it had.)
    assert.match(r.message, /of 8000000000 \(.*\), after \d+ attempts/);
    assert.ok(r.ms < 15000, `${k}: ${r.ms} ms`);
  }
  assert.deepEqual(got.shardIds, PROMPT.want);
  assert.ok(got.mem < 1e9, `wasm memory ${got.mem}`);
  assert.deepEqual(p.uncaught, []);
  await p.context().close();
});

test('wrong 206 answers are refused: NETWORK naming the URL and status 206; a 200 of the whole file is fine', { timeout: 120000 }, async () => {
  // A GGUF is read for its header first, then its tensors from further back:
  // Range requests, which get a bad 206 (every time). And the first request
  // for a safetensors shard breaks at byte 100000: the resumed one gets one.
  const p = await page();
  const cases = {};
  for (const bad of ['offset', 'total', 'length']) cases[bad] = chaos(`bad-range=${bad}`, GGUF);
  cases.shard = chaos(`drop-once=100000,hold=2000,bad-range=offset,only=${SHARD1}`);
  const ignored = { gguf: chaos('ignore-range', GGUF), shard: chaos(`drop-once=100000,hold=2000,ignore-range,only=${SHARD1}`) };
  const got = await run(p, async (T, a) => {
    const tryLoad = new Function(`return ${a.tryLoad}`)();
    const e = new T.Engine();
    const out = {};
    for (const [k, src] of Object.entries(a.cases)) out[k] = await tryLoad(e, src, { useCache: false });
    await e.load(a.ignored.gguf, { useCache: false });
    out.ggufIgnored = (await e.completions.create({ prompt: [1, 2, 3], max_tokens: 4, temperature: 0, ignore_eos: true })).token_ids;
    await e.load(a.ignored.shard, { useCache: false });
    out.shardIgnored = (await e.completions.create({ prompt: a.ids, ...a.greedy })).token_ids;
    await e.load(a.gguf, { useCache: false });
    out.ggufPlain = (await e.completions.create({ prompt: [1, 2, 3], max_tokens: 4, temperature: 0, ignore_eos: true })).token_ids;
    return out;
  }, { cases, ignored, gguf: GGUF, tryLoad: TRY_LOAD, ids: PROMPT.ids, greedy: GREEDY });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  for (const bad of ['offset', 'total', 'length', 'shard']) {
    const r = got[bad];
    assert.equal(r.code, 'NETWORK', `${bad}: ${JSON.stringify(r)}`);
    assert.equal(r.status, 206, bad);
    assert.match(r.message, /a 206 answer to a request for bytes \d+- with Content-Range/);
    assert.match(r.message, bad === 'shard' ? /after \d+ attempts/ : /after 4 attempts/);
    assert.ok(r.ms < 15000, `${bad}: ${r.ms} ms`);
  }
  for (const bad of ['offset', 'total', 'length']) assert.ok(got[bad].url.endsWith(`/chaos/bad-range=${bad}${GGUF}`), got[bad].url);
  assert.ok(got.shard.url.endsWith(`${TINY}${SHARD1}`), got.shard.url);
  assert.match(got.offset.message, /it starts at byte \d+/);
  assert.match(got.total.message, /the file has 122560 bytes/);
  assert.match(got.length.message, /its Content-Length is \d+/);
  assert.match(got.shard.message, /bytes 100000- with Content-Range "bytes 99000-/);
  // A 200 to a Range request (the whole file): read up to the byte wanted.
  assert.deepEqual(got.ggufIgnored, got.ggufPlain);
  assert.deepEqual(got.shardIgnored, PROMPT.want);
  const log = logOf(`drop-once=100000,hold=2000,ignore-range,only=${SHARD1}`).filter((l) => l.file.endsWith(SHARD1));
  assert.ok(log.some((l) => l.range === 'bytes=100000-' && l.status === 200), JSON.stringify(log));
  assert.ok(logOf('ignore-range').some((l) => l.range && l.status === 200));
  await p.context().close();
});

test('after every kind of failure, the same Engine loads the good model and gives the reference tokens', { timeout: 180000 }, async () => {
  const p = await page();
  const srcs = [
    chaos(`status-always=500,only=${SHARD2}`),
    chaos(`status-always=404,only=${SHARD1}`),
    chaos('lie-length=8000000000', GGUF),
    chaos('lie-length=8000000000'),
    chaos('bad-range=offset', GGUF),
    chaos('bad-range=total', GGUF),
    chaos('bad-range=length', GGUF),
    chaos(`drop-once=100000,hold=2000,bad-range=total,only=${SHARD1},tag=same`),
    chaos(`fail-after=50000,only=${SHARD2}`),
  ];
  const got = await run(p, async (T, a) => {
    const tryLoad = new Function(`return ${a.tryLoad}`)();
    const e = new T.Engine();
    const codes = [];
    for (const src of a.srcs) codes.push((await tryLoad(e, src, { useCache: false })).code);
    await e.load('/tests/fixtures/llama_tiny/', { useCache: false });
    return { codes, ids: (await e.completions.create({ prompt: a.ids, ...a.greedy })).token_ids };
  }, { srcs, tryLoad: TRY_LOAD, ids: PROMPT.ids, greedy: GREEDY });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.deepEqual(got.codes, srcs.map(() => 'NETWORK'));
  assert.deepEqual(got.ids, PROMPT.want);
  assert.deepEqual(p.uncaught, []);
  await p.context().close();
});

test('an abort during the wait before a retry ends the load at once (ABORTED)', { timeout: 120000 }, async () => {
  const p = await page();
  const src = chaos('status-always=503,only=config.json,tag=abort');
  const got = await run(p, async (T, a) => {
    const e = new T.Engine();
    const ctl = new AbortController();
    // Abort 100 ms after the second 503 (in the 500 ms wait that follows).
    const fetch0 = window.fetch;
    let n = 0, abortedAt = 0;
    window.fetch = function (...args) {
      const r = fetch0.apply(this, args);
      r.then((resp) => {
        if (resp.url.endsWith('config.json') && resp.status === 503 && ++n === 2) {
          setTimeout(() => { abortedAt = performance.now(); ctl.abort(); }, 100);
        }
      }, () => {});
      return r;
    };
    let code = null;
    try { await e.load(a.src, { useCache: false, signal: ctl.signal }); } catch (x) { code = x.code; }
    const ms = performance.now() - abortedAt;
    window.fetch = fetch0;
    return { code, ms, n, abortedAt };
  }, { src });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got.code, 'ABORTED');
  assert.ok(got.abortedAt > 0, 'aborted in the wait');
  assert.ok(got.ms < 300, `ABORTED ${got.ms} ms after the abort`);
  assert.equal(server.log.filter((l) => l.path === `${src}config.json`).length, 2, 'no request after the abort');
  await p.context().close();
});

test('the cache never keeps part of a model: a failed load and a resumed download leave nothing (files whole, in Cache API parts, in OPFS from the page and from a worker)', { timeout: 180000 }, async () => {
  const p = await page();
  // Files cached whole, then in parts of 64 KiB (the shards and tokenizer
  // are larger): a part stored before the failure goes too; then those files
  // in OPFS: a file written before the failure goes too.
  // Then in a worker, where OPFS files are written through synchronous handles.
  for (const [tag, opts, inWorker] of [['cache', {}], ['parts', { cachePartBytes: 65536, cacheStore: 'cacheApi' }], ['opfs', { cachePartBytes: 65536, cacheStore: 'opfs' }], ['opfs-worker', { cachePartBytes: 65536 }, true]]) {
    // A 404 is not retried: the first load of `failing` fails midway (the
    // config, tokenizer and first shard have come), the second finds the file.
    const failing = chaos(`status-once=404,only=${SHARD2},tag=${tag}`);
    // Shard 1's first body breaks and is resumed: the model loads, its cache
    // copy fails, so none of the model is kept.
    const resumed = chaos(`drop-once=100000,only=${SHARD1},tag=${tag}`);
    const got = await run(p, async (T, a) => {
      const keys = async (part) => {
        const c = await caches.open('tramontane-v1');
        return (await c.keys()).map((r) => r.url).filter((u) => u.includes(part));
      };
      // Every OPFS file of the cache (the earlier tags' models are deleted).
      const opfsFiles = async () => (await (await import('/tests/browser/opfs-files.mjs')).opfsFiles()).map(([name]) => name);
      // The cache settles after a failed load: wait for it (a few seconds at most).
      const settled = async (part) => {
        let k = [];
        for (let i = 0; i < 50; i++) {
          k = [...(await keys(part)), ...(await opfsFiles())];
          if (k.length === 0) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        return k;
      };
      const out = {};
      const e = a.inWorker ? new T.WorkerEngine(new Worker('/pkg/worker.js', { type: 'module' })) : new T.Engine();
      try { await e.load(a.failing, a.opts); out.first = 'loaded'; } catch (x) { out.first = { code: x.code, status: x.status, url: x.url }; }
      out.keysAfterFailure = await settled(a.failing);
      out.hasAfterFailure = await T.Engine.cache.has(a.failing);
      await e.load(a.failing, a.opts);
      out.second = e.info.network;
      out.secondIds = (await e.completions.create({ prompt: a.ids, ...a.greedy })).token_ids;
      out.hasAfterSecond = await T.Engine.cache.has(a.failing);
      out.partKeys = (await keys(a.failing)).filter((u) => u.includes('tramontane-part=')).length;
      out.opfsFiles = (await opfsFiles()).length;
      out.store = e.info.network.cacheStore;
      await e.load(a.failing, a.opts);
      out.third = e.info.network;
      await T.Engine.cache.delete(a.failing);

      await e.load(a.resumed, a.opts);
      out.resumed = e.info.network;
      out.resumedIds = (await e.completions.create({ prompt: a.ids, ...a.greedy })).token_ids;
      out.keysAfterResumed = await settled(a.resumed);
      out.hasAfterResumed = await T.Engine.cache.has(a.resumed);
      await e.load(a.resumed, a.opts);
      out.resumedAgain = e.info.network;
      await T.Engine.cache.delete(a.resumed);
      e.terminate?.();
      return out;
    }, { failing, resumed, opts, inWorker, ids: PROMPT.ids, greedy: GREEDY });
    assert.ok(!got.thrown, `${tag}: ${JSON.stringify(got.thrown)}`);
    assert.equal(got.first.code, 'NETWORK', JSON.stringify(got.first));
    assert.equal(got.first.status, 404);
    assert.deepEqual(got.keysAfterFailure, [], 'nothing of the failed load is cached');
    assert.equal(got.hasAfterFailure, false);
    assert.equal(got.second.cacheHits, 0, 'the next load goes to the network');
    assert.ok(got.second.requests >= 9, JSON.stringify(got.second));
    assert.deepEqual(got.secondIds, PROMPT.want);
    assert.equal(got.hasAfterSecond, true, 'a clean load is cached');
    if (tag === 'parts') assert.ok(got.partKeys > 2, `files over 64 KiB cached in parts: ${got.partKeys} part keys`);
    else assert.equal(got.partKeys, 0, 'files under 32 MiB cached whole, or in OPFS');
    assert.equal(got.store, tag.startsWith('opfs') ? 'opfs' : 'cacheApi', 'where files over a part go');
    if (tag.startsWith('opfs')) assert.ok(got.opfsFiles >= 2, `files over 64 KiB in OPFS: ${got.opfsFiles}`);
    else assert.equal(got.opfsFiles, 0);
    assert.equal(got.third.requests, 0);

    assert.deepEqual(got.resumedIds, PROMPT.want);
    assert.match(got.resumed.cacheWarning ?? '', /could not be cached/);
    assert.deepEqual(got.keysAfterResumed, [], 'a resumed download is never cached, nor the rest of its model');
    assert.equal(got.hasAfterResumed, false);
    assert.equal(got.resumedAgain.cacheHits, 0);
    assert.ok(got.resumedAgain.requests >= 9, JSON.stringify(got.resumedAgain));
  }
  assert.deepEqual(p.uncaught, []);
  await p.context().close();
});
