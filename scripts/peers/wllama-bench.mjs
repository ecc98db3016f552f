// wllama (llama.cpp compiled to wasm, npm @wllama/wllama) in the same headless
// Chromium as `npm run bench`, measured the same way: one prompt of N tokens,
// M greedy tokens, from llama-server's own timings. The page is cross-origin
// isolated (COOP/COEP) so wllama can run multi-threaded.
//   node scripts/peers/wllama-bench.mjs --wllama DIR [--mode cpu|webgpu] [--prompt-tokens 128] [--gen-tokens 64] [--repetitions 3]
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../server.mjs';
import { launch } from '../../tests/browser/browser.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const arg = (name, d) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : d; };
const opts = {
  mode: arg('mode', 'cpu'),
  model: arg('model', '/models/SmolLM2-135M-Instruct.Q4_1.gguf'),
  promptTokens: Number(arg('prompt-tokens', 128)),
  genTokens: Number(arg('gen-tokens', 64)),
  repetitions: Number(arg('repetitions', 3)),
  threads: Number(arg('threads', 2)),
};
const dir = arg('wllama', path.join(ROOT, 'target/peers/npm/node_modules/@wllama/wllama/esm'));

const server = await startServer({
  root: ROOT,
  mounts: { '/': ROOT, '/wllama/': dir },
  headers: { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' },
});
const browser = await launch();
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') process.stderr.write(`wllama page: ${m.text()}\n`); });
  await page.goto(server.url + 'tests/browser/blank.html');
  const r = await page.evaluate(async (o) => {
    const { Wllama } = await import('/wllama/index.js');
    const w = new Wllama({ default: '/wllama/wasm/wllama.wasm' }, { suppressNativeLog: true });
    let t = performance.now();
    await w.loadModelFromUrl(o.model, {
      n_ctx: o.promptTokens + o.genTokens + 16, n_batch: 512, n_threads: o.threads,
      n_gpu_layers: o.mode === 'webgpu' ? 99999 : 0, useCache: false,
    });
    const load = (performance.now() - t) / 1000;
    // wllama takes text: trim a text until it is N tokens long, measuring
    // with llama-server's own prompt count.
    const words = Array.from({ length: 4 * o.promptTokens }, (_, i) => ['river', 'stone', 'light', 'quiet', 'north', 'wind', 'paper', 'seven'][(i * 7) % 8]);
    let n = o.promptTokens, prompt = '';
    for (let i = 0; i < 8; i++) {
      prompt = words.slice(0, n).join(' ');
      const got = (await w.createCompletion({ prompt, max_tokens: 1, temperature: 0, cache_prompt: false })).timings.prompt_n;
      if (got === o.promptTokens) break;
      n += o.promptTokens - got;
    }
    const req = { prompt, max_tokens: o.genTokens, temperature: 0, ignore_eos: true, cache_prompt: false };
    await w.createCompletion({ ...req, max_tokens: 2 }); // warm-up
    const pre = [], dec = [], ttft = [], promptN = [];
    for (let i = 0; i < o.repetitions; i++) {
      const res = await w.createCompletion(req);
      const tm = res.timings;
      pre.push(tm.prompt_per_second); dec.push(tm.predicted_per_second); ttft.push(tm.prompt_ms / 1000); promptN.push(tm.prompt_n);
    }
    return { pre, dec, ttft, promptN, load, isolated: globalThis.crossOriginIsolated, multi: w.isMultithread?.() ?? null, gpu: w.isSupportWebGPU?.() ?? null };
  }, opts);
  const med = (v) => { const s = [...v].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
  console.log(JSON.stringify({
    engine: 'wllama', mode: opts.mode, multi_threaded: r.multi, cross_origin_isolated: r.isolated, webgpu_available: r.gpu,
    prompt_tokens: med(r.promptN), gen_tokens: opts.genTokens, repetitions: opts.repetitions,
    prefill_tokens_per_s: med(r.pre), prefill_tokens_per_s_min_max: [Math.min(...r.pre), Math.max(...r.pre)],
    decode_tokens_per_s: med(r.dec), decode_tokens_per_s_min_max: [Math.min(...r.dec), Math.max(...r.dec)],
    time_to_first_token_s: med(r.ttft), load_seconds: r.load, browser: `chromium ${browser.version()}`,
  }));
} finally {
  await browser.close();
  await server.close();
}
