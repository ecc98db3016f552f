// A model file of several GB through the cache, in a browser profile on disk
// (as a person's browser has: an incognito context keeps its storage in
// memory and stops at ~1.5 GB): downloaded by a WorkerEngine (as the demo
// does), which keeps it as one OPFS file written through a synchronous
// handle, named by its Cache API index entry. The file is sparse: the MoE GGUF fixture's tensors spread
// over 4.4 GB with holes between them, the last ones past 4 GiB (offsets a
// 32-bit wasm must not truncate), several straddling the boundary between two
// 32 MiB parts (where Cache API parts would split them). The server sends all
// of it (the holes as zeros) and the cache stores all of it; a reload with the
// network cut, in the page, opens the file at the tensors instead of reading
// the holes; a worker reads it through a synchronous handle at those offsets.
// The model is the fixture's, so its greedy tokens are transformers' reference.
// Before that, a download killed half-way (its worker terminated) leaves its
// partial file, which the next load removes.
// (Cache API parts, the store where OPFS cannot be written, are checked on a
// small file in engine.test.mjs and transport.test.mjs.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../scripts/server.mjs';
import { launchProfile } from './browser.mjs';
import { sparseGguf } from './sparse-gguf.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = path.join(ROOT, 'target/browser-bigcache');
const PROFILE = path.join(OUT, 'profile');
const FIXTURE = path.join(ROOT, 'tests/fixtures/moe_gguf/moe-q4_0.gguf');
const PART = 32 << 20; // cachePartBytes' default
let server, ctx, file;

before(async () => {
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  // Tensor i (i > 0) starts 96 bytes before the end of cache part 6i, so it
  // straddles two parts; the 23rd lies past 4 GiB.
  file = sparseGguf(FIXTURE, path.join(OUT, 'sparse.gguf'), (i, _t, end) => (i === 0 ? 0 : Math.max(end, i * 6 * PART - 5760 - 96)));
  server = await startServer({ root: ROOT });
  ctx = await launchProfile(PROFILE);
});
after(async () => {
  await ctx?.close();
  await server?.close();
  fs.rmSync(OUT, { recursive: true, force: true });
});

