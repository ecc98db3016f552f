// Limits in the browser: load options out of range, a context no device can
// hold and a model over the memory limit are refused in words before the
// weights are fetched; messages of the wrong shape are INVALID_REQUEST naming
// the field; and the same engine then loads and answers as transformers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../scripts/server.mjs';
import { launch, openPage, runInPage } from './browser.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const REF = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests/fixtures/llama_tiny/reference.json'), 'utf8'));
let server, browser;

before(async () => {
  server = await startServer({ root: ROOT });
  browser = await launch();
});
after(async () => { await browser?.close(); await server?.close(); });

const page = () => openPage(browser, server.url + 'tests/browser/blank.html');
const run = runInPage;

for (const kind of ['Engine', 'WorkerEngine']) {
  test(`${kind}: limits and shapes are refused by name; the engine then answers as transformers`, { timeout: 180000 }, async () => {
    const p = await page();
    const prompt = REF.prompts[0];
    const got = await run(p, async (T, a) => {
      const src = '/tests/fixtures/llama_tiny/';
      const e = await T[a.kind].load(src, { useCache: false });
      const r = {};
      const attempt = async (name, f) => {
        const t0 = performance.now();
        try { await f(); r[name] = { ok: true }; } catch (x) { r[name] = { code: x.code, message: x.message, ms: performance.now() - t0 }; }
      };
      await attempt('context2e40', () => e.load(src, { useCache: false, contextLength: 2 ** 40 }));
      await attempt('chunk', () => e.load(src, { useCache: false, prefillChunk: 5000 }));
      await attempt('parallel', () => e.load(src, { useCache: false, parallelDownloads: 0 }));
      await attempt('gpuBytesNaN', () => e.load(src, { useCache: false, maxGpuBytes: NaN }));
      await attempt('kvCache', () => e.load(src, { useCache: false, kvCache: 'f8' }));
      await attempt('kernels', () => e.load(src, { useCache: false, kernels: 'fast' }));
      await attempt('context2e31', () => e.load(src, { useCache: false, contextLength: 2 ** 31 }));
      await attempt('oom', () => e.load(src, { useCache: false, maxGpuBytes: 64 * 1024 }));
      await e.load(src, { useCache: false });
      const chat = (messages) => e.chat.completions.create({ messages, max_tokens: 2 });
      await attempt('role', () => chat([{ role: 7, content: 'x' }]));
      await attempt('toolName', () => chat([{ role: 'user', content: 'x' }, { role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 3, arguments: '{}' } }] }]));
      await attempt('toolCallId', () => chat([{ role: 'tool', content: 'x', tool_call_id: {} }]));
      await attempt('tools', () => e.chat.completions.create({ messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: {} }] }));
      await attempt('badId', () => e.completions.create({ prompt: [1, 10 ** 6], max_tokens: 1 }));
      r.memory = { ...e.info };
      r.tokens = (await e.completions.create({ prompt: a.ids, max_tokens: a.want.length, temperature: 0, ignore_eos: true })).token_ids;
      return r;
    }, { kind, ids: prompt.input_ids, want: prompt.greedy.new_ids });
    assert.ok(!got.thrown, JSON.stringify(got.thrown));
    const refused = (name, code, field) => {
      assert.equal(got[name]?.code, code, `${name}: ${JSON.stringify(got[name])}`);
      if (field) assert.match(got[name].message, field, name);
    };
    refused('context2e40', 'INVALID_REQUEST', /contextLength/);
    refused('chunk', 'INVALID_REQUEST', /prefillChunk/);
    refused('parallel', 'INVALID_REQUEST', /parallelDownloads/);
    refused('gpuBytesNaN', 'INVALID_REQUEST', /maxGpuBytes/);
    refused('kvCache', 'INVALID_REQUEST', /kvCache/);
    refused('kernels', 'INVALID_REQUEST', /kernels/);
    refused('context2e31', 'UNSUPPORTED', /context/);
    refused('oom', 'OUT_OF_MEMORY', /max_gpu_bytes/);
    refused('role', 'INVALID_REQUEST', /messages\[0\]\.role/);
    refused('toolName', 'INVALID_REQUEST', /messages\[1\]\.tool_calls\[0\]\.function\.name/);
    refused('toolCallId', 'INVALID_REQUEST', /messages\[0\]\.tool_call_id/);
    refused('tools', 'INVALID_REQUEST', /tools\[0\]\.function\.name/);
    refused('badId', 'INVALID_REQUEST', /vocabulary/);
    // GPU bytes by kind, and the wasm memory's peak, are reported.
    const m = got.memory;
    assert.equal(m.gpuMemory.weights, m.weightBytes);
    assert.ok(m.gpuMemory.kvCache > 0 && m.gpuMemory.activations > 0, JSON.stringify(m.gpuMemory));
    assert.ok(m.gpuMemory.weights + m.gpuMemory.kvCache + m.gpuMemory.activations + m.gpuMemory.scratch <= m.gpuBytes);
    assert.ok(m.wasmMemoryBytes > 0 && m.wasmMemoryBytes < 256 * 2 ** 20, String(m.wasmMemoryBytes));
    assert.equal(got.tokens.length, prompt.greedy.new_ids.length);
    assert.deepEqual(got.tokens, prompt.greedy.new_ids);
    await p.context().close();
  });
}