test('a 4.4 GB model file is cached in OPFS from a worker, and loads from there in the page with the network cut, read from its tensors, and in a worker (sparse GGUF, tensors past 4 GiB)', { timeout: 600000 }, async () => {
  // The cached copy takes the file's size on disk, in the profile.
  const fsStat = fs.statfsSync(OUT);
  const free = fsStat.bavail * fsStat.bsize;
  if (free < file.size + (1 << 30)) {
    console.log(`SKIPPED: ${(free / 1e9).toFixed(1)} GB free on disk, the cached copy needs ${(file.size / 1e9 + 1).toFixed(1)}`);
    assert.equal(process.env.TRAMONTANE_ALLOW_SKIP, '1', 'not enough disk (set TRAMONTANE_ALLOW_SKIP=1 to allow skipping here)');
    return;
  }
  assert.ok(file.size > 4.3e9, `the file is ${file.size} bytes`);
  assert.ok(file.tensors.at(-1).at > 2 ** 32, 'the last tensor lies past 4 GiB');
  const r = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests/fixtures/moe_gguf/reference.json'), 'utf8')).models['moe-q4_0.gguf'].prompts[0];
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await page.goto(server.url + 'tests/browser/blank.html');
  const src = '/target/browser-bigcache/sparse.gguf';
  const killedRun = await page.evaluate(async (src) => {
    const T = await import('/pkg/index.js');
    await caches.delete('tramontane-v1');
    const { opfsFiles } = await import('/tests/browser/opfs-files.mjs');
    for (const [name] of await opfsFiles()) await (await navigator.storage.getDirectory()).getDirectoryHandle('tramontane-v1').then((d) => d.removeEntry(name));
    // A download killed half-way (its worker terminated, as a closed tab
    // would be): no code of ours runs to remove its file. While it wrote, it
    // held the OPFS files' lock (shared).
    const killed = new T.WorkerEngine(new Worker('/pkg/worker.js', { type: 'module' }));
    const locks = [];
    await new Promise((stop) => {
      killed.load(src, {
        onProgress: (e) => {
          if (e.phase !== 'download' || e.fileLoaded < 1 << 30 || locks.length) return;
          locks.push(navigator.locks.query().then((q) => q.held.filter((l) => l.name === 'tramontane-v1-opfs').map((l) => l.mode)));
          stop();
        },
      }).catch(() => {});
    });
    const whileWriting = await locks[0];
    killed.terminate();
    await new Promise((r) => setTimeout(r, 500));
    return { whileWriting, leftByKilled: await opfsFiles() };
  }, src);
  const before = server.log.length;
  const t0 = Date.now();
  const got = await page.evaluate(async ([src, ids]) => {
    const T = await import('/pkg/index.js');
    const greedy = async (e) => (await e.completions.create({ prompt: ids, max_tokens: 8, temperature: 0, ignore_eos: true })).token_ids;
    await caches.delete('tramontane-v1');
    const { opfsFiles } = await import('/tests/browser/opfs-files.mjs');
    const w = await T.WorkerEngine.load(src);
    const first = { network: w.info.network, ids: await greedy(w) };
    await w.unload();
    w.terminate();
    // The page's engine started (its wasm fetched) before the network goes.
    const e = await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false });
    const keys = (await (await caches.open('tramontane-v1')).keys()).map((k) => k.url.slice(k.url.indexOf('/target/')));
    const files = await opfsFiles();
    const has = await T.Engine.cache.has(src);
    const realFetch = globalThis.fetch;
    let tried = 0;
    globalThis.fetch = () => { tried++; return Promise.reject(new TypeError('the network is cut')); };
    // Where the cached load opens the file.
    const realSlice = Blob.prototype.slice;
    const opened = [];
    Blob.prototype.slice = function (start, end, type) {
      if (this instanceof File) opened.push(start);
      return realSlice.call(this, start, end, type);
    };
    let second, readingLocks;
    try {
      const t = performance.now();
      // A load reading the cached files holds their lock (a sweep elsewhere waits).
      const reading = [];
      await e.load(src, {
        onProgress: (ev) => {
          if (ev.phase === 'download' && !reading.length) reading.push(navigator.locks.query().then((q) => q.held.filter((l) => l.name === 'tramontane-v1-opfs').map((l) => l.mode)));
        },
      });
      readingLocks = await reading[0];
      second = { network: e.info.network, seconds: (performance.now() - t) / 1000, ids: await greedy(e) };
    } finally {
      globalThis.fetch = realFetch;
      Blob.prototype.slice = realSlice;
    }
    second.opened = opened;
    second.locks = readingLocks;
    await e.unload();
    const w2 = await T.WorkerEngine.load(src);
    const worker = { network: w2.info.network, ids: await greedy(w2) };
    await w2.unload();
    w2.terminate();
    const deleted = await T.Engine.cache.delete(src);
    const left = (await (await caches.open('tramontane-v1')).keys()).length;
    return { first, second, worker, keys, files, has, tried, deleted, left, filesLeft: await opfsFiles() };
  }, [src, r.input_ids]);
  console.log(`cold load and greedy: ${((Date.now() - t0) / 1000).toFixed(1)} s in all; cached reload ${got.second.seconds.toFixed(1)} s`);
  assert.deepEqual(killedRun.whileWriting, ['shared'], 'a write holds the OPFS files\' lock');
  assert.equal(killedRun.leftByKilled.length, 1, `the killed download left its file: ${JSON.stringify(killedRun.leftByKilled)}`);
  assert.ok(killedRun.leftByKilled[0][1] < file.size, 'part of the file');
  assert.equal(got.first.network.cacheWarning, null, 'the first load cached the file');
  assert.deepEqual(got.first.ids, r.greedy, 'the sparse file is the fixture model');
  assert.equal(got.first.network.cacheStore, 'opfs');
  const mine = got.keys.filter((k) => k.startsWith(src)).sort();
  assert.deepEqual(mine, [src, `${src}?tramontane-manifest`], 'the index and the manifest in the Cache API, no parts');
  assert.deepEqual(got.files.map((f) => f[1]), [file.size], 'one OPFS file, the whole GGUF (the killed download\'s went at the next load)');
  assert.equal(got.has, true);
  assert.equal(got.tried, 0, 'no fetch with the network cut');
  assert.equal(got.second.network.requests, 0);
  assert.deepEqual(got.second.locks, ['shared'], 'a load reading the cached file holds the OPFS files\' lock');
  // The file is opened at its start (the header) and then at each tensor
  // after a hole, never in a hole: the holes (4.4 GB) are not read.
  const starts = new Set([0, ...file.tensors.map((t) => t.at)]);
  const stray = got.second.opened.filter((at) => !starts.has(at));
  assert.deepEqual(stray, [], 'every read starts at the header or at a tensor');
  const afterHole = file.tensors.filter((t, i) => i > 0 && t.at - (file.tensors[i - 1].at + file.tensors[i - 1].bytes) > 8 << 20);
  assert.ok(afterHole.length > 20);
  for (const t of afterHole) assert.ok(got.second.opened.includes(t.at), `opened at the tensor at ${t.at}`);
  assert.deepEqual(got.second.ids, r.greedy, 'the cached file gives the same model');
  assert.equal(got.worker.network.requests, 0, 'the worker loads from the cache');
  assert.equal(got.worker.network.cacheSyncReads, 1, 'through a synchronous handle');
  assert.deepEqual(got.worker.ids, r.greedy, 'reading at offsets past 4 GiB');
  assert.equal(got.deleted, true);
  assert.equal(got.left, 0, 'Engine.cache.delete removes the index and the manifest');
  assert.deepEqual(got.filesLeft, [], 'and the OPFS file');
  // The server sent the file once: the cached load asked it for nothing.
  const gets = server.log.slice(before).filter((l) => l.path.includes('sparse.gguf'));
  assert.ok(gets.length >= 1 && gets.length <= 3, `${gets.length} requests for the file`);
});
